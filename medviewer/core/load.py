"""``medviewer.load(series)``: decode a scanned series into one preallocated :class:`Volume`.

The volume is allocated once, in the narrowest dtype the header promises the values fit
(int16 for CT), and every frame is decoded straight into its slice:

* native little-endian grayscale frames are read from the file into a reused per-thread
  buffer and mapped through the modality LUT into the volume (threads: the reads and the
  numpy arithmetic release the GIL);
* compressed frames are decoded in the shared process pool (the codecs hold the GIL) and
  mapped into the volume as they come back;
* everything else (big endian, deflate, colour, pictures, NIfTI) is decoded by pydicom,
  Pillow or nibabel in threads.

If a frame's values do not fit the chosen dtype (a 16-bit MR above 32767, say), the volume is
widened once, to the next dtype that holds them. Slices come out in any order; the middle one
(or ``first_slice``) is started first so a viewer can show it early through ``on_slice``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from medviewer.core.capture import captured, clean
from medviewer.core.decode import DecodeError, decode_frames, read_native_frame, rgb_bits, rgb_dtype, to_rgb
from medviewer.core.errors import (
    Cancelled,
    CancelToken,
    LoadError,
    ProgressCallback,
    WorkerCrashed,
    WorkerHung,
    is_cancelled,
)
from medviewer.core.header import UNCOMPRESSED, Instance
from medviewer.core.pool import kill, process_pool, replace_broken, run_isolated, task_timeout, worker_count
from medviewer.core.series import FrameRef, Series
from medviewer.core.volume import SliceInfo, VoiLut, Volume

_INTEGER_LADDER = [np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.float32)]
# Frames of one multi-frame instance handed to one pool task.
_FRAMES_PER_TASK = 8


def decode_job(instance: Instance, frames: list[int]) -> tuple[list[np.ndarray], object, list[str]]:
    """:func:`decode_frames` with what the codecs say on the side collected (runs in a pool
    process): (arrays, palette, messages). Any failure is a :class:`DecodeError` naming it."""
    from medviewer.core.capture import captured

    with captured() as messages:
        try:
            arrays, palette = decode_frames(instance, frames)
        except DecodeError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            raise DecodeError("not enough memory to decode the frames") from None
        except BaseException as exc:  # noqa: BLE001 - a decoder's failure is the file's, not the program's
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise DecodeError(f"could not be decoded ({text})") from None
    return arrays, palette, messages


CRASHED = "could not be decoded (decoder crashed)"


def _is_integral(value: float) -> bool:
    return float(value).is_integer()


def _stored_range(instance: Instance) -> tuple[int, int]:
    bits = max(1, instance.bits_stored)
    if instance.pixel_representation:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def plan_dtype(series: Series) -> np.dtype:
    """The dtype the volume starts in, from the headers alone."""
    try:
        return _plan_dtype(series)
    except (OverflowError, ValueError):  # absurd rescale values: floats hold whatever comes
        return np.dtype(np.float32)


def _plan_dtype(series: Series) -> np.dtype:
    if series.is_color:
        # Colour keeps its stored depth (16- and 32-bit RGB are not cut to 8 bits).
        return max((rgb_dtype(inst) for inst in series.instances), key=lambda d: d.itemsize)
    instances = series.instances
    if any(inst.float_pixels or inst.bits_allocated > 32 for inst in instances):
        return np.dtype(np.float32)
    lows, highs = [], []
    for ref in series.frames:
        g = ref.geometry
        if not (_is_integral(g.slope) and _is_integral(g.intercept)):
            return np.dtype(np.float32)
        lo, hi = _stored_range(ref.instance)
        a, b = lo * g.slope + g.intercept, hi * g.slope + g.intercept
        lows.append(min(a, b))
        highs.append(max(a, b))
    lo, hi = min(lows), max(highs)
    if lo >= 0 and hi <= 255 and all(inst.bits_allocated <= 8 for inst in instances):
        return np.dtype(np.uint8)
    if _holds(np.dtype(np.int16), lo, hi) or all(inst.bits_stored <= 16 for inst in instances):
        # int16 even where the header's theoretical range is wider: real CT and MR values
        # nearly always fit, and a frame that does not widens the volume once.
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def _holds(dtype: np.dtype, lo: float, hi: float) -> bool:
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return info.min <= lo and hi <= info.max


class _Target:
    """The volume being filled, widened under a lock when a frame's values need it."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.voxels = np.empty(shape, dtype=dtype)
        self.lock = threading.Lock()
        self.lo = np.inf
        self.hi = -np.inf
        self.widened_from: np.dtype | None = None

    def put(self, k: int, stored: np.ndarray, slope: float, intercept: float) -> None:
        # Absurd rescale values (a damaged header) saturate quietly; numpy would warn on stderr.
        with np.errstate(all="ignore"):
            self._put(k, stored, slope, intercept)

    def _put(self, k: int, stored: np.ndarray, slope: float, intercept: float) -> None:
        if self.voxels.ndim == 4:
            with self.lock:
                self.voxels[k] = stored
            return
        if stored.size:
            s_lo, s_hi = stored.min(), stored.max()
            if stored.dtype.kind == "f" and not (np.isfinite(s_lo) and np.isfinite(s_hi)):
                finite = stored[np.isfinite(stored)]
                s_lo, s_hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
            a, b = float(s_lo) * slope + intercept, float(s_hi) * slope + intercept
            lo, hi = min(a, b), max(a, b)
        else:
            lo = hi = intercept
        with self.lock:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
            if not _holds(self.voxels.dtype, self.lo, self.hi):
                self._widen()
            out = self.voxels[k]
            if slope == 1.0 and intercept == 0.0:
                np.copyto(out, stored, casting="unsafe")
            elif self.voxels.dtype.kind == "f":
                np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
                if intercept:
                    np.add(out, np.float32(intercept), out=out)
            elif slope == 1.0:
                np.add(stored, np.int32(intercept), out=out, casting="unsafe")
            else:
                np.multiply(stored, np.int64(slope), out=out, casting="unsafe")
                np.add(out, np.int64(intercept), out=out, casting="unsafe")

    def _widen(self) -> None:
        ladder = [d for d in _INTEGER_LADDER if d.itemsize >= self.voxels.dtype.itemsize or d.kind == "f"]
        for dtype in ladder:
            if _holds(dtype, self.lo, self.hi):
                break
        if self.widened_from is None:
            self.widened_from = self.voxels.dtype
        self.voxels = self.voxels.astype(dtype)

    def fill(self, k: int, value: float) -> None:
        with self.lock:
            self.voxels[k] = np.clip(value, *(_limits(self.voxels.dtype)))


