"""Fuzz campaign for ingest: damaged files made from files we did not write, read as a user would.

Seeds are pydicom's bundled test files and pydicom-data's files. Each damaged file comes from one
seed and one seeded mutation: bit flips, truncation, bad element lengths, bad VRs, a wrong transfer
syntax, damaged compressed fragments, spliced chunks, NaN positions, zero or negative spacing,
impossible attribute values, huge Rows x Columns x Frames claims over tiny data, deep sequence
nesting. Beside them: ZIP bombs (ratio and shared data), path traversal, archives of many members,
NIfTI and TIFF claims, named pipes, symlink loops, links to /dev/zero, and intact copies of the
seeds that open cleanly.

Every file is read by the scanner, described as ``medviewer info`` does (every image decoded) and
loaded, one file at a time, in a child process watched with a per-file timeout. Printed:
tracebacks (an exception other than a refusal escaped), crashes (the reading process died), hangs
(a file took longer than the timeout), stderr lines that leaked, peak RSS, and how many intact
files were reported. ``medviewer info --json`` also runs on a sample of the batch folders.

    python3 scripts/fuzz_ingest.py --count 10000 --seed 1 --out /tmp/fuzz

A small seeded slice runs in CI (tests/core/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 250
MAX_SEED_BYTES = 1_500_000

_VRS = (b"AE|AS|AT|CS|DA|DS|DT|FD|FL|IS|LO|LT|OB|OD|OF|OL|OV|OW|PN|SH|SL|SQ|SS|ST|SV|TM|UC|UI|UL|UN|UR|US|UT|UV")
_ELEMENT = re.compile(rb"[\x00-\xff][\x00\x08\x10\x18\x20\x28\x30\x40\x50\x60\x70\x88\xe0][\x00-\xff]{2}(" + _VRS + rb")")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
             "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
             "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
             "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.110", "1.2.3.4.5.6"]


# --- seeds ---------------------------------------------------------------------------------------


def seed_files() -> list[Path]:
    """pydicom's bundled test files and pydicom-data's (both in their installed packages)."""
    import pydicom

    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # pydicom-data

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    seeds = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and 0 < path.stat().st_size <= MAX_SEED_BYTES and (
                    path.suffix.lower() in (".dcm", "") and path.name.upper() != "DICOMDIR"):
                data = path.read_bytes()
                if data[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
                    seeds.append(path)
    return seeds


# --- mutations (each takes the seed's bytes and a seeded Random) ---------------------------------


def _elements(data: bytes, limit: int = 65536) -> list[int]:
    return [m.start() for m in _ELEMENT.finditer(data, 0, min(len(data), limit))]


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    header = min(len(out), 4096)
    for _ in range(rng.choice([1, 2, 4, 8, 32])):
        at = rng.randrange(header) if rng.random() < 0.7 else rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncation(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def bad_length(data: bytes, rng: random.Random) -> bytes:
    starts = _elements(data)
    if not starts:
        return bit_flips(data, rng)
    out = bytearray(data)
    for at in rng.sample(starts, min(len(starts), rng.choice([1, 1, 2, 5]))):
        vr = bytes(out[at + 4:at + 6])
        value = rng.choice([0, 1, 3, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, rng.randrange(1 << 32)])
        if vr in _LONG_VRS:
            out[at + 8:at + 12] = struct.pack("<I", value & 0xFFFFFFFF)
        else:
            out[at + 6:at + 8] = struct.pack("<H", value & 0xFFFF)
    return bytes(out)


def bad_vr(data: bytes, rng: random.Random) -> bytes:
    starts = _elements(data)
    if not starts:
        return bit_flips(data, rng)
    out = bytearray(data)
    for at in rng.sample(starts, min(len(starts), rng.choice([1, 1, 3]))):
        out[at + 4:at + 6] = rng.choice([b"\x55\x00", b"ZZ", b"\x00\x00", b"SQ", b"OB", b"UN", b"US",
                                         bytes([rng.randrange(256), rng.randrange(256)])])
    return bytes(out)


def wrong_syntax(data: bytes, rng: random.Random) -> bytes:
    """The meta header rewritten with another transfer syntax; the data set's bytes untouched."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info

    try:
        fp = io.BytesIO(data)
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        rest = data[fp.tell():]
        new = FileMetaDataset(meta)
        new.TransferSyntaxUID = rng.choice(_SYNTAXES)
        buffer = DicomBytesIO()
        write_file_meta_info(buffer, new, enforce_standard=True)
        return b"\0" * 128 + b"DICM" + buffer.getvalue() + rest
    except Exception:  # noqa: BLE001 - a seed without a readable meta header
        return bad_vr(data, rng)


