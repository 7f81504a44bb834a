"""The one command line: ``medviewer [PATHS...]``, ``medviewer info``, ``medviewer demo-data``, ...

Every command exits 0 on success; on bad input it prints one line per problem on stderr
(naming the file and the reason), exits non-zero and prints no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from medviewer.version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("view", "info", "demo-data", "predict", "models", "train", "report", "render", "anonymize", "pacs")


class CommandError(Exception):
    """A one-line error for the user; ``main`` prints it and exits non-zero."""


def _print_error(message: str) -> None:
    print(f"medviewer: {message}", file=sys.stderr)


def _series_output_command(sub, name: str, help_text: str, out_help: str, predictions_help: str):
    """A command that reads one series (and optionally a predict folder) and writes one file: PATH, --out,
    --predictions, --series, --force."""
    command = sub.add_parser(name, help=help_text)
    command.add_argument("path", metavar="PATH", help="a series: file, folder, ZIP or DICOMDIR")
    command.add_argument("--out", required=True, metavar="FILE", help=out_help)
    command.add_argument("--predictions", metavar="DIR",
                         help=f"a folder written by 'medviewer predict' {predictions_help}")
    command.add_argument("--series", metavar="UID", help="which series (default: the predictions' series, else the "
                         "one with most slices)")
    command.add_argument("--force", action="store_true", help="replace an existing file")
    return command


def _pacs_parser(sub) -> None:
    pacs = sub.add_parser("pacs", help="talk to a PACS: echo, find, get, move, send (DIMSE)")
    ops = pacs.add_subparsers(dest="operation", metavar="OPERATION", required=True)

    def node_options(command):
        command.add_argument("--nodes", metavar="FILE", help="the node settings file (default: pacs.json in the "
                             "user's configuration folder)")
        command.add_argument("--node", metavar="NAME", help="a configured node, by name")
        command.add_argument("--aet", metavar="AE", help="the PACS's AE title (instead of --node)")
        command.add_argument("--host", help="the PACS's host (instead of --node)")
        command.add_argument("--port", type=int, help="the PACS's port (instead of --node)")
        command.add_argument("--url", help="a DICOMweb base URL (instead of --node or --aet/--host/--port)")
        command.add_argument("--user", default="", help="DICOMweb user (with --url)")
        command.add_argument("--password", default="", help="DICOMweb password (with --url)")
        command.add_argument("--token", default="", help="DICOMweb bearer token (with --url)")
        command.add_argument("--our-aet", metavar="AE", help="MedViewer's AE title (default: the settings', MEDVIEWER)")
        command.add_argument("--listen-port", type=int, metavar="PORT", help="MedViewer's port for C-MOVE results")
        command.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for each answer (default 10)")
        return command

    node_options(ops.add_parser("echo", help="C-ECHO: is the node there and does it accept us?"))
    find = node_options(ops.add_parser("find", help="C-FIND patients, studies or series"))
    find.add_argument("--level", choices=("patient", "study", "series"), default="study")
    find.add_argument("--patient-name", default="", help="e.g. 'DOE^J*'")
    find.add_argument("--patient-id", default="")
    find.add_argument("--date", default="", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    find.add_argument("--modality", default="")
    find.add_argument("--accession", default="")
    find.add_argument("--study", default="", metavar="UID", help="StudyInstanceUID (needed for --level series)")
    find.add_argument("--json", action="store_true", help="print the matches as JSON")
    for name, text in (("get", "C-GET a study or series into a folder"),
                       ("move", "C-MOVE a study or series to MedViewer's own listener (or --dest) into a folder")):
        command = node_options(ops.add_parser(name, help=text))
        command.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID")
        command.add_argument("--series", metavar="UID", help="only this SeriesInstanceUID")
        command.add_argument("--out", required=True, metavar="DIR", help="the study cache: DIR/study/series/sop.dcm")
        if name == "move":
            command.add_argument("--dest", metavar="AE", help="move to this AE instead of MedViewer's own")
    send = node_options(ops.add_parser("send", help="C-STORE DICOM files or folders"))
    send.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medviewer",
        description="MedViewer: a DICOM viewer with a built-in diagnosis assistant.",
        epilog="Run 'medviewer COMMAND --help' for a command's options. Without a command, "
               "medviewer opens the viewer on PATHS.",
    )
    parser.add_argument("--version", action="version", version=f"medviewer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--selftest", action="store_true",
                        help="check this installation (codecs, models, rendering) without writing anything")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    view = sub.add_parser("view", help="open the viewer (the default command)")
    view.add_argument("paths", nargs="*", metavar="PATH", help="files, folders, ZIP archives or DICOMDIR")
    view.add_argument("--demo", action="store_true", help="open the bundled demo study")

    info = sub.add_parser("info", help="what is there: studies, series, sizes, pixel statistics, errors")
    info.add_argument("paths", nargs="+", metavar="PATH", help="files, folders, ZIP archives or DICOMDIR")
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.add_argument("--no-pixels", action="store_true", help="headers only: skip decoding pixel statistics")

    demo = sub.add_parser("demo-data", help="write the synthetic demo studies as DICOM, with ground truth")
    demo.add_argument("out", metavar="DIR", help="folder to write into (created if missing)")
    demo.add_argument("--count", type=int, default=1, help="number of studies (default 1)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the first study (default: the demo's)")
    demo.add_argument("--slices", type=int, help="axial slices per study")
    demo.add_argument("--size", type=int, help="rows and columns per slice")
    demo.add_argument("--fov", type=float, help="in-plane field of view in mm")
    demo.add_argument("--thickness", type=float, help="slice thickness and spacing in mm")
    demo.add_argument("--noise", type=float, help="image noise (standard deviation, HU)")
    demo.add_argument("--nodules", type=int, nargs=2, metavar=("MIN", "MAX"), help="nodules per study")
    demo.add_argument("--nodule-size", type=float, nargs=2, metavar=("MIN", "MAX"), help="nodule diameters in mm")
    demo.add_argument("--nodule-hu", type=float, nargs=2, metavar=("MIN", "MAX"), help="nodule densities in HU")
    demo.add_argument("--body-scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="patient size factor range")
    demo.add_argument("--compression", choices=("none", "jpeg2000", "rle"), default="none",
                      help="transfer syntax of the written files")
    demo.add_argument("--force", action="store_true", help="replace studies of the same name already in DIR")
    predict = sub.add_parser("predict", help="run the diagnosis assistant headless on a series")
    predict.add_argument("path", metavar="PATH", help="a series: file, folder, ZIP or DICOMDIR")
    predict.add_argument("--out", required=True, metavar="DIR", help="folder for predictions.json, mask.npy, heatmap.npy")
    predict.add_argument("--model", action="append", metavar="ID", help="model id or package folder (repeatable; "
                         "default: the built-in models)")
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    predict.add_argument("--series", metavar="UID", help="which series (default: the one with most slices)")
    predict.add_argument("--batch-size", type=int, help="slices per batch (default: chosen for the device)")
    predict.add_argument("--no-explain", action="store_true", help="skip the Grad-CAM heatmap")
    predict.add_argument("--dicom", action="store_true", help="also write DICOM objects into the study: seg.dcm "
                         "(Segmentation), sr.dcm (TID 1500 measurement report) and key-images/ (secondary captures)")
    predict.add_argument("--force", action="store_true", help="replace existing output files")

    report = _series_output_command(sub, "report", "write the PDF report of a series, with the assistant's findings",
                                    "the PDF to write", "for this series")
    report.add_argument("--bookmark", type=int, action="append", default=[], metavar="N",
                        help="also show slice N (1-based, as the viewer numbers them); repeatable")
    report.add_argument("--anonymize", action="store_true", help="leave out the patient's name, ID, birth date "
                        "and accession number")

    render = _series_output_command(sub, "render", "one slice as the viewer shows it, as PNG (window, the "
                                    "assistant's overlays optional)", "the PNG to write",
                                    "for this series: its mask and heatmap are drawn")
    render.add_argument("--slice", type=int, metavar="N", help="slice N, 1-based as the viewer numbers them (default: "
                        "the first finding's central slice with --predictions, else the middle slice)")
    render.add_argument("--window", metavar="C/W|NAME", help="centre/width in the modality's units, as "
                        "--window=-600/1500 (with '=': the centre may be negative), or a preset: lung, mediastinum, "
                        "bone, ... (default: the series' own)")
    render.add_argument("--mask", choices=("contour", "fill", "none"), default="contour", help="how the mask is drawn")
    render.add_argument("--no-heatmap", action="store_true", help="leave the Grad-CAM heatmap out")
    render.add_argument("--size", type=int, default=0, metavar="PX",
                        help="enlarge by a whole factor until the longer side is at least PX pixels")

    anonymize = sub.add_parser("anonymize", help="write an anonymised copy of a series or study "
                               "(DICOM PS3.15 basic profile); the originals are never changed")
    anonymize.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files, folders or ZIP archives")
    anonymize.add_argument("--out", required=True, metavar="DIR", help="the new folder to create")
    anonymize.add_argument("--patient-name", default="ANONYMOUS", help="the name written instead (default ANONYMOUS)")
    anonymize.add_argument("--patient-id", help="the ID written instead (default: a pseudonym)")
    anonymize.add_argument("--force", action="store_true", help="replace DIR if it exists")

    models = sub.add_parser("models", help="the installed model packages and their cards")
    models.add_argument("paths", nargs="*", metavar="PATH", help="more package folders to list")
    models.add_argument("--json", action="store_true", help="print the manifests as JSON")

    _pacs_parser(sub)

    train = sub.add_parser("train", help="train or fine-tune a classifier or segmenter; writes a model package",
                           add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `medviewer PATHS...` and `medviewer --demo` mean `medviewer view ...`.
    options = [a for a in argv if a != "--debug"]
    first = options[0] if options else None
    if first == "--selftest":
        from medviewer.selftest import run_selftest

        return run_selftest(debug="--debug" in argv)
    if first is None or (first not in COMMANDS and first not in ("-h", "--help", "--version")):
        argv = (["--debug"] if "--debug" in argv else []) + ["view"] + options
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _run(args)
    except CommandError as exc:
        _print_error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except OSError as exc:
        if args.debug:
            raise
        _print_error(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            raise
        _print_error(f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)")
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        return cmd_info(args.paths, as_json=args.json, pixels=not args.no_pixels)
    if args.command == "demo-data":
        return cmd_demo_data(args)
    if args.command == "predict":
        return cmd_predict(args)
    if args.command == "models":
        return cmd_models(args)
    if args.command == "report":
        return cmd_report(args)
    if args.command == "render":
        return cmd_render(args)
    if args.command == "anonymize":
        return cmd_anonymize(args)
    if args.command == "pacs":
        from medviewer.net.cli import run_pacs

        return run_pacs(args)
    if args.command == "train":
        from medviewer.ai.train_cli import run as run_train_command

        return run_train_command(args.rest)
    return cmd_view(args)


def cmd_models(args: argparse.Namespace) -> int:
    from medviewer.ai.package import find_packages, model_card

    packages = find_packages(extra=[Path(p) for p in args.paths])
    if args.json:
        print(json.dumps([{"path": str(p.path), "source": p.source, "error": p.error,
                           "manifest": p.manifest.to_dict() if p.manifest else None} for p in packages], indent=2))
    else:
        for info in packages:
            if info.manifest is None:
                print(f"{info.path}  [{info.source}]  unusable: {info.error}")
            else:
                print(f"{info.manifest.id}  [{info.source}]  {info.path}")
                print("  " + model_card(info.manifest).replace("\n", "\n  "))
            print()
    broken = [p for p in packages if p.manifest is None]
    for info in broken:
        error = info.error or "unusable package"
        _print_error(error if error.startswith(str(info.path)) else f"{info.path}: {error}")
    if not packages:
        _print_error("no model packages found")
        return EXIT_FAILED
    # A package the user named that cannot be used is a failure; broken ones found by looking are listed.
    named = [Path(p).resolve() for p in args.paths]
    if any(info.source == "path" or _under(info.path, named) for info in broken):
        return EXIT_FAILED
    return EXIT_OK


def _under(path: Path, folders: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == folder or folder in resolved.parents for folder in folders)


def cmd_predict(args: argparse.Namespace) -> int:
    from medviewer.ai.infer import predict
    from medviewer.ai.package import find_packages
    from medviewer.ai.prediction import write_prediction
    from medviewer.core.errors import MedViewerError
    from medviewer.core.load import load
    from medviewer.core.safe import ExportError

    if not os.path.exists(args.path):
        raise CommandError(f"{args.path}: no such file or folder")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out}: exists and is not a folder")
    if args.model:
        from medviewer.ai.package import PackageError, find_model

        models = list(args.model)
        for model in models:  # a bad package is named before the series is read
            try:
                find_model(model)
            except PackageError as exc:
                raise CommandError(f"model {exc}") from None
            except OSError as exc:
                raise CommandError(f"model {model}: cannot be read ({exc.strerror or exc})") from None
    else:
        models = [info.path for info in find_packages() if info.manifest is not None and info.source == "builtin"]
        if not models:
            raise CommandError("no built-in model packages found (see 'medviewer models')")
    series = _pick_series(args.path, args.series)
    if not args.force:  # refuse before the long run, not after it
        from medviewer.core.safe import ExistsError, check_targets

        names = (["predictions.json", "mask.npy"] + ([] if args.no_explain else ["heatmap.npy"])
                 + (["seg.dcm", "sr.dcm", "key-images"] if args.dicom else []))
        try:
            check_targets([out / name for name in names], force=False)
        except ExistsError as exc:
            raise CommandError(str(exc)) from None
    volume = load(series)
    try:
        prediction = predict(volume, models, device=args.device, batch_size=args.batch_size,
                             explain=not args.no_explain)
    except MedViewerError as exc:
        raise CommandError(f"{args.path}: {exc.reason}") from None
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise CommandError(str(exc).strip("'\"")) from None
    for warning in volume.warnings + prediction.warnings:
        print(f"medviewer: warning: {warning}", file=sys.stderr)
    # The DICOM objects first: they can refuse a series (multi-frame, no DICOM headers), and then nothing is
    # written at all.
    created = not out.exists()
    finished = False
    try:
        written = _write_dicom_exports(volume, prediction, out, force=args.force) if args.dicom else []
        written = write_prediction(prediction, out, force=args.force) + written
        finished = True
    except (FileExistsError, ExportError) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{out}: cannot write ({exc.strerror or exc})") from None
    finally:
        if created and not finished:
            _remove_if_empty(out)
    probability = prediction.study_probability
    print(f"{series.description or series.uid}: {len(volume.slices)} slices on {prediction.device}, "
          f"{prediction.timings.get('total_s', 0):.1f} s")
    if probability is not None:
        print(f"study: {prediction.verdict}, {len(prediction.findings)} finding(s) "
              f"(highest slice probability {probability:.3f})")
    for finding in prediction.findings:
        where = (f" at ({', '.join(f'{v:.1f}' for v in finding.centroid_lps_mm)}) mm"
                 if finding.centroid_lps_mm else "")
        confidence = f", confidence {finding.confidence:.2f}" if finding.confidence is not None else ""
        print(f"  finding {finding.id}: {finding.label}, slices {finding.slices[0] + 1}-{finding.slices[1] + 1}, "
              f"{finding.diameter_mm:.1f} mm, {finding.volume_ml:.2f} mL, probability {finding.max_probability:.2f}"
              f"{confidence}{where}")
    for path in written:
        print(path)
    return EXIT_OK


def _remove_if_empty(folder: Path) -> None:
    """A folder this command made and then could not fill goes again (key-images/ inside it too)."""
    for path in sorted(folder.glob("**/"), key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:
            pass


def _write_dicom_exports(volume, prediction, out: Path, *, force: bool) -> list[Path]:
    from medviewer.core.safe import ExportError
    from medviewer.export.bundle import write_dicom_bundle

    try:
        return write_dicom_bundle(volume, prediction, out, force=force)
    except ExportError as exc:
        raise CommandError(str(exc)) from None


def _pick_series(path: str, uid: str | None):
    from medviewer.core.scan import scan

    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file or folder")
    result = scan([path])
    for refused in result.refused:
        _print_error(f"{refused.path}: {refused.reason}")
    if not result.series:
        raise CommandError(f"{path}: no image series found")
    if uid:
        try:
            return result.find(uid)
        except KeyError:
            raise CommandError(f"{path}: no series {uid}") from None
    return max(result.series, key=lambda s: len(s.frames))


def _series_and_prediction(args: argparse.Namespace):
    """The volume of ``args.path`` (the predictions' series, ``--series``, or the largest) and the prediction read
    from ``args.predictions`` (None without it); refused when the two are not the same slices."""
    from medviewer.ai.prediction import read_prediction
    from medviewer.core.load import load

    prediction = None
    if args.predictions:
        try:
            prediction = read_prediction(args.predictions)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise CommandError(str(exc).strip("'\"")) from None
        except OSError as exc:  # a file where a folder belongs, unreadable, ...
            raise CommandError(f"{args.predictions}: cannot read the predictions "
                               f"({exc.strerror or type(exc).__name__}; give the folder 'medviewer predict' wrote)"
                               ) from None
    series = _pick_series(args.path, args.series or (prediction.series_uid if prediction else None))
    volume = load(series)
    if prediction is not None and prediction.sop_instance_uids != volume.sop_instance_uids:
        raise CommandError(f"{args.predictions}: these predictions are for other slices than {args.path} "
                           f"({len(prediction.sop_instance_uids)} against {len(volume.slices)}); run predict again")
    return volume, prediction


def _slice_index(number: int, volume, option: str) -> int:
    if not 1 <= number <= volume.shape[0]:
        raise CommandError(f"{option} {number}: the series has slices 1 to {volume.shape[0]}")
    return number - 1


def _output_file(args: argparse.Namespace, suffix: str, what: str) -> Path:
    """``args.out``, refused before any work when its suffix is not ``suffix`` or it exists without ``--force``."""
    from medviewer.core.safe import ExistsError, check_targets

    out = Path(args.out)
    if out.suffix.lower() != suffix:
        raise CommandError(f"{out}: {what}; name the file {suffix}")
    try:
        check_targets([out], args.force)
    except ExistsError as exc:
        raise CommandError(str(exc)) from None
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from medviewer.core.safe import ExportError
    from medviewer.export.report import write_report

    out = _output_file(args, ".pdf", "the report is a PDF")
    volume, prediction = _series_and_prediction(args)
    bookmarks = [_slice_index(number, volume, "--bookmark") for number in args.bookmark]
    try:
        written = write_report(out, volume, prediction, bookmarks=bookmarks, anonymize=args.anonymize,
                               force=args.force)
    except (ExportError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(written)
    return EXIT_OK


def _render_window(text: str | None, volume):
    from medviewer.core.windowing import Window, window_presets

    if not text:
        return None
    if "/" in text:
        centre, _, width = text.partition("/")
        try:
            return Window(float(centre), float(width))
        except ValueError:
            raise CommandError(f"--window {text}: write centre/width as two numbers, e.g. --window=-600/1500") from None
    presets = {name.lower(): window for name, window in window_presets(volume).items()}
    if text.lower() not in presets:
        raise CommandError(f"--window {text}: not a preset of this series (it has: {', '.join(presets)})")
    return presets[text.lower()]


def cmd_render(args: argparse.Namespace) -> int:
    import io

    from PIL import Image

    from medviewer.core.safe import ExportError, write_bytes
    from medviewer.export.images import render_slice

    if args.size < 0:
        raise CommandError(f"--size {args.size}: give a number of pixels, 0 or more")
    out = _output_file(args, ".png", "the image is a PNG")
    volume, prediction = _series_and_prediction(args)
    if volume.is_color and args.window:
        raise CommandError(f"--window {args.window}: {args.path} holds colour images, which have no window")
    window = None if volume.is_color else _render_window(args.window, volume)
    if args.slice is not None:
        k = _slice_index(args.slice, volume, "--slice")
    elif prediction is not None and prediction.findings:
        k = int(round(prediction.findings[0].centroid_index[0]))
    else:
        k = volume.shape[0] // 2
    rgb = render_slice(volume, k, window=window, prediction=prediction,
                       mask_style="contour" if args.mask == "none" else args.mask, heatmap=not args.no_heatmap,
                       labels_to_show=[] if args.mask == "none" else None, min_size=args.size)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    try:
        written = write_bytes(out, buffer.getvalue(), force=args.force)
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    print(f"{written}: slice {k + 1} of {volume.shape[0]}, {rgb.shape[1]}x{rgb.shape[0]} pixels")
    return EXIT_OK


def cmd_anonymize(args: argparse.Namespace) -> int:
    from medviewer.core.safe import ExportError
    from medviewer.export.anonymize import anonymize

    for path in args.paths:
        if not os.path.exists(path):
            raise CommandError(f"{path}: no such file or folder")
    try:
        result = anonymize(args.paths, args.out, patient_name=args.patient_name, patient_id=args.patient_id,
                           force=args.force)
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    for refused in result.refused:
        _print_error(f"not anonymised: {refused}")
    for warning in result.warnings:
        print(f"medviewer: warning: {warning}", file=sys.stderr)
    print(f"{result.folder}: {len(result.files)} file(s)")
    return EXIT_OK


def cmd_info(paths: list[str], *, as_json: bool, pixels: bool) -> int:
    from medviewer.core.info import describe, format_text
    from medviewer.core.scan import scan

    result = scan(paths)
    document = describe(result, pixels=pixels)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print(format_text(document))
    for refused in document["refused"]:
        _print_error(f"{refused['path']}: {refused['reason']}")
    if not document["studies"]:
        # A single refused file says it all in its one line; otherwise a summary names what was given.
        if len(document["refused"]) != 1:
            _print_error("nothing could be opened in " + ", ".join(paths))
        return EXIT_FAILED
    return EXIT_OK


def _demo_config(args: argparse.Namespace):
    from dataclasses import replace

    from medviewer.ai.demo_data import DEMO_CONFIG

    changes = {}
    for name, field in (("slices", "slices"), ("size", "size"), ("fov", "field_of_view_mm"),
                        ("thickness", "slice_thickness_mm"), ("noise", "noise_hu")):
        value = getattr(args, name)
        if value is not None:
            if value <= 0 and name != "noise":
                raise CommandError(f"--{name} must be positive, got {value}")
            changes[field] = value
    for name, field in (("nodules", "nodule_count"), ("nodule_size", "nodule_diameter_mm"),
                        ("nodule_hu", "nodule_hu"), ("body_scale", "body_scale")):
        value = getattr(args, name)
        if value is not None:
            lo, hi = value
            if lo > hi:
                raise CommandError(f"--{name.replace('_', '-')}: MIN {lo} is larger than MAX {hi}")
            changes[field] = (lo, hi)
    if args.count < 1:
        raise CommandError(f"--count must be at least 1, got {args.count}")
    try:
        return replace(DEMO_CONFIG, **changes)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"invalid demo-data settings: {exc}") from None


def cmd_demo_data(args: argparse.Namespace) -> int:
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    from medviewer.ai.demo_data import DEMO_SEED, write_demo_data

    config = _demo_config(args)
    seed = DEMO_SEED if args.seed is None else args.seed
    syntax = {"none": ExplicitVRLittleEndian, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}[args.compression]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out}: exists and is not a folder")
    # Everything is written into a hidden staging folder and renamed into place: a kill or a full
    # disk leaves no half-written study and no empty folder (the scan skips hidden folders, and
    # staging folders of runs that died are removed by the next one).
    fresh = not out.exists()
    parent = out.parent if fresh else out
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(parent)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # it may become the folder itself: the user's usual mode
    except OSError as exc:
        raise CommandError(f"{out}: cannot write here ({exc.strerror or exc})") from None
    try:
        written = write_demo_data(staging, count=args.count, seed=seed, config=config, transfer_syntax=syntax)
        if fresh:
            os.rename(staging, out)
            for study in written:
                print(out / study.name)
            return EXIT_OK
        clashes = [out / p.name for p in written if (out / p.name).exists()]
        if clashes and not args.force:
            raise CommandError(f"{clashes[0]}: already exists (use --force to replace it)")
        for study in written:
            final = out / study.name
            if final.exists():  # the old study goes aside first, so there is always a whole one in place
                old = staging / f".old-{study.name}"
                os.rename(final, old)
                os.rename(study, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(study, final)
            print(final)
    except OSError as exc:
        raise CommandError(f"{out}: writing failed ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return EXIT_OK


_STAGING_PREFIX = ".medviewer-demo-"


def _remove_dead_staging(folder: Path) -> None:
    """Staging folders left by a demo-data run that was killed (its process is gone)."""
    for leftover in folder.glob(_STAGING_PREFIX + "*"):
        pid = leftover.name[len(_STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def cmd_view(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not os.path.exists(path):
            raise CommandError(f"{path}: no such file or folder")
    from medviewer.ui.app import run

    return run(list(args.paths), demo=args.demo)

if __name__ == "__main__":
    raise SystemExit(main())
