"""``medviewer pacs echo|find|get|move|send``: the command-line side of :mod:`medviewer.net.dimse`.

Node settings come from ``--nodes FILE`` (default: the user's ``pacs.json``) and ``--node NAME``, or
directly from ``--aet/--host/--port``. Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from medviewer.core.errors import Cancelled, MedViewerError
from medviewer.net.nodes import NetSettings, Node, SettingsError, check_ae, check_port, load_settings


def _settings_and_node(args) -> tuple[NetSettings, Node]:
    settings = load_settings(args.nodes)
    if args.our_aet:
        settings.ae_title = check_ae(args.our_aet, "--our-aet")
    if args.listen_port is not None:
        settings.port = check_port(args.listen_port, "--listen-port")
    if args.timeout is not None:
        if not args.timeout > 0:
            raise SettingsError("--timeout", "must be more than 0 seconds")
        settings.timeout_s = args.timeout
    if args.node:
        node = settings.node(args.node)
        if args.aet or args.host or args.port:
            node = replace(node, ae_title=args.aet or node.ae_title, host=args.host or node.host,
                           port=args.port or node.port)
    elif args.url:
        node = Node(name="dicomweb", url=args.url, user=args.user, password=args.password, token=args.token)
    elif args.aet and args.host and args.port:
        node = Node(name=args.aet, ae_title=args.aet, host=args.host, port=args.port)
    else:
        raise SettingsError("pacs", "name a configured node with --node NAME, or give --aet, --host and --port, or --url")
    return settings, node.check()


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{done}/{total} instances", end="", file=sys.stderr, flush=True)


def _dicom_files(paths: list[str]) -> list[str]:
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
        elif os.path.exists(path):
            files.append(path)
        else:
            raise SettingsError(path, "no such file or folder")
    return files


def run_pacs(args) -> int:
    from medviewer.net import service as dimse

    try:
        settings, node = _settings_and_node(args)
        if args.operation == "echo":
            seconds = dimse.echo(node, settings)
            print(f"{node}: C-ECHO answered in {seconds * 1000:.0f} ms (as {settings.ae_title})")
        elif args.operation == "find":
            matches = dimse.find(node, settings, args.level.upper(), patient_name=args.patient_name,
                                 patient_id=args.patient_id, date=args.date, modality=args.modality,
                                 accession=args.accession, study_uid=args.study)
            if args.json:
                print(json.dumps(matches, indent=2))
            else:
                for match in matches:
                    print("  ".join(f"{k}={v}" for k, v in match.items() if v))
                print(f"{len(matches)} match(es) at {args.level} level", file=sys.stderr)
        elif args.operation in ("get", "move"):
            out = Path(args.out)
            if args.operation == "get":
                result = dimse.get(node, settings, args.study, out, series_uid=args.series, progress=_progress)
            else:
                result = dimse.move(node, settings, args.study, out, series_uid=args.series,
                                    destination=args.dest, progress=_progress)
            if sys.stderr.isatty():
                print(file=sys.stderr)
            for reason in result.not_stored:
                print(f"medviewer: not stored: {reason}", file=sys.stderr)
            print(f"{args.operation}: {result.completed} completed, {result.failed} failed, {result.warning} "
                  f"warnings; {len(result.files)} file(s) in {out}")
            if result.failed or result.not_stored:
                return 1
        elif args.operation == "send":
            result = dimse.send(node, settings, _dicom_files(args.paths), progress=_progress)
            if sys.stderr.isatty():
                print(file=sys.stderr)
            for line in result.warnings:
                print(f"medviewer: warning: {line}", file=sys.stderr)
            for line in result.failed:
                print(f"medviewer: not sent: {line}", file=sys.stderr)
            print(f"send: {len(result.sent)} sent, {len(result.failed)} failed to {node}")
            return 1 if result.failed or not result.sent else 0
    except MedViewerError as exc:
        print(f"medviewer: {exc}", file=sys.stderr)
        return 1
    except Cancelled:
        print("medviewer: cancelled", file=sys.stderr)
        return 130
    return 0