def damaged_fragments(data: bytes, rng: random.Random) -> bytes:
    """Random bytes over part of the pixel data (compressed seeds: inside their codestreams)."""
    tag = data.rfind(b"\xe0\x7f\x10\x00")
    start = tag + 12 if tag > 0 else len(data) // 2
    if start >= len(data) - 4:
        return bit_flips(data, rng)
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 6])):
        at = rng.randrange(start, len(out))
        count = min(len(out) - at, rng.choice([1, 4, 16, 64, 512]))
        out[at:at + count] = bytes(rng.randrange(256) for _ in range(count))
    return bytes(out)


def splice(data: bytes, rng: random.Random) -> bytes:
    a, b = sorted(rng.randrange(len(data)) for _ in range(2))
    choice = rng.randrange(3)
    if choice == 0:
        return data[:a] + data[b:]
    if choice == 1:
        return data[:b] + data[a:b] + data[b:]
    return data[:a] + b"\0" * (b - a) + data[b:]


def nested(data: bytes, rng: random.Random) -> bytes:
    at = data.find(b"\x08\x00\x20\x00")
    if at < 0:
        at = 132 if data[128:132] == b"DICM" else 0
    depth = rng.choice([200, 2000, 10_000, 30_000])
    sq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return data[:at] + (sq + item) * depth + ends * depth + data[at:]


_ATTRIBUTES = [
    ("ImagePositionPatient", lambda r: [r.choice(["nan", "inf", "-inf", "1e308"]), "0", "nan"]),
    ("ImageOrientationPatient", lambda r: r.choice([[0] * 6, [1, 0, 0, 1, 0, 0], ["nan"] * 6, [1e300] * 6])),
    ("PixelSpacing", lambda r: r.choice([[0, 0], [-1, -1], ["nan", 1], [1e-30, 1e30], [0]])),
    ("SliceThickness", lambda r: r.choice([0, -5, "nan", 1e308])),
    ("SpacingBetweenSlices", lambda r: r.choice([0, -2, "nan"])),
    ("Rows", lambda r: r.choice([0, 1, 65535, 50000])),
    ("Columns", lambda r: r.choice([0, 1, 65535, 50000])),
    ("NumberOfFrames", lambda r: r.choice([0, -1, 999999999, 2**31 - 1, "abc", 3])),
    ("BitsAllocated", lambda r: r.choice([0, 1, 7, 12, 24, 64, 65535])),
    ("BitsStored", lambda r: r.choice([0, 33, 65535, 1])),
    ("HighBit", lambda r: r.choice([0, 99])),
    ("SamplesPerPixel", lambda r: r.choice([0, 2, 4, 3, 65535])),
    ("PhotometricInterpretation", lambda r: r.choice(["", "GARBAGE", "PALETTE COLOR", "YBR_FULL_422", "RGB"])),
    ("PixelRepresentation", lambda r: r.choice([2, 65535, 1])),
    ("PlanarConfiguration", lambda r: r.choice([1, 7])),
    ("RescaleSlope", lambda r: r.choice([0, "nan", "inf", -1e30])),
    ("RescaleIntercept", lambda r: r.choice(["nan", 1e300])),
    ("WindowWidth", lambda r: r.choice([0, -1, "nan"])),
    ("GridFrameOffsetVector", lambda r: ["nan", "0"]),
]


