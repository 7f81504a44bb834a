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

from medviewer import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("view", "info", "demo-data")


class CommandError(Exception):
    """A one-line error for the user; ``main`` prints it and exits non-zero."""


def _print_error(message: str) -> None:
    print(f"medviewer: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medviewer",
        description="MedViewer: a DICOM viewer with a built-in diagnosis assistant.",
        epilog="Run 'medviewer COMMAND --help' for a command's options. Without a command, "
               "medviewer opens the viewer on PATHS.",
    )
    parser.add_argument("--version", action="version", version=f"medviewer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `medviewer PATHS...` and `medviewer --demo` mean `medviewer view ...`.
    options = [a for a in argv if a != "--debug"]
    first = options[0] if options else None
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
    return cmd_view(args)


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
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".medviewer-demo-", dir=out))
    except OSError as exc:
        raise CommandError(f"{out}: cannot write here ({exc.strerror or exc})") from None
    try:
        written = write_demo_data(staging, count=args.count, seed=seed, config=config, transfer_syntax=syntax)
        clashes = [out / p.name for p in written if (out / p.name).exists()]
        if clashes and not args.force:
            raise CommandError(f"{clashes[0]}: already exists (use --force to replace it)")
        for study in written:
            final = out / study.name
            if final.exists():
                shutil.rmtree(final)
            os.replace(study, final)
            print(final)
    except OSError as exc:
        raise CommandError(f"{out}: writing failed ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return EXIT_OK


def demo_study_path() -> Path:
    """The demo study, written once into the user's cache folder."""
    from platformdirs import user_cache_dir

    from medviewer.ai.demo_data import DEMO_CONFIG, DEMO_SEED, write_demo_data

    root = Path(user_cache_dir("medviewer")) / f"demo-{__version__}"
    marker = root / "complete"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            (study,) = write_demo_data(staging, count=1, seed=DEMO_SEED, config=DEMO_CONFIG)
            final = root / study.name
            if final.exists():
                shutil.rmtree(final)
            os.replace(study, final)
            marker.write_text(final.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root / marker.read_text().strip()


def cmd_view(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not os.path.exists(path):
            raise CommandError(f"{path}: no such file or folder")
    from medviewer.ui.app import run

    return run(list(args.paths), demo=args.demo)

if __name__ == "__main__":
    raise SystemExit(main())
