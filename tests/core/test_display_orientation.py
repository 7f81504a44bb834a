"""Orientation letters, edge labels under rotation and flips, plane names."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medviewer.core.orientation import direction_letters, edge_labels, orient_image, plane_name

AXIAL = ((1, 0, 0), (0, 1, 0))  # row_dir, col_dir: first and second IOP triplets
CORONAL = ((1, 0, 0), (0, 0, -1))
SAGITTAL = ((0, 1, 0), (0, 0, -1))


@pytest.mark.parametrize("vector, letters", [
    ((1, 0, 0), "L"), ((-1, 0, 0), "R"), ((0, 1, 0), "P"), ((0, -1, 0), "A"), ((0, 0, 1), "S"), ((0, 0, -1), "I"),
    ((0.7, 0.7, 0), "LP"), ((-0.6, 0.8, 0), "PR"), ((0.2, -0.9, 0.4), "AS"), ((0.5, -0.6, 0.62), "SAL"),
    ((3, 0, 0), "L"), ((0.98, 0.0, 0.2), "L"), ((0, 0, 0), ""),
])
def test_direction_letters(vector, letters):
    assert direction_letters(vector) == letters


def test_edge_labels_unrotated():
    assert edge_labels(*AXIAL) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert edge_labels(*CORONAL) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert edge_labels(*SAGITTAL) == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_edge_labels_rotations_of_axial():
    assert edge_labels(*AXIAL, rotation=90) == {"top": "R", "right": "A", "bottom": "L", "left": "P"}
    assert edge_labels(*AXIAL, rotation=180) == {"top": "P", "right": "R", "bottom": "A", "left": "L"}
    assert edge_labels(*AXIAL, rotation=270) == {"top": "L", "right": "P", "bottom": "R", "left": "A"}
    assert edge_labels(*AXIAL, rotation=-90) == edge_labels(*AXIAL, rotation=270)
    assert edge_labels(*AXIAL, rotation=360) == edge_labels(*AXIAL)
    with pytest.raises(ValueError):
        edge_labels(*AXIAL, rotation=45)


def test_edge_labels_flips_apply_after_rotation():
    assert edge_labels(*AXIAL, flip_h=True) == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    assert edge_labels(*AXIAL, flip_v=True) == {"left": "R", "right": "L", "top": "P", "bottom": "A"}
    # Rotate first (top R, right A, bottom L, left P), then mirror the screen left-right.
    assert edge_labels(*AXIAL, rotation=90, flip_h=True) == {"top": "R", "right": "P", "bottom": "L", "left": "A"}
    assert edge_labels(*AXIAL, rotation=90, flip_v=True) == {"top": "L", "right": "A", "bottom": "R", "left": "P"}
    assert edge_labels(*CORONAL, rotation=180, flip_h=True, flip_v=True) == edge_labels(*CORONAL)


@pytest.mark.parametrize("rotation, flip_h, flip_v",
                         list(itertools.product((0, 90, 180, 270), (False, True), (False, True))))
@pytest.mark.parametrize("row_dir, col_dir", [AXIAL, CORONAL, SAGITTAL])
def test_edge_labels_agree_with_the_displayed_image(row_dir, col_dir, rotation, flip_h, flip_v):
    """Mark each edge of an image with its letter's code and check where orient_image puts it."""
    base = edge_labels(row_dir, col_dir)
    image = np.zeros((5, 7), dtype="<U4")
    image[0, 1:-1], image[-1, 1:-1] = base["top"], base["bottom"]
    image[1:-1, 0], image[1:-1, -1] = base["left"], base["right"]
    shown = orient_image(image, rotation, flip_h, flip_v)
    labels = edge_labels(row_dir, col_dir, rotation, flip_h, flip_v)
    assert shown[0, 1:-1].tolist() == [labels["top"]] * (shown.shape[1] - 2)
    assert shown[-1, 1:-1].tolist() == [labels["bottom"]] * (shown.shape[1] - 2)
    assert shown[1:-1, 0].tolist() == [labels["left"]] * (shown.shape[0] - 2)
    assert shown[1:-1, -1].tolist() == [labels["right"]] * (shown.shape[0] - 2)


def test_orient_image_rotates_clockwise():
    image = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(orient_image(image, 90), [[3, 1], [4, 2]])
    np.testing.assert_array_equal(orient_image(image, 0, flip_h=True), [[2, 1], [4, 3]])
    assert orient_image(np.zeros((4, 6, 3)), 90).shape == (6, 4, 3)


@pytest.mark.parametrize("normal, name", [
    ((0, 0, 1), "axial"), ((0, 0, -1), "axial"), ((0, 1, 0), "coronal"), ((-1, 0, 0), "sagittal"),
    ((0, np.sin(np.radians(25)), np.cos(np.radians(25))), "axial"),
    ((0, np.sin(np.radians(35)), np.cos(np.radians(35))), "oblique"),
    ((0.7, 0.7, 0), "oblique"), ((0, 0, 0), "oblique"), ((0, 5, 0.1), "coronal"),
])
def test_plane_name(normal, name):
    assert plane_name(normal) == name
