"""The PDF report: patient and study, the assistant's verdict and findings, key images, measurements,
model provenance and warnings, with the not-for-clinical-use disclaimer and page numbers on every page.

Built with reportlab's platypus; all text is real (selectable, searchable) text. Names and notes in
any Latin, Greek or Cyrillic script are set in DejaVu Sans where it is installed; without it the
built-in Helvetica is used and characters it lacks are transliterated (accents dropped) or shown as
'?'. With ``anonymize`` the identifying values (name, ID, birth date, accession number, study date
and time) are left out of the document entirely.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from medviewer.ai.prediction import Prediction
from medviewer.core import mpr
from medviewer.core.annotations import Annotation
from medviewer.core.header import display_date
from medviewer.core.safe import check_targets, write_bytes
from medviewer.core.volume import Volume
from medviewer.core.windowing import Window
from medviewer.export.images import annotation_text, find_font, key_slices, label_color, render_slice
from medviewer.version import __version__

DISCLAIMER = ("The assistant's models are demonstration models trained on synthetic phantoms; "
              "not for clinical use.")
MISSING = "\u2014"  # em dash
ANONYMISED = "anonymised"
IMAGE_MIN_SIZE = 512
"""Key images are rendered with at least this many pixels on their longer side (about 160 dpi at 82 mm)."""

_PAGE = A4
_MARGIN = 18 * mm
_IMAGE_WIDTH = 82 * mm


# --- fonts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fonts:
    regular: str
    bold: str
    mono: str
    covers: Any  # callable(char) -> bool


_FONT_CACHE: dict[str, _Fonts] = {}


def _register_fonts() -> _Fonts:
    """DejaVu Sans (and Mono) when installed, registered once; else Helvetica/Courier (cp1252 only)."""
    if "fonts" in _FONT_CACHE:
        return _FONT_CACHE["fonts"]
    regular = find_font()
    fonts = None
    if regular is not None:
        folder = regular.parent
        bold, mono = folder / "DejaVuSans-Bold.ttf", folder / "DejaVuSansMono.ttf"
        try:
            face = TTFont("MedViewerSans", str(regular))
            pdfmetrics.registerFont(face)
            pdfmetrics.registerFont(TTFont("MedViewerSans-Bold", str(bold if bold.is_file() else regular)))
            if mono.is_file():
                pdfmetrics.registerFont(TTFont("MedViewerMono", str(mono)))
            pdfmetrics.registerFontFamily("MedViewerSans", normal="MedViewerSans", bold="MedViewerSans-Bold",
                                          italic="MedViewerSans", boldItalic="MedViewerSans-Bold")
            cmap = set(face.face.charToGlyph)
            fonts = _Fonts("MedViewerSans", "MedViewerSans-Bold", "MedViewerMono" if mono.is_file() else "Courier",
                           lambda ch, cmap=cmap: ord(ch) in cmap)
        except Exception:  # a broken font file: fall back rather than fail the report
            fonts = None
    if fonts is None:
        def covers(ch: str) -> bool:
            try:
                ch.encode("cp1252")
                return True
            except UnicodeEncodeError:
                return False
        fonts = _Fonts("Helvetica", "Helvetica-Bold", "Courier", covers)
    _FONT_CACHE["fonts"] = fonts
    return fonts


_LATIN = {"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i", "Ŧ": "T",
          "ŧ": "t", "ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "Th", "þ": "th", "Ð": "D", "ð": "d"}
"""Latin letters that Unicode does not decompose into a base letter and an accent."""


def printable(text: Any, fonts: _Fonts | None = None) -> str:
    """``text`` with every character the report's font cannot show transliterated (accents dropped)
    or replaced by '?'; control characters become spaces."""
    fonts = fonts or _register_fonts()
    out = []
    for ch in str(text):
        if ch in "\n\t\r" or unicodedata.category(ch) == "Cc":
            out.append(" ")
        elif fonts.covers(ch):
            out.append(ch)
        else:
            base = _LATIN.get(ch) or "".join(c for c in unicodedata.normalize("NFKD", ch)
                                             if not unicodedata.combining(c))
            out.append(base if base and all(fonts.covers(c) for c in base) else "?")
    return "".join(out)


# --- header values -----------------------------------------------------------------------------------------


def _value(ds, keyword: str) -> str:
    if ds is None:
        return ""
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def _time(value: str) -> str:
    value = value.strip()
    if len(value) >= 4 and value[:4].isdigit():
        return f"{value[:2]}:{value[2:4]}"
    return value


def _person(value) -> str:
    """'Family^Given^Middle^Prefix^Suffix' as 'Family, Given Middle'."""
    text = str(value or "").strip()
    if not text:
        return ""
    parts = [p.strip() for p in text.split("=")[0].split("^")]
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    prefix, suffix = (parts[3] if len(parts) > 3 else ""), (parts[4] if len(parts) > 4 else "")
    name = ", ".join(p for p in (family, given) if p)
    return " ".join(p for p in (prefix, name, suffix) if p)


def _age(ds) -> str:
    """The header's PatientAge ('045Y' -> '45 years'), else the age at the study from the birth date."""
    age = _value(ds, "PatientAge")
    units = {"Y": "years", "M": "months", "W": "weeks", "D": "days"}
    if len(age) == 4 and age[:3].isdigit() and age[3] in units:
        return f"{int(age[:3])} {units[age[3]]}"
    if age:
        return age
    try:
        birth = _dt.datetime.strptime(_value(ds, "PatientBirthDate")[:8], "%Y%m%d").date()
        study = _dt.datetime.strptime((_value(ds, "StudyDate") or _value(ds, "SeriesDate"))[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    return f"{years} years" if years >= 0 else ""


def header_fields(volume: Volume, anonymize: bool = False) -> list[tuple[str, str]]:
    """The patient and study lines of the report: (label, value), '—' where the header has no value,
    'anonymised' for the identifying values with ``anonymize``."""
    ds = volume.header(0) if volume.voxels.shape[0] else None

    def ident(value: str) -> str:
        return ANONYMISED if anonymize else (value or MISSING)

    sex = {"M": "male", "F": "female", "O": "other"}.get(_value(ds, "PatientSex").upper(), _value(ds, "PatientSex"))
    study_date = display_date(_value(ds, "StudyDate"))
    study_time = _time(_value(ds, "StudyTime"))
    when = " ".join(p for p in (study_date, study_time) if p)
    description = _value(ds, "StudyDescription")
    series = _value(ds, "SeriesDescription") or volume.description
    rows, cols = volume.voxels.shape[1:3]
    return [
        ("Patient", ident(_person(ds.get("PatientName") if ds is not None else ""))),
        ("Patient ID", ident(_value(ds, "PatientID"))),
        ("Sex", sex or MISSING),
        ("Age", _age(ds) or MISSING),
        ("Birth date", ident(display_date(_value(ds, "PatientBirthDate")))),
        ("Study date", ident(when)),
        ("Accession number", ident(_value(ds, "AccessionNumber"))),
        ("Modality", volume.modality or _value(ds, "Modality") or MISSING),
        ("Study", description or MISSING),
        ("Series", series or MISSING),
        ("Images", f"{volume.voxels.shape[0]} slices of {rows} \u00d7 {cols}"),
        ("Spacing", "{:.2f} \u00d7 {:.2f} \u00d7 {:.2f} mm".format(*volume.spacing_mm)
         if volume.pixel_spacing_known else MISSING),
    ]


# --- page furniture ----------------------------------------------------------------------------------------


def _numbered_canvas(fonts: _Fonts):
    class NumberedCanvas(pdfcanvas.Canvas):
        """Keeps every page until the end so that each can say 'Page n of N'."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages: list[dict] = []

        def showPage(self):  # noqa: N802 - reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont(fonts.regular, 7.5)
                self.setFillColor(colors.HexColor("#444444"))
                self.drawRightString(_PAGE[0] - _MARGIN, 9 * mm, f"Page {self._pageNumber} of {total}")
                super().showPage()
            super().save()

    return NumberedCanvas


def _page_decorator(fonts: _Fonts, running_head: str):
    def decorate(canvas, doc) -> None:
        width, _height = _PAGE
        canvas.saveState()
        canvas.setStrokeColor(colors.HexColor("#999999"))
        canvas.setLineWidth(0.5)
        canvas.line(_MARGIN, 16.5 * mm, width - _MARGIN, 16.5 * mm)
        canvas.setFont(fonts.bold, 7.5)
        canvas.setFillColor(colors.HexColor("#a00000"))
        canvas.drawString(_MARGIN, 13 * mm, printable(DISCLAIMER, fonts))
        canvas.setFont(fonts.regular, 7.5)
        canvas.setFillColor(colors.HexColor("#444444"))
        canvas.drawString(_MARGIN, 9 * mm, printable(running_head, fonts))
        canvas.restoreState()

    return decorate


# --- building blocks ---------------------------------------------------------------------------------------


class _Styles:
    def __init__(self, fonts: _Fonts):
        base = getSampleStyleSheet()
        self.fonts = fonts
        self.title = ParagraphStyle("MVTitle", parent=base["Title"], fontName=fonts.bold, fontSize=17, leading=21,
                                    alignment=TA_LEFT, spaceAfter=2)
        self.h2 = ParagraphStyle("MVH2", parent=base["Heading2"], fontName=fonts.bold, fontSize=12, leading=15,
                                 spaceBefore=10, spaceAfter=4, textColor=colors.HexColor("#1f3a5f"))
        self.body = ParagraphStyle("MVBody", parent=base["BodyText"], fontName=fonts.regular, fontSize=9,
                                   leading=11.5)
        self.small = ParagraphStyle("MVSmall", parent=self.body, fontSize=7.5, leading=9.5)
        self.cell = ParagraphStyle("MVCell", parent=self.body, fontSize=8, leading=10)
        self.cell_bold = ParagraphStyle("MVCellBold", parent=self.cell, fontName=fonts.bold)
        self.mono = ParagraphStyle("MVMono", parent=self.cell, fontName=fonts.mono, fontSize=7.2, leading=9)
        self.caption = ParagraphStyle("MVCaption", parent=self.body, fontSize=7.5, leading=9.5,
                                      textColor=colors.HexColor("#333333"))
        self.verdict = ParagraphStyle("MVVerdict", parent=self.body, fontName=fonts.bold, fontSize=11, leading=14)
        self.warning = ParagraphStyle("MVWarning", parent=self.body, textColor=colors.HexColor("#8a4b00"))

    def p(self, text: Any, style: ParagraphStyle | None = None) -> Paragraph:
        """A paragraph of plain text (escaped and made printable in the report's font)."""
        return Paragraph(escape(printable(text, self.fonts)), style or self.body)

    def markup(self, markup: str, style: ParagraphStyle | None = None) -> Paragraph:
        """A paragraph of trusted markup (callers escape their values with :meth:`t`)."""
        return Paragraph(markup, style or self.body)

    def t(self, text: Any) -> str:
        return escape(printable(text, self.fonts))


_GRID = [
    ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#b0b0b0")),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ("LEFTPADDING", (0, 0), (-1, -1), 3),
    ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ("TOPPADDING", (0, 0), (-1, -1), 2),
    ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
]
_HEAD = [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e6ecf3"))]


def _table(styles: _Styles, header: Sequence[str], rows: Sequence[Sequence[Any]],
           widths: Sequence[float]) -> Table:
    data = [[styles.p(h, styles.cell_bold) for h in header]]
    for row in rows:
        data.append([cell if isinstance(cell, Paragraph) else styles.p(cell, styles.cell) for cell in row])
    table = Table(data, colWidths=list(widths), repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle(_GRID + _HEAD))
    return table


def _header_block(styles: _Styles, volume: Volume, anonymize: bool) -> Table:
    fields = header_fields(volume, anonymize)
    half = (len(fields) + 1) // 2
    left, right = fields[:half], fields[half:]
    data = []
    for i in range(half):
        row = [styles.p(left[i][0], styles.cell_bold), styles.p(left[i][1], styles.cell)]
        if i < len(right):
            row += [styles.p(right[i][0], styles.cell_bold), styles.p(right[i][1], styles.cell)]
        else:
            row += ["", ""]
        data.append(row)
    usable = _PAGE[0] - 2 * _MARGIN
    table = Table(data, colWidths=[26 * mm, usable / 2 - 26 * mm, 26 * mm, usable / 2 - 26 * mm], hAlign="LEFT")
    table.setStyle(TableStyle(_GRID + [("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f2f2f2")),
                                       ("BACKGROUND", (2, 0), (2, -1), colors.HexColor("#f2f2f2"))]))
    return table


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100.0 * float(value):.1f}%"


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return MISSING
    value = float(value)
    return f"{value:.{digits}f}" if np.isfinite(value) else MISSING


def _slice_range(first: int, last: int) -> str:
    return f"{first + 1}" if first == last else f"{first + 1}\u2013{last + 1}"


def _assistant_block(styles: _Styles, prediction: Prediction) -> list:
    story: list = [styles.p("Assistant", styles.h2)]
    verdict = prediction.verdict
    colour = {"positive": "#a00000", "negative": "#1d6b2f"}.get(verdict, "#444444")
    story.append(styles.markup(
        f'Verdict: <font color="{colour}">{styles.t(verdict)}</font> &nbsp; '
        f"(highest slice probability {styles.t(_percent(prediction.study_probability))})", styles.verdict))
    threshold = next((m.get("threshold") for m in prediction.models if m.get("task") == "classification"), None)
    details = [f"{len(prediction.findings)} finding(s)"]
    if prediction.reports_findings:
        details.append("the verdict is positive when the segmentation reports a finding")
    if threshold is not None:
        details.append(f"slice classification threshold {float(threshold):.2f}")
    if not prediction.complete:
        details.append("partial result: not every slice was analysed")
    story.append(styles.p("; ".join(details) + ".", styles.body))
    return story


def _findings_block(styles: _Styles, prediction: Prediction) -> list:
    story: list = [styles.p("Findings", styles.h2)]
    if not prediction.findings:
        story.append(styles.p("No findings."))
        return story
    rows = []
    for f in prediction.findings:
        rows.append([
            str(f.id), f.label, _slice_range(*f.slices), _number(f.diameter_mm, 1), _number(f.volume_ml, 2),
            _percent(f.max_probability), _percent(f.confidence) if f.confidence is not None else MISSING,
            f.review, f.note or "",
        ])
    widths = [8 * mm, 20 * mm, 16 * mm, 19 * mm, 17 * mm, 17 * mm, 20 * mm, 18 * mm]
    widths.append(_PAGE[0] - 2 * _MARGIN - sum(widths))
    story.append(_table(styles, ["#", "Label", "Slices", "Diameter (mm)", "Volume (mL)", "Max prob.",
                                 "Confidence", "Review", "Note"], rows, widths))
    story.append(Spacer(1, 2 * mm))
    story.append(styles.p("Slice numbers count from 1 in the series' order, as the viewer shows them. "
                          "Confidence is the agreement of the test-time augmented passes.", styles.small))
    return story


def _position(volume: Volume, k: int) -> tuple[float, float, float] | None:
    position = volume.slices[k].position_lps_mm
    if position is None and volume.geometry_known:
        position = tuple(volume.positions_lps_mm[k])
    return None if position is None else tuple(float(v) for v in position)


def _png(rgb: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="PNG", optimize=False, compress_level=6)
    buffer.seek(0)
    return buffer


def _legend(styles: _Styles, prediction: Prediction | None, shown: Sequence[int] | None) -> list:
    if prediction is None:
        return []
    items = []
    if prediction.mask is not None:
        for value, spec in sorted(prediction.labels.items()):
            if value == 0 or (shown is not None and value not in shown):
                continue
            r, g, b = label_color(prediction, value)
            items.append(f'<font color="#{r:02x}{g:02x}{b:02x}"><b>{styles.t(spec.get("name", value))}</b></font> '
                         "contour")
    if prediction.heatmap is not None:
        items.append("heatmap: the classifier's attention, blue (low) to red (high)")
    if not items:
        return []
    return [styles.markup("Overlays: " + "; ".join(items) + ".", styles.small), Spacer(1, 2 * mm)]


def _key_images_block(styles: _Styles, volume: Volume, prediction: Prediction | None, slices: list[tuple[int, str]],
                      annotations: Sequence[Annotation], window: Window | tuple[float, float] | None) -> list:
    story: list = [styles.p("Key images", styles.h2)]
    if not slices:
        story.append(styles.p("No key images: no findings and no bookmarked slices."))
        return story
    shown = None
    if prediction is not None and prediction.findings:
        shown = sorted({f.label_value for f in prediction.findings})
    story += _legend(styles, prediction, shown)
    count = volume.voxels.shape[0]
    dz, dy, dx = volume.spacing_mm
    cells = []
    for k, reason in slices:
        rgb = render_slice(volume, k, window=window, prediction=prediction, mask_style="contour", heatmap=True,
                           annotations=annotations, labels_to_show=shown, min_size=IMAGE_MIN_SIZE)
        rows, cols = rgb.shape[:2]
        aspect = (rows * dy) / (cols * dx) if volume.pixel_spacing_known and dx > 0 and dy > 0 else rows / cols
        width = _IMAGE_WIDTH
        height = width * aspect
        if height > 100 * mm:  # very tall images: limit the height, keep the aspect
            height = 100 * mm
            width = height / aspect
        image = Image(_png(rgb), width=width, height=height)
        position = _position(volume, k)
        lines = [f"<b>Slice {k + 1} of {count}</b> \u00b7 {styles.t(reason)}"]
        if position is not None:
            lines.append(styles.t("image position (LPS) {:.1f}, {:.1f}, {:.1f} mm".format(*position)))
        caption = styles.markup("<br/>".join(lines), styles.caption)
        cells.append([image, Spacer(1, 1.5 * mm), caption])
    rows = [cells[i:i + 2] for i in range(0, len(cells), 2)]
    if len(rows[-1]) == 1:
        rows[-1].append("")
    column = (_PAGE[0] - 2 * _MARGIN) / 2
    for row in rows:
        table = Table([row], colWidths=[column, column], hAlign="LEFT")
        table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                                   ("LEFTPADDING", (0, 0), (-1, -1), 2), ("RIGHTPADDING", (0, 0), (-1, -1), 2),
                                   ("BOTTOMPADDING", (0, 0), (-1, -1), 6)]))
        story.append(table)
    return story