def bad_attributes(data: bytes, rng: random.Random) -> bytes:
    """Impossible or huge attribute values written by pydicom (NaN positions, zero spacing, claims)."""
    import pydicom
    from pydicom import config

    config.settings.writing_validation_mode = config.IGNORE
    config.settings.reading_validation_mode = config.IGNORE
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        for keyword, value in rng.sample(_ATTRIBUTES, rng.choice([1, 1, 2, 3])):
            try:
                setattr(ds, keyword, value(rng))
            except Exception:  # noqa: BLE001 - a value pydicom will not hold
                continue
        buffer = io.BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()
    except Exception:  # noqa: BLE001
        return bad_length(data, rng)
    finally:
        config.settings.writing_validation_mode = config.WARN
        config.settings.reading_validation_mode = config.WARN


def huge_claim(data: bytes, rng: random.Random) -> bytes:
    """Rows x Columns x Frames claiming gigabytes over the seed's few bytes."""
    import pydicom
    from pydicom import config

    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ds.Rows = rng.choice([50000, 65535, 4096])
        ds.Columns = rng.choice([50000, 65535, 4096])
        ds.NumberOfFrames = rng.choice([1, 80, 1000, 999999999])
        buffer = io.BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()
    except Exception:  # noqa: BLE001
        return bit_flips(data, rng)
    finally:
        config.settings.writing_validation_mode = config.WARN


MUTATIONS = [(bit_flips, 20), (truncation, 10), (bad_length, 12), (bad_vr, 10), (wrong_syntax, 8),
             (damaged_fragments, 16), (splice, 8), (bad_attributes, 12), (huge_claim, 3), (nested, 1)]


# --- special inputs: archives, claims, things that are not files ---------------------------------


