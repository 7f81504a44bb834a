"""The review (accept/reject, notes, the corrected mask) of the assistant's findings, kept across launches.

Every change the user makes to a finished prediction (a review, a note, "Update findings" after mask edits) is
saved in a worker through :mod:`medviewer.ai.review_store`, keyed by the series' StudyInstanceUID and
SeriesInstanceUID. When a series is shown and the assistant has no result for it yet, a kept review is read in
a worker and shown as the assistant's result, with its reviews, notes and mask.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject

from medviewer.ai import review_store


class ReviewState(QObject):
    def __init__(self, window, root: Path | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.root = Path(root) if root is not None else review_store.reviews_dir()
        self.saved: list[Path] = []  # folders written, latest last
        self._asked: set[tuple[str, int]] = set()  # (series key, id of the volume) already looked up
        panel = window.assistant
        panel.reviewChanged.connect(lambda _finding: self.save())
        # Connected after the window's own update_findings: the re-measured findings are what is saved.
        panel.updateFindingsRequested.connect(self.save)

    def _key_of(self, prediction) -> tuple | None:
        for key, value in self.window.predictions.items():
            if value is prediction:
                return key
        return None

    def save(self) -> None:
        window = self.window
        prediction = window.assistant.prediction
        key = self._key_of(prediction) if prediction is not None else None
        volume = window.volumes.get(key[0]) if key else None
        if prediction is None or not prediction.complete or key is None or volume is None:
            return
        # A snapshot taken here: the brush may change the mask while the worker writes.
        snapshot = replace(prediction, heatmap=None,
                           mask=None if prediction.mask is None else prediction.mask.copy(),
                           findings=[replace(f) for f in prediction.findings])
        root, study_uid, paths = self.root, volume.study_uid, list(key[1])

        def job(context):
            return review_store.save_review(root, study_uid, snapshot, paths)

        def done(folder):
            self.saved.append(Path(folder))

        window.tasks.start(job, "save review", on_finished=done,
                           on_failed=lambda message: window.statusBar().showMessage(
                               f"The review could not be saved: {message}", 10000))

    def restore(self, view) -> None:
        """Look up a kept review of ``view``'s series (once per loaded volume) and show it when found."""
        window, volume, series_key = self.window, view.volume, view.series_key
        if volume is None or not volume.series_uid or (series_key, id(volume)) in self._asked:
            return
        self._asked.add((series_key, id(volume)))
        root, study_uid, series_uid = self.root, volume.study_uid, volume.series_uid
        uids, shape = list(volume.sop_instance_uids), tuple(volume.shape)

        def job(context):
            return review_store.load_review(root, study_uid, series_uid, uids, shape)

        def found(result) -> None:
            if result is None:
                return
            prediction, paths = result
            key = (series_key, tuple(sorted(paths)))
            if any(k[0] == series_key for k in window.predictions):
                return  # a run finished meanwhile: its result wins
            window.predictions[key] = prediction
            if view.volume is volume and window._assistant_worker is None:
                window._attach_prediction(volume, prediction)
                reviewed = sum(f.review != "pending" for f in prediction.findings)
                window.statusBar().showMessage(
                    f"Restored the assistant's findings and your review ({reviewed} reviewed)", 8000)

        window.tasks.start(job, "read review", on_finished=found)