def _measurements_block(styles: _Styles, volume: Volume, annotations: Sequence[Annotation]) -> list:
    story: list = [styles.p("Measurements", styles.h2)]
    if not annotations:
        story.append(styles.p("No measurements."))
        return story
    rows = []
    for number, a in enumerate(sorted(annotations, key=lambda a: (a.axis, a.slice_index, a.id)), start=1):
        try:
            view = mpr.view_plane_name(volume, a.axis)
            count = mpr.reformat_geometry(volume, a.axis).count
            text = annotation_text(volume, a)
            where = f"{a.slice_index + 1} of {count}"
        except (IndexError, ValueError) as exc:
            view, where, text = mpr.VIEWS[a.axis] if a.axis in (0, 1, 2) else str(a.axis), str(a.slice_index + 1), \
                f"not measurable ({exc})"
        rows.append([str(number), view, where, a.kind, text or MISSING])
    widths = [8 * mm, 20 * mm, 22 * mm, 20 * mm]
    widths.append(_PAGE[0] - 2 * _MARGIN - sum(widths))
    story.append(_table(styles, ["#", "View", "Slice", "Kind", "Measurement"], rows, widths))
    if not volume.pixel_spacing_known:
        story.append(styles.p("The pixel spacing is unknown: lengths are in pixels.", styles.small))
    return story