def zip_ratio_bomb(path: Path, megabytes: int = 1024) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("bomb.dcm", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(megabytes):
                member.write(block)


def zip_overlap_bomb(path: Path, members: int = 2000) -> None:
    """Members that all point at one compressed stream (the overlapping-file bomb)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0.dcm", b"\0" * (32 << 20))
    data = buffer.getvalue()
    central = data.find(b"PK\x01\x02")
    end = data.find(b"PK\x05\x06")
    entry = data[central:end]
    entries = b"".join(entry.replace(b"0.dcm", f"{k % 10}.dcm".encode(), 1) for k in range(members))
    eocd = bytearray(data[end:end + 22])
    struct.pack_into("<HHII", eocd, 8, members, members, len(entries), central)
    path.write_bytes(data[:central] + entries + bytes(eocd))


def zip_many_members(path: Path, members: int = 100_000) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for k in range(members):
            archive.writestr(f"m/{k:06d}.dcm", b"x")


def zip_traversal(path: Path, seed: Path) -> None:
    data = seed.read_bytes()
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("../../evil.dcm", "/etc/evil.dcm", "ok/../../evil.dcm", "C:/evil.dcm", "ok/good.dcm"):
            archive.writestr(name, data)


def zip_of_damaged(path: Path, files: list[bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for k, data in enumerate(files):
            archive.writestr(f"study/{k:03d}.dcm", data)


def nifti_claim(path: Path, shape: tuple, gzipped: bool, data: bytes = b"") -> None:
    import nibabel as nib
    import numpy as np

    header = nib.Nifti2Header() if max(shape) > 32767 else nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_data_offset(header.sizeof_hdr + 4)
    raw = header.binaryblock + b"\0" * 4 + data
    path.write_bytes(gzip.compress(raw) if gzipped else raw)


def nifti_gzip_bomb(path: Path) -> None:
    """A gzipped NIfTI whose 1 GB of zeros is really there (about 1 MB compressed)."""
    import nibabel as nib
    import numpy as np

    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 2048))
    header.set_data_dtype(np.int16)
    header.set_data_offset(352)
    with gzip.open(path, "wb", compresslevel=9) as fp:
        fp.write(header.binaryblock + b"\0" * 4)
        block = b"\0" * (1 << 24)
        for _ in range(64):
            fp.write(block)


def tiff_bomb(path: Path, pages: int = 24) -> None:
    import numpy as np
    from PIL import Image

    page = Image.fromarray(np.zeros((10000, 10000), dtype=np.uint8))
    page.save(path, save_all=True, append_images=[page] * (pages - 1), compression="tiff_adobe_deflate")


def png_bomb(path: Path, side: int = 30000) -> None:
    """A PNG of side x side black pixels, written row by row (never held in memory)."""
    import zlib

    raw = zlib.compressobj(9)
    body = bytearray()
    row = b"\0" * (side + 1)
    for _ in range(side):
        body += raw.compress(row)
    body += raw.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", bytes(body)) + chunk(b"IEND", b""))


def deflate_bomb(path: Path, seed: Path) -> None:
    """A Deflated Explicit VR Little Endian file whose data set inflates to 1 GB."""
    import zlib

    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    element = b"\x09\x00\x10\x00OB\x00\x00" + struct.pack("<I", 1 << 30)  # a private element of 1 GB zeros
    body = squeeze.compress(element)
    block = b"\0" * (1 << 24)
    for _ in range(64):
        body += squeeze.compress(block)
    body += squeeze.flush()
    path.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + body)


def nested_manifest(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)


def special_files(folder: Path, rng: random.Random, seeds: list[Path], index: int) -> list[Path]:
    """One of the non-mutation cases, written into ``folder``; returns what was made."""
    kind = index % 14
    name = folder / f"special{index:05d}"
    seed = rng.choice(seeds)
    if kind == 0:
        os.mkfifo(f"{name}.dcm")
    elif kind == 1:
        os.symlink(f"{name}-b.dcm", f"{name}-a.dcm")
        os.symlink(f"{name}-a.dcm", f"{name}-b.dcm")
    elif kind == 2:
        os.symlink("/dev/zero", f"{name}.dcm")
    elif kind == 3:
        os.symlink("/dev/urandom", f"{name}.nii")
    elif kind == 4:
        zip_traversal(Path(f"{name}.zip"), seed)
    elif kind == 5:
        data = seed.read_bytes()
        zip_of_damaged(Path(f"{name}.zip"), [mutate(data, random.Random(rng.random()))[1] for _ in range(5)])
    elif kind == 6:
        zip_ratio_bomb(Path(f"{name}.zip"), megabytes=rng.choice([80, 200]))
    elif kind == 7:
        zip_overlap_bomb(Path(f"{name}.zip"), members=rng.choice([50, 500]))
    elif kind == 8:
        nifti_claim(Path(f"{name}.nii"), rng.choice([(1, 1, 10**11), (65535, 65535, 1), (4, 4, 4)]), False,
                    b"\0" * rng.choice([0, 16, 128]))
    elif kind == 9:
        nifti_claim(Path(f"{name}.nii.gz"), rng.choice([(1, 1, 10**11), (30000, 30000, 30), (4, 4, 4)]), True,
                    b"\0" * rng.choice([0, 16, 128]))
    elif kind == 10:
        Path(f"{name}.dcm").write_bytes(b"")
    elif kind == 11:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(f"{name}.dcm")
        except OSError:
            pass
        finally:
            sock.close()
    elif kind == 12:
        data = seed.read_bytes()
        Path(f"{name}.tif").write_bytes(b"II*\x00" + data[4:])
    else:
        Path(f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(300)))
    return sorted(folder.glob(f"special{index:05d}*"))


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    functions, weights = zip(*MUTATIONS)
    function = rng.choices(functions, weights)[0]
    return function.__name__, function(data, rng)


# --- which seeds are intact (they open cleanly on their own) -------------------------------------


def intact_seeds(seeds: list[Path]) -> list[Path]:
    from medviewer.core.info import describe
    from medviewer.core.scan import scan

    good = []
    for path in seeds:
        try:
            result = scan(path, parallel=False)
            document = describe(result)
        except Exception:  # noqa: BLE001 - counted by the campaign, not here
            continue
        if document["studies"] and not document["refused"]:
            good.append(path)
    return good


# --- generating the campaign ---------------------------------------------------------------------


@dataclass
class Campaign:
    out: Path
    files: list[Path] = field(default_factory=list)
    intact: list[Path] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)


def generate(out: Path, count: int, seed: int, intact_count: int = 50, specials_every: int = 60) -> Campaign:
    """Write the campaign's files; pydicom's complaints about the damage it is asked to write are expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _generate(out, count, seed, intact_count, specials_every)


def _generate(out: Path, count: int, seed: int, intact_count: int, specials_every: int) -> Campaign:
    import pydicom

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    seeds = seed_files()
    cache = {path: path.read_bytes() for path in seeds}
    good = intact_seeds(seeds)
    campaign = Campaign(out)
    batch = -1
    folder = out
    intact_every = max(1, count // max(1, intact_count))
    for index in range(count):
        if index % BATCH == 0:
            batch += 1
            folder = out / f"batch-{batch:03d}"
            folder.mkdir()
        if index % intact_every == intact_every // 2 and good and len(campaign.intact) < intact_count:
            target = folder / f"intact{index:05d}.dcm"
            while good:
                source = good[len(campaign.intact) % len(good)]
                try:
                    ds = pydicom.dcmread(source, force=True)
                    # A fresh SOP Instance UID: copies of one seed stay distinct images.
                    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(seed), str(index)])
                    if "file_meta" in ds:
                        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.save_as(target)
                    break
                except Exception:  # noqa: BLE001 - a seed pydicom reads but cannot write again
                    good.remove(source)
                    target.unlink(missing_ok=True)
            if not good:
                continue
            campaign.intact.append(target)
            campaign.files.append(target)
            campaign.kinds["intact"] = campaign.kinds.get("intact", 0) + 1
            continue
        if specials_every and index % specials_every == specials_every - 1:
            made = special_files(folder, rng, seeds, index)
            campaign.files.extend(made)
            campaign.kinds["special"] = campaign.kinds.get("special", 0) + 1
            continue
        source = rng.choice(seeds)
        kind, data = mutate(cache[source], random.Random(rng.random()))
        target = folder / f"fuzz{index:05d}-{kind}{source.suffix or '.dcm'}"
        target.write_bytes(data)
        campaign.files.append(target)
        campaign.kinds[kind] = campaign.kinds.get(kind, 0) + 1
    return campaign