def _limits(dtype: np.dtype) -> tuple[float, float]:
    if dtype.kind == "f":
        return -np.inf, np.inf
    info = np.iinfo(dtype)
    return info.min, info.max


def _fast(ref: FrameRef) -> bool:
    inst = ref.instance
    return inst.pixel_offset is not None and inst.samples_per_pixel == 1 and inst.photometric.startswith("MONOCHROME")


def _pooled(instance: Instance) -> bool:
    return instance.kind == "dicom" and instance.transfer_syntax not in UNCOMPRESSED


def load(
    series: Series,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_slice: Callable[[Volume, int], object] | None = None,
    first_slice: int | None = None,
    parallel: bool = True,
    resample: bool = True,
) -> Volume:
    """Decode ``series`` into a :class:`Volume`.

    ``progress(done, total)`` counts slices; ``on_slice(volume, k)`` is called (in the calling
    thread) as soon as slice ``k`` holds its final values, with the volume being filled (read
    ``volume.voxels`` afresh each time: it may be widened once). ``cancel`` stops between
    slices with :class:`~medviewer.core.errors.Cancelled`. Frames that fail to decode are
    left blank and named in ``volume.warnings``; if none decodes, :class:`LoadError` is raised.

    Where ``series.grid`` plans a resampling (gantry tilt, gaps, irregular spacing), the
    acquired slices are resampled onto it once all are decoded (:mod:`medviewer.core.resample`);
    ``on_slice`` reports the acquired slices before that. ``resample=False`` keeps the acquired
    slices (each with its own position in ``volume.slices``; the affine is then approximate).
    """
    frames = series.frames
    count = len(frames)
    if count == 0:
        raise LoadError(series.key, "series has no frames")
    shape = (count, series.rows, series.columns) + ((3,) if series.is_color else ())
    target = _Target(shape, plan_dtype(series))
    try:
        volume = _make_volume(series, target.voxels)
    except Exception as exc:  # noqa: BLE001 - a header element that breaks only when read lazily refuses the series
        raise LoadError(series.key, f"header could not be read ({type(exc).__name__}: {exc})") from exc

    first = count // 2 if first_slice is None else min(max(first_slice, 0), count - 1)
    order = [first] + [k for k in range(count) if k != first]

    failures: dict[int, str] = {}
    done = 0
    total = count
    if progress:
        progress(0, total)

    workers = worker_count() if parallel else 1
    pool = process_pool() if parallel else None
    local = threading.local()

    def buffer_for(instance: Instance) -> np.ndarray:
        buf = getattr(local, "buffer", None)
        if buf is None or buf.nbytes < instance.frame_bytes:
            buf = np.empty(instance.frame_bytes, dtype=np.uint8)
            local.buffer = buf
        return buf

    def read_fast(k: int) -> list[int]:
        ref = frames[k]
        stored = read_native_frame(ref.instance, ref.frame, buffer_for(ref.instance))
        target.put(k, stored, ref.geometry.slope, ref.geometry.intercept)
        return [k]

    def put_decoded(ks: list[int], arrays: list[np.ndarray], palette) -> list[int]:
        for k, array in zip(ks, arrays):
            ref = frames[k]
            if series.is_color:
                array = to_rgb(array, ref.instance, palette)
            target.put(k, array, ref.geometry.slope, ref.geometry.intercept)
        return ks

    def decode_here(ks: list[int]) -> list[int]:
        inst = frames[ks[0]].instance
        with captured() as messages:
            arrays, palette = decode_frames(inst, [frames[k].frame for k in ks])
        notes.extend(messages)
        return put_decoded(ks, arrays, palette)

    # Jobs: (kind, slice indices). Frames of one instance that need a decoder go together.
    jobs: list[tuple[str, list[int]]] = []
    grouped: dict[int, list[int]] = {}
    for k in order:
        ref = frames[k]
        if _fast(ref):
            jobs.append(("fast", [k]))
        else:
            key = id(ref.instance)
            if key not in grouped:
                grouped[key] = []
                jobs.append(("decode", grouped[key]))
            grouped[key].append(k)
    split_jobs: list[tuple[str, list[int]]] = []
    for kind, ks in jobs:
        if kind == "decode":
            ks.sort(key=lambda k: frames[k].frame)
            if first in ks:  # decode the priority slice alone, first
                split_jobs.append((kind, [first]))
                ks = [k for k in ks if k != first]
            split_jobs.extend((kind, ks[i:i + _FRAMES_PER_TASK]) for i in range(0, len(ks), _FRAMES_PER_TASK))
        else:
            split_jobs.append((kind, ks))

    # Reads wait on the disk and the numpy work releases the GIL: more threads than cores
    # keep a cold disk busy.
    threads = ThreadPoolExecutor(max_workers=max(4, 2 * workers) if parallel else 1,
                                 thread_name_prefix="medviewer-load")
    pending: dict[Future, tuple[str, list[int]]] = {}
    submitted: dict[Future, int] = {}
    # The priority slice is announced first: others that finish before it wait here.
    held: list[int] = []
    first_announced = False

    def announce(ks: list[int]) -> None:
        nonlocal first_announced
        if on_slice is None:
            return
        ready = [k for k in ks if k not in failures]
        if not first_announced:
            if first in ks or first in failures:
                first_announced = True
                ready = ([first] if first in ready else []) + [k for k in held + ready if k != first]
                held.clear()
            else:
                held.extend(ready)
                return
        for k in ready:
            on_slice(volume, k)
    lost: list[list[int]] = []
    notes: list[str] = []

    def finish(kind: str, ks: list[int], future: Future) -> None:
        nonlocal done
        try:
            result = future.result()
            if kind == "pooled":
                arrays, palette, messages = result
                put_decoded(ks, arrays, palette)
                notes.extend(messages)
        except DecodeError as exc:
            for k in ks:
                failures[k] = str(exc)
        except (KeyboardInterrupt, SystemExit, Cancelled):
            raise
        except MemoryError:
            for k in ks:
                failures[k] = "not enough memory to decode this frame"
        except OSError as exc:
            for k in ks:
                failures[k] = f"could not be read ({exc.strerror or exc})"
        except BaseException as exc:  # noqa: BLE001 - one job's failure is its frames', not the load's
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            for k in ks:
                failures[k] = f"could not be decoded ({text})"
        volume.voxels = target.voxels
        done += len(ks)
        announce(ks)
        if progress:
            progress(done, total)

    try:
        for kind, ks in split_jobs:
            inst = frames[ks[0]].instance
            if kind == "decode" and pool is not None and _pooled(inst):
                try:
                    future = pool.submit(decode_job, inst, [frames[k].frame for k in ks])
                    pending[future] = ("pooled", ks)
                    submitted[future] = len(submitted)
                    continue
                except (BrokenProcessPool, RuntimeError):
                    # The pool broke under an earlier job: decoded in a fresh process later.
                    lost.append(ks)
                    continue
            future = threads.submit(read_fast if kind == "fast" else decode_here, *( [ks[0]] if kind == "fast" else [ks]))
            pending[future] = (kind, ks)
            submitted[future] = len(submitted)

        running_since: dict[Future, float] = {}
        limit = task_timeout()
        while pending:
            if is_cancelled(cancel):
                raise Cancelled("load cancelled")
            finished, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
            now = time.monotonic()
            hung = []
            for future, (kind, _ks) in pending.items():
                if kind == "pooled" and future not in finished and future.running():
                    if now - running_since.setdefault(future, now) > limit:
                        hung.append(future)
            if hung:
                # A decoder stuck in native code: its processes are killed (the other batches they held
                # are decoded again in fresh processes below); the stuck frames are not retried.
                kill(pool)
                for future in hung:
                    _, ks = pending.pop(future)
                    for k in ks:
                        failures[k] = f"could not be decoded (the decoder did not finish within {limit:g} s)"
                    done += len(ks)
                    if progress:
                        progress(done, total)
                continue
            for future in sorted(finished, key=submitted.__getitem__):
                kind, ks = pending.pop(future)
                if kind == "pooled" and _broken(future):
                    # A codec crashed a pool process (or the pool went down with another job's
                    # crash): decoded again below, alone, in a fresh process. Never here.
                    lost.append(ks)
                    continue
                finish(kind, ks, future)
        if lost:
            replace_broken(pool)
            for ks in lost:
                if is_cancelled(cancel):
                    raise Cancelled("load cancelled")
                inst = frames[ks[0]].instance
                try:
                    arrays, palette, messages = run_isolated(decode_job, inst, [frames[k].frame for k in ks])
                    put_decoded(ks, arrays, palette)
                    notes.extend(messages)
                except WorkerHung as exc:
                    for k in ks:
                        failures[k] = f"could not be decoded (the decoder {exc})"
                except WorkerCrashed:
                    for k in ks:
                        failures[k] = CRASHED
                except DecodeError as exc:
                    for k in ks:
                        failures[k] = str(exc)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # noqa: BLE001
                    for k in ks:
                        failures[k] = f"could not be decoded ({type(exc).__name__}: {exc})"
                volume.voxels = target.voxels
                done += len(ks)
                announce(ks)
                if progress:
                    progress(done, total)
    finally:
        for future in pending:
            future.cancel()
        threads.shutdown(wait=True, cancel_futures=True)

    volume.voxels = target.voxels
    for note in clean(notes):
        if note not in volume.warnings:
            volume.warnings.append(note)
    if failures:
        if len(failures) == count:
            k = min(failures)
            raise LoadError(frames[k].instance.source.name, failures[k])
        fill = target.lo if np.isfinite(target.lo) else 0
        for k in sorted(failures):
            target.fill(k, fill)
        volume.missing_slices = sorted(failures)
        shown = sorted(failures)[:3]
        detail = "; ".join(f"slice {k + 1} ({frames[k].instance.source.name}): {failures[k]}" for k in shown)
        more = f"; and {len(failures) - len(shown)} more" if len(failures) > len(shown) else ""
        volume.warnings.append(f"{len(failures)} slice(s) could not be decoded and are shown blank: {detail}{more}")
    if series.grid is not None:
        if resample:
            from medviewer.core.resample import apply_grid

            apply_grid(volume, series)
        else:
            volume.warnings.append(f"not resampled ({series.grid.reason}): each slice keeps its acquired position; "
                                   "3D positions from the affine are approximate")
    return volume