def _when(value: Any) -> str:
    if value is None or value == "":
        return "not recorded"
    if isinstance(value, (int, float)):
        value = _dt.datetime.fromtimestamp(float(value)).astimezone()
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value).astimezone()
        except ValueError:
            return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _provenance_block(styles: _Styles, prediction: Prediction | None, created: _dt.datetime,
                      predicted_at: Any) -> list:
    story: list = [styles.p("Provenance", styles.h2)]
    general = [("Report created", _when(created)), ("Software", f"MedViewer {__version__}")]
    if prediction is not None:
        predicted = predicted_at if predicted_at is not None else getattr(prediction, "created", None)
        general.append(("Prediction made", _when(predicted)))
        general.append(("Device", prediction.device or MISSING))
        timings = prediction.timings or {}
        total = timings.get("total_s", sum(float(v) for v in timings.values()) if timings else None)
        if total:
            general.append(("Inference time", f"{total:.2f} s"))
    usable = _PAGE[0] - 2 * _MARGIN
    table = Table([[styles.p(k, styles.cell_bold), styles.p(v, styles.cell)] for k, v in general],
                  colWidths=[34 * mm, usable - 34 * mm], hAlign="LEFT")
    table.setStyle(TableStyle(_GRID + [("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f2f2f2"))]))
    story.append(table)
    if prediction is None:
        return story
    if not prediction.models:
        story.append(Spacer(1, 2 * mm))
        story.append(styles.p("The prediction names no model."))
        return story
    for model in prediction.models:
        lines = [
            ("Model", model.get("id") or MISSING),
            ("Name", model.get("name") or MISSING),
            ("Version", model.get("version") or MISSING),
            ("Task", model.get("task") or MISSING),
            ("Threshold", _number(model.get("threshold"), 2)),
        ]
        if model.get("intended_use"):
            lines.append(("Intended use", model["intended_use"]))
        if model.get("disclaimer"):
            lines.append(("Disclaimer", model["disclaimer"]))
        if model.get("not_for_clinical_use") is not None:
            lines.append(("Clinical use", "not for clinical use" if model["not_for_clinical_use"] else "not restricted"))
        data = [[styles.p(k, styles.cell_bold), styles.p(v, styles.cell)] for k, v in lines]
        data.append([styles.p("Weights SHA-256", styles.cell_bold), styles.p(model.get("sha256") or MISSING,
                                                                              styles.mono)])
        table = Table(data, colWidths=[34 * mm, usable - 34 * mm], hAlign="LEFT")
        table.setStyle(TableStyle(_GRID + [("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f2f2f2"))]))
        story.append(Spacer(1, 3 * mm))
        story.append(KeepTogether(table))
    return story