# --- reading: one child process, one file at a time, watched ------------------------------------


def check_file(path: str) -> dict:
    """Scan, describe (every image decoded) and load one path, as ``info`` and the viewer do."""
    from medviewer.core.errors import LoadError, MedViewerError
    from medviewer.core.info import describe
    from medviewer.core.load import load
    from medviewer.core.scan import scan

    result = scan(path, parallel=False)
    document = describe(result, pixels=True)
    loaded = 0
    for series in result.series:
        try:
            load(series)
            loaded += 1
        except (LoadError, MedViewerError):
            pass
    bad_reasons = [r for r in document["refused"] if not r["reason"] or "\n" in r["reason"]]
    return {"images": [img["path"] for st in document["studies"] for se in st["series"] for img in se["images"]],
            "refused": len(document["refused"]), "bad_reasons": len(bad_reasons), "loaded": loaded,
            "crashed_decodes": [r["path"] for r in document["refused"]
                                if "decoder crashed" in r["reason"] or "reader crashed" in r["reason"]]}


def _child() -> None:
    """Read paths from stdin, one per line; answer one JSON line per path on stdout."""
    import resource
    import traceback

    from medviewer.core import pool

    os.environ.setdefault("MEDVIEWER_WORKERS", "2")
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    for line in sys.stdin:
        path = line.rstrip("\n")
        if path == "":
            break
        out.write(json.dumps({"start": path}) + "\n")
        out.flush()
        try:
            answer = check_file(path)
        except BaseException as exc:  # noqa: BLE001 - what escaped is what the campaign counts
            answer = {"traceback": "".join(traceback.format_exception(exc))[-4000:]}
        answer["path"] = path
        answer["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.write(json.dumps(answer) + "\n")
        out.flush()
    pool.shutdown()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out.write(json.dumps({"end": True, "children_rss_kb": usage,
                          "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")
    out.flush()


@dataclass
class Counts:
    files: int = 0
    tracebacks: int = 0
    crashes: int = 0
    hangs: int = 0
    leaked_stderr_lines: int = 0
    bad_reasons: int = 0
    opened: int = 0
    refused: int = 0
    isolated_crashes: int = 0
    intact: int = 0
    intact_reported: int = 0
    peak_rss_mb: float = 0.0
    pool_peak_rss_mb: float = 0.0
    slowest_s: float = 0.0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, stderr_path: Path):
        env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
        self.stderr = open(stderr_path, "ab")
        self.process = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True,
                                        bufsize=1, start_new_session=True)
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer = ""

    def send(self, path: str) -> None:
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float) -> dict | None:
        """The next JSON line, or None on timeout or a dead child."""
        import select

        deadline = time.monotonic() + timeout
        while True:
            if "\n" in self.buffer:
                line, self.buffer = self.buffer.split("\n", 1)
                try:
                    return json.loads(line)
                except json.JSONDecodeError:  # something else wrote to the answer channel
                    continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.process.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = self.process.stdout.read()
                if chunk:
                    self.buffer += chunk
                    continue
                if self.process.poll() is not None and "\n" not in self.buffer:
                    return None
            elif self.process.poll() is not None and "\n" not in self.buffer:
                return None

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.stderr.close()

    def close(self) -> dict | None:
        try:
            self.process.stdin.write("\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        end = None
        while True:
            answer = self.answer(120)
            if answer is None or answer.get("end"):
                end = answer
                break
        self.process.wait(60)
        self.stderr.close()
        return end


def read_all(files: list[Path], intact: list[Path], log: Path, timeout: float = 60.0,
             progress: bool = False) -> Counts:
    counts = Counts(files=len(files), intact=len(intact))
    wanted = {str(p) for p in intact}
    started = time.monotonic()
    stderr_path = log.with_suffix(".stderr")
    if stderr_path.exists():
        stderr_path.unlink()
    reader = _Reader(stderr_path)
    queue = [str(p) for p in files]
    position = 0
    with open(log, "w") as report:
        while position < len(queue):
            path = queue[position]
            reader.send(path)
            begun = reader.answer(30)
            t0 = time.monotonic()
            answer = reader.answer(timeout) if begun is not None else None
            elapsed = time.monotonic() - t0
            counts.slowest_s = max(counts.slowest_s, elapsed)
            if answer is None:
                died = reader.process.poll() is not None
                if died:
                    counts.crashes += 1
                    report.write(f"CRASH {path} (exit {reader.process.returncode})\n")
                else:
                    counts.hangs += 1
                    report.write(f"HANG {path} (over {timeout:.0f} s)\n")
                counts.examples.append(f"{'crash' if died else 'hang'}: {path}")
                reader.kill()
                reader = _Reader(stderr_path)
                position += 1
                continue
            counts.peak_rss_mb = max(counts.peak_rss_mb, answer.get("rss_kb", 0) / 1024)
            if "traceback" in answer:
                counts.tracebacks += 1
                report.write(f"TRACEBACK {path}\n{answer['traceback']}\n")
                counts.examples.append(f"traceback: {path}: {answer['traceback'].strip().splitlines()[-1]}")
            else:
                counts.bad_reasons += answer["bad_reasons"]
                counts.refused += answer["refused"]
                counts.isolated_crashes += len(answer["crashed_decodes"])
                for crashed in answer["crashed_decodes"]:
                    report.write(f"ISOLATED CRASH {crashed}\n")
                if answer["images"]:
                    counts.opened += 1
                if path in wanted and path in answer["images"]:
                    counts.intact_reported += 1
            position += 1
            if progress and position % 500 == 0:
                print(f"  {position}/{len(queue)} files, {time.monotonic() - started:.0f} s", flush=True)
    end = reader.close()
    if end:
        counts.peak_rss_mb = max(counts.peak_rss_mb, end.get("rss_kb", 0) / 1024)
        counts.pool_peak_rss_mb = end.get("children_rss_kb", 0) / 1024
    counts.leaked_stderr_lines = sum(1 for line in stderr_path.read_text(errors="replace").splitlines() if line.strip())
    counts.seconds = time.monotonic() - started
    return counts


def info_on_folders(folders: list[Path], intact: list[Path], timeout: float = 600.0) -> dict:
    """``medviewer info --json`` on whole folders: one line per refused file, the intact ones listed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    totals = {"folders": 0, "tracebacks": 0, "hangs": 0, "crashes": 0, "bad_exit": 0, "unmatched_lines": 0,
              "intact": 0, "intact_reported": 0}
    for folder in folders:
        totals["folders"] += 1
        try:
            done = subprocess.run([sys.executable, "-m", "medviewer", "info", "--json", str(folder)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            totals["hangs"] += 1
            continue
        if done.returncode < 0:
            totals["crashes"] += 1
            continue
        if done.returncode not in (0, 1):
            totals["bad_exit"] += 1
        if "Traceback" in done.stderr or "unexpected error" in done.stderr:
            totals["tracebacks"] += 1
        try:
            document = json.loads(done.stdout)
        except json.JSONDecodeError:
            totals["tracebacks"] += 1
            continue
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        expected = len(document["refused"]) + (1 if not document["studies"] and len(document["refused"]) != 1 else 0)
        totals["unmatched_lines"] += abs(len(lines) - expected)
        images = {img["path"] for st in document["studies"] for se in st["series"] for img in se["images"]}
        mine = [str(p) for p in intact if p.parent == folder]
        totals["intact"] += len(mine)
        totals["intact_reported"] += sum(p in images for p in mine)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="/tmp/medviewer-fuzz")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one file may take")
    parser.add_argument("--info-folders", type=int, default=4, help="batch folders read by 'medviewer info'")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child()
        return 0
    sys.path.insert(0, str(ROOT))
    t0 = time.monotonic()
    campaign = generate(Path(args.out), args.count, args.seed)
    print(f"generated {len(campaign.files)} paths from {args.count} cases in {time.monotonic() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(campaign.kinds.items())), flush=True)
    counts = read_all(campaign.files, campaign.intact, Path(args.out) / "fuzz.log", args.timeout, progress=True)
    folders = sorted(p for p in Path(args.out).iterdir() if p.is_dir())
    rng = random.Random(args.seed)
    sample = sorted(rng.sample(folders, min(args.info_folders, len(folders))))
    info = info_on_folders(sample, campaign.intact)
    print(f"files read: {counts.files} in {counts.seconds:.0f} s (slowest {counts.slowest_s:.1f} s)")
    print(f"tracebacks: {counts.tracebacks}")
    print(f"crashes: {counts.crashes}")
    print(f"hangs: {counts.hangs} (per-file timeout {args.timeout:.0f} s)")
    print(f"stderr lines leaked: {counts.leaked_stderr_lines}")
    print(f"refusals without a one-line reason: {counts.bad_reasons}")
    print(f"opened: {counts.opened} paths; refused: {counts.refused} files; "
          f"decoder crashes isolated in pool processes: {counts.isolated_crashes}")
    print(f"intact files reported: {counts.intact_reported} of {counts.intact}")
    print(f"peak RSS: {counts.peak_rss_mb:.0f} MB (reader), {counts.pool_peak_rss_mb:.0f} MB (pool processes)")
    print("info --json on {folders} folders: tracebacks {tracebacks}, crashes {crashes}, hangs {hangs}, "
          "bad exit codes {bad_exit}, stderr lines not one per refusal {unmatched_lines}, "
          "intact reported {intact_reported} of {intact}".format(**info))
    for example in counts.examples[:20]:
        print("  " + example)
    failed = (counts.tracebacks or counts.crashes or counts.hangs or counts.intact_reported != counts.intact
              or info["tracebacks"] or info["crashes"] or info["hangs"] or info["intact_reported"] != info["intact"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