def _broken(future: Future) -> bool:
    try:
        future.result()
    except BrokenProcessPool:
        return True
    except BaseException:  # noqa: BLE001 - other failures are handled by the caller
        return False
    return False


def _make_volume(series: Series, voxels: np.ndarray) -> Volume:
    first = series.first
    modality = series.modality
    rescale_type = str(first.get("RescaleType", "") or "")
    units = "HU" if modality == "CT" and rescale_type in ("", "HU") else rescale_type
    slices = []
    for ref in series.frames:
        inst = ref.instance
        number = inst.get("InstanceNumber")
        try:
            number = int(number) if number not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        uid = inst.sop_instance_uid if inst.frames == 1 else f"{inst.sop_instance_uid}"
        slices.append(SliceInfo(uid, inst.source.name, ref.frame, ref.geometry.position, number,
                                ref.geometry.slope, ref.geometry.intercept))
    spacing, origin = series.spacing_mm, series.origin_lps_mm
    if series.grid is not None:
        # The acquired stack until it is resampled: first slice's position, median step.
        positions = np.array([ref.geometry.position for ref in series.frames], dtype=float)
        steps = np.diff(positions @ np.asarray(series.direction)[0])
        spacing = (float(np.median(steps)) if len(steps) else series.spacing_mm[0],) + tuple(series.spacing_mm[1:])
        origin = tuple(positions[0])
    return Volume(
        voxels=voxels,
        spacing_mm=spacing,
        origin_lps_mm=np.asarray(origin, dtype=float),
        direction=series.direction,
        slices=slices,
        modality=modality,
        units=units,
        photometric="RGB" if series.is_color else series.photometric,
        color_bits=max(rgb_bits(inst) for inst in series.instances) if series.is_color else 0,
        windows=list(series.frames[0].geometry.windows),
        voi_lut=_voi_lut(first),
        series_uid=series.uid,
        study_uid=series.study_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
        description=series.description,
        geometry_known=series.geometry_known,
        pixel_spacing_known=series.pixel_spacing_known,
        sources=[ref.instance for ref in series.frames],
        warnings=list(series.warnings),
    )


def _voi_lut(instance: Instance) -> VoiLut | None:
    header = instance.header
    if header is None or not header.get("VOILUTSequence"):
        return None
    try:
        item = header.VOILUTSequence[0]
        entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
        entries = entries or 65536
        data = item.LUTData
        if isinstance(data, bytes):
            dtype = "<u1" if bits <= 8 and len(data) == entries else "<u2"
            table = np.frombuffer(data, dtype=dtype)
        else:
            table = np.asarray(data)
        table = np.asarray(table[:entries], dtype=np.uint16)
        return VoiLut(first_mapped if first_mapped < 32768 or instance.pixel_representation == 0 else first_mapped - 65536,
                      table, str(item.get("LUTExplanation", "") or ""))
    except Exception:  # noqa: BLE001 - an unreadable VOI LUT (bad VR, bad length) falls back to the window
        return None