def _warnings_block(styles: _Styles, volume: Volume, prediction: Prediction | None) -> list:
    story: list = [styles.p("Warnings", styles.h2)]
    warnings = [f"Loading: {w}" for w in volume.warnings]
    if volume.missing_slices:
        warnings.append(f"Loading: {len(volume.missing_slices)} slice(s) could not be read")
    if prediction is not None:
        warnings += [f"Assistant: {w}" for w in prediction.warnings]
    if not warnings:
        story.append(styles.p("None."))
    for warning in warnings:
        story.append(styles.markup("\u2022 " + styles.t(warning), styles.warning))
    return story


def _disclaimer_block(styles: _Styles) -> list:
    box = Table([[styles.markup(
        f"<b>{styles.t(DISCLAIMER)}</b> The findings, probabilities and key images above are the output of "
        "software under development. They must be checked against the images by a qualified reader and "
        "must not be used for diagnosis or treatment.", styles.body)]],
        colWidths=[_PAGE[0] - 2 * _MARGIN], hAlign="LEFT")
    box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.8, colors.HexColor("#a00000")),
                             ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff4f4")),
                             ("LEFTPADDING", (0, 0), (-1, -1), 6), ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                             ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
    return [Spacer(1, 6 * mm), KeepTogether(box)]


# --- the report --------------------------------------------------------------------------------------------


