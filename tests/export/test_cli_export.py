"""The export commands as a user runs them: predict --dicom, report, render, anonymize."""

import subprocess

import numpy as np
import pydicom
import pytest
from PIL import Image

from medviewer.ai.demo_data import write_phantom_dicom
from medviewer.ai.phantom import PhantomConfig, generate_phantom
from medviewer.cli import main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-export")
    phantom = generate_phantom(PhantomConfig(slices=10, size=128, slice_thickness_mm=5.0, nodule_count=(1, 1),
                                             nodule_diameter_mm=(25.0, 25.0), vessel_generations=2), 3)
    return write_phantom_dicom(phantom, root, study_name="study", patient_name="DOE^JANE", patient_id="PID4711")


@pytest.fixture(scope="module")
def predicted(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("predicted") / "out"
    assert main(["predict", str(study), "--out", str(out), "--dicom", "--no-explain"]) == 0
    return out


def _text(pdf):
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_predict_writes_dicom_objects_beside_the_predictions(study, predicted, capsys):
    names = sorted(p.relative_to(predicted).as_posix() for p in predicted.rglob("*") if p.is_file())
    assert {"predictions.json", "mask.npy", "seg.dcm", "sr.dcm"} <= set(names)  # no heatmap: --no-explain
    assert any(name.startswith("key-images/") for name in names)
    source = pydicom.dcmread(next(study.rglob("IM*.dcm")), stop_before_pixels=True)
    seg = pydicom.dcmread(predicted / "seg.dcm")
    sr = pydicom.dcmread(predicted / "sr.dcm")
    assert seg.Modality == "SEG" and sr.Modality == "SR"
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    for key_image in (predicted / "key-images").glob("*.dcm"):
        assert pydicom.dcmread(key_image).StudyInstanceUID == source.StudyInstanceUID
    # a second run refuses before running the models and changes nothing
    before = (predicted / "sr.dcm").read_bytes()
    capsys.readouterr()
    assert main(["predict", str(study), "--out", str(predicted), "--dicom"]) == 1
    assert "already exists (use --force to replace it)" in capsys.readouterr().err
    assert (predicted / "sr.dcm").read_bytes() == before


def test_report_with_predictions_and_anonymised(study, predicted, tmp_path, capsys):
    pdf = tmp_path / "report.pdf"
    assert main(["report", str(study), "--predictions", str(predicted), "--out", str(pdf), "--bookmark", "2"]) == 0
    text = _text(pdf)
    assert "PID4711" in text and "not for clinical use" in text and "Findings" in text
    assert main(["report", str(study), "--predictions", str(predicted), "--out", str(pdf)]) == 1
    assert "already exists" in capsys.readouterr().err
    anonymous = tmp_path / "anonymous.pdf"
    assert main(["report", str(study), "--predictions", str(predicted), "--out", str(anonymous), "--anonymize"]) == 0
    text = _text(anonymous)
    assert "PID4711" not in text and "DOE" not in text and "anonymised" in text


def test_report_refuses_bad_requests(study, predicted, tmp_path, readonly_dir, capsys):
    assert main(["report", str(study), "--out", str(tmp_path / "r.txt")]) == 1
    assert "name the file .pdf" in capsys.readouterr().err
    assert main(["report", str(study), "--out", str(tmp_path / "r.pdf"), "--bookmark", "99"]) == 1
    assert "--bookmark 99: the series has slices 1 to 10" in capsys.readouterr().err
    assert main(["report", str(study), "--predictions", str(tmp_path), "--out", str(tmp_path / "r.pdf")]) == 1
    assert "no predictions.json" in capsys.readouterr().err
    assert main(["report", str(study), "--out", str(readonly_dir / "r.pdf")]) == 1
    assert "readonly" in capsys.readouterr().err
    assert list(readonly_dir.iterdir()) == [] and not (tmp_path / "r.pdf").exists()


def test_render_draws_a_slice_as_the_viewer_shows_it(study, predicted, tmp_path, capsys):
    plain, overlaid = tmp_path / "plain.png", tmp_path / "overlaid.png"
    assert main(["render", str(study), "--out", str(plain), "--slice", "5"]) == 0
    assert "slice 5 of 10" in capsys.readouterr().out
    image = np.asarray(Image.open(plain))
    assert image.shape == (128, 128, 3) and (image[..., 0] == image[..., 1]).all()  # grey: no overlay
    # with the predictions: their first finding's slice, the mask drawn in the manifest's colours, enlarged
    assert main(["render", str(study), "--out", str(overlaid), "--predictions", str(predicted), "--mask", "fill",
                 "--size", "300", "--window=-600/1500"]) == 0
    out = capsys.readouterr().out
    image = np.asarray(Image.open(overlaid)).astype(int)
    assert image.shape == (384, 384, 3) and "384x384" in out
    assert ((image[..., 2] - image[..., 0]) > 40).any()  # lung in blue
    assert ((image[..., 0] - image[..., 2]) > 40).any()  # the nodule in red
    # a window by preset name changes the picture
    lung, bone = tmp_path / "lung.png", tmp_path / "bone.png"
    assert main(["render", str(study), "--out", str(lung), "--window", "lung", "--slice", "5"]) == 0
    assert main(["render", str(study), "--out", str(bone), "--window", "Bone", "--slice", "5"]) == 0
    assert not np.array_equal(np.asarray(Image.open(lung)), np.asarray(Image.open(bone)))


def test_render_refuses_bad_requests(study, predicted, tmp_path, capsys):
    target = tmp_path / "r.png"
    for args, message in (
        (["--out", str(tmp_path / "r.jpg")], "name the file .png"),
        (["--out", str(target), "--slice", "0"], "--slice 0: the series has slices 1 to 10"),
        (["--out", str(target), "--window", "sunset"], "--window sunset: not a preset of this series"),
        (["--out", str(target), "--window", "1/x"], "write centre/width as two numbers"),
        (["--out", str(target), "--predictions", str(tmp_path)], "no predictions.json"),
    ):
        assert main(["render", str(study), *args]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not target.exists()
    assert main(["render", str(tmp_path / "missing"), "--out", str(target)]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    target.write_bytes(b"keep")
    assert main(["render", str(study), "--out", str(target)]) == 1
    assert "already exists" in capsys.readouterr().err and target.read_bytes() == b"keep"
    assert main(["render", str(study), "--out", str(target), "--force"]) == 0 and target.read_bytes() != b"keep"


def test_anonymize_command(study, tmp_path, capsys):
    out = tmp_path / "anon"
    assert main(["anonymize", str(study), "--out", str(out), "--patient-id", "CASE7"]) == 0
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) == 10
    ds = pydicom.dcmread(files[0])
    assert ds.PatientID == "CASE7" and ds.PatientName == "ANONYMOUS" and ds.PatientIdentityRemoved == "YES"
    assert b"PID4711" not in files[0].read_bytes() and b"DOE" not in files[0].read_bytes()
    assert main(["anonymize", str(study), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["anonymize", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_predict_refuses_what_it_cannot_export_and_writes_nothing(tmp_path, capsys):
    from pydicom.data import get_testdata_file

    colour = get_testdata_file("examples_rgb_color.dcm")
    assert main(["predict", colour, "--out", str(tmp_path / "colour")]) == 1
    assert "a colour series: the assistant's models read grayscale images" in capsys.readouterr().err
    assert not (tmp_path / "colour").exists()
    multiframe = get_testdata_file("rtdose.dcm")  # 15 frames in one file: no SEG/SR over it
    assert main(["predict", multiframe, "--out", str(tmp_path / "dose"), "--dicom", "--no-explain"]) == 1
    assert "multi-frame source images are not supported" in capsys.readouterr().err
    assert not (tmp_path / "dose").exists() or list((tmp_path / "dose").iterdir()) == []


def test_dicom_bundle_is_all_or_none(study, predicted, tmp_path):
    """An existing key image without --force refuses the whole bundle: no SEG or SR is written beside it."""
    import medviewer
    from medviewer.ai.prediction import read_prediction
    from medviewer.core.safe import ExistsError
    from medviewer.export.bundle import write_dicom_bundle

    volume = medviewer.load(medviewer.scan(study).series[0])
    prediction = read_prediction(predicted)
    out = tmp_path / "bundle"
    (out / "key-images").mkdir(parents=True)
    (out / "key-images" / "SC0001.dcm").write_bytes(b"kept")
    with pytest.raises(ExistsError):
        write_dicom_bundle(volume, prediction, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["key-images", "key-images/SC0001.dcm"]
    written = write_dicom_bundle(volume, prediction, out, force=True)
    assert [p.name for p in written[:2]] == ["seg.dcm", "sr.dcm"] and written[2].name == "SC0001.dcm"
    assert pydicom.dcmread(out / "key-images" / "SC0001.dcm").Modality == "OT"