def _check(volume: Volume, prediction: Prediction | None, bookmarks: Sequence[int],
           annotations: Sequence[Annotation]) -> None:
    count = volume.voxels.shape[0]
    if prediction is not None:
        if len(prediction.sop_instance_uids) != count:
            raise ValueError(f"the prediction has {len(prediction.sop_instance_uids)} slices, the series {count}")
        if prediction.series_uid and volume.series_uid and prediction.series_uid != volume.series_uid:
            raise ValueError(f"the prediction is for series {prediction.series_uid}, not {volume.series_uid}")
    for k in bookmarks:
        if not 0 <= int(k) < count:
            raise ValueError(f"bookmarked slice {int(k) + 1} is outside the series (1..{count})")
    for a in annotations:
        if a.axis == 0 and not 0 <= a.slice_index < count:
            raise ValueError(f"a {a.kind} on slice {a.slice_index + 1} is outside the series (1..{count})")


def build_report(
    volume: Volume,
    prediction: Prediction | None = None,
    *,
    bookmarks: Iterable[int] = (),
    annotations: Iterable[Annotation] = (),
    anonymize: bool = False,
    window: Window | tuple[float, float] | None = None,
    predicted_at: _dt.datetime | str | None = None,
    created: _dt.datetime | None = None,
) -> bytes:
    """The PDF report of ``volume`` (and the assistant's ``prediction``, if any) as bytes.

    Key images are the findings' most probable slices, the ``bookmarks`` (slice indices from 0) and the
    slices with ``annotations`` on the acquired view, rendered with ``window`` (default: the series'
    default) and the prediction's heatmap and contours. ``predicted_at``/``created``: the times shown
    for the prediction and the report (default: not recorded / now).
    """
    bookmarks = [int(k) for k in bookmarks]
    annotations = list(annotations)
    _check(volume, prediction, bookmarks, annotations)
    created = created or _dt.datetime.now().astimezone()
    fonts = _register_fonts()
    styles = _Styles(fonts)

    fields = dict(header_fields(volume, anonymize))
    head = ["MedViewer report"]
    if not anonymize:
        head.append(f"{fields['Patient']} ({fields['Patient ID']})")
    else:
        head.append("anonymised")
    head.append(f"created {created:%Y-%m-%d %H:%M}")
    running_head = " \u00b7 ".join(head)

    story: list = [styles.p("MedViewer report", styles.title),
                   styles.p(f"{volume.modality or 'Series'} \u00b7 created {_when(created)}"
                            + (" \u00b7 anonymised" if anonymize else ""), styles.small),
                   Spacer(1, 4 * mm), _header_block(styles, volume, anonymize)]
    if prediction is not None:
        story += _assistant_block(styles, prediction)
        story += _findings_block(styles, prediction)
    else:
        story += [styles.p("Assistant", styles.h2),
                  styles.p("The assistant was not run on this series: this report has the viewer's bookmarks "
                           "and measurements only.")]
    slices = key_slices(prediction, bookmarks, annotations)
    story += _key_images_block(styles, volume, prediction, slices, annotations, window)
    story += _measurements_block(styles, volume, annotations)
    story += _provenance_block(styles, prediction, created, predicted_at)
    story += _warnings_block(styles, volume, prediction)
    story += _disclaimer_block(styles)

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=_PAGE, leftMargin=_MARGIN, rightMargin=_MARGIN, topMargin=_MARGIN,
                            bottomMargin=22 * mm, title="MedViewer report", author="MedViewer",
                            subject="Viewer and assistant report", creator=f"MedViewer {__version__}")
    decorate = _page_decorator(fonts, running_head)
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate, canvasmaker=_numbered_canvas(fonts))
    return buffer.getvalue()


def write_report(
    path: str | os.PathLike,
    volume: Volume,
    prediction: Prediction | None = None,
    *,
    bookmarks: Iterable[int] = (),
    annotations: Iterable[Annotation] = (),
    anonymize: bool = False,
    window: Window | tuple[float, float] | None = None,
    predicted_at: _dt.datetime | str | None = None,
    force: bool = False,
) -> Path:
    """Build the report (:func:`build_report`) and write it to ``path`` safely (all or nothing; an existing
    file is replaced only with ``force``). Raises :class:`~medviewer.core.safe.ExportError`."""
    path = Path(path)
    check_targets([path], force)  # before the work of building it
    data = build_report(volume, prediction, bookmarks=bookmarks, annotations=annotations, anonymize=anonymize,
                        window=window, predicted_at=predicted_at)
    return write_bytes(path, data, force=force)
