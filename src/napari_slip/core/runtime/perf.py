"""Speed on the hardware users have: reduced precision and allocator behaviour.

- ``precision="auto"`` on the CPU is measured per stage (:mod:`.autotune`, a
  :class:`Plan`); before a measurement it is bf16 on CPUs with native bf16
  (avx512_bf16 / AMX), else fp32; float16 autocast on CUDA. Reduced precisions are
  checked against fp32 in the tests (masks IoU >= 0.95, same selection).
- ``precision="int8"`` (CPU, opt-in): the linear layers of SAM's encoder and decoder
  and of CLIP dynamically quantized to int8 (:func:`quantize_int8`), the rest fp32.
- On glibc, large temporary tensors are served by mmap and handed back to the kernel
  after every layer, so each forward pass page-faults through gigabytes of fresh
  memory. Raising the mmap and trim thresholds keeps that memory in the heap for
  reuse (measured here: the SAM encoder ~2x faster). It is process-wide, so it is an
  explicit opt-in: :func:`tune_allocator` is called by the command line, the napari
  widget and the benchmark, never by importing the library or building a Segmenter.
  Set ``NAPARI_SLIP_MALLOC=0`` to make it a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading

import torch

from ..errors import InputError
from ..params import PRECISIONS

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


#: The CPU features that decide our speed (reported with every benchmark and by
#: ``napari-slip models``).
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)


@functools.cache
def cpuinfo_text() -> str | None:
    """``/proc/cpuinfo`` (None where there is none), read once per process: the CPU does
    not change while it runs, and every plane of a stack asks."""
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return None


@functools.cache
def cpu_info() -> dict:
    """``{"model": name, "flags": [...], "known": bool}``: the CPU's model name and which
    of :data:`CPU_FLAGS` it has, read from ``/proc/cpuinfo`` (``known``); elsewhere
    (macOS, Windows) the flags are unknown and the list is empty."""
    import platform

    text = cpuinfo_text()
    if text is None:
        return {"model": platform.processor() or platform.machine(), "flags": [], "known": False}
    lines = text.splitlines()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "known": True}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or AMX). Unknown CPUs
    (no ``/proc/cpuinfo``: macOS, Windows) count as not: fp32 is exact and never slow
    for lack of an instruction; on Apple silicon ``auto`` picks the GPU (mps) anyway."""
    flags = cpu_info()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe_machine() -> str:
    """One line on this machine's CPU and what ``precision="auto"`` gives it before a
    measurement (the flag table; see :mod:`.autotune` for the measured choice)."""
    info = cpu_info()
    flags = ", ".join(info["flags"]) or ("none of note" if info["known"] else "unknown")
    why = "bf16 (native bf16 instructions)" if cpu_has_fast_bf16() else "fp32 (no native bf16)"
    return (
        f"CPU: {info['model']} (features: {flags}; {torch.get_num_threads()} threads); "
        f"before a measurement, precision 'auto' on the CPU gives {why}"
    )


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision used for ``precision`` on ``device`` by the flag table (``auto``
    on a CPU: bf16 with native bf16, else fp32; :mod:`.autotune` measures instead)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if precision == "int8" and device.type != "cpu":
        raise InputError(
            "precision='int8' runs on the CPU only; on a GPU use 'auto' (fp16) or 'fp32'."
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


#: The stages whose precision ``auto`` chooses one by one (see :mod:`.autotune`).
STAGES = ("encoder", "decoder", "clip")


class Plan(str):
    """A precision per stage (and optionally a thread count per stage, and the grid's
    points per decoder batch), as a ``str``.

    The text is the one precision when every stage has it (``"bf16"``), else
    ``"enc-int8.dec-fp32.clip-bf16"``: cache keys, embedding file names and provenance
    use it unchanged (the thread counts and the point batch change no result). Each
    stage asks :func:`stage_precision` for its own.
    """

    encoder: str
    decoder: str
    clip: str
    threads: dict
    point_batch: int | None

    def __new__(
        cls,
        encoder: str,
        decoder: str,
        clip: str,
        threads: dict | None = None,
        point_batch: int | None = None,
    ):
        same = encoder == decoder == clip
        obj = super().__new__(cls, encoder if same else f"enc-{encoder}.dec-{decoder}.clip-{clip}")
        obj.encoder, obj.decoder, obj.clip = encoder, decoder, clip
        obj.threads = {k: int(v) for k, v in (threads or {}).items() if v}
        obj.point_batch = int(point_batch) if point_batch else None
        return obj

    def __reduce__(self):  # pickled whole (to worker processes, in copies)
        return (Plan, (self.encoder, self.decoder, self.clip, self.threads, self.point_batch))

    def describe(self) -> dict:
        """``{stage: {"precision": ..., "threads": n or None}}`` (for provenance); the
        decoder's also has ``"point_batch"`` when the plan chose one."""
        stages = {
            s: {"precision": getattr(self, s), "threads": self.threads.get(s)} for s in STAGES
        }
        if self.point_batch:
            stages["decoder"]["point_batch"] = self.point_batch
        return stages


def stages_of(precision: str) -> dict:
    """``{stage: {"precision": ..., "threads": n or None}}`` of a plan or one precision."""
    if isinstance(precision, Plan):
        return precision.describe()
    return {s: {"precision": str(precision), "threads": None} for s in STAGES}


#: Points per batch of the grid's decode when neither the options nor a measured
#: :class:`Plan` say (SAM's 64 on a GPU; 16 on a CPU, measured on AVX2 in 2026-11).
DEFAULT_POINT_BATCH = {"cuda": 64, "cpu": 16}


def point_batch(precision: str, device: torch.device, asked: int | None = None) -> int:
    """The grid's points per decoder batch: ``asked`` (the run's option), else the one
    a measured plan chose for this CPU, else :data:`DEFAULT_POINT_BATCH`."""
    if asked:
        return int(asked)
    if isinstance(precision, Plan) and precision.point_batch and device.type == "cpu":
        return precision.point_batch
    return DEFAULT_POINT_BATCH.get(device.type, 16)


def stage_precision(precision: str, stage: str) -> str:
    """The precision ``stage`` runs in: a :class:`Plan`'s own for it, else ``precision``."""
    return str(getattr(precision, stage)) if isinstance(precision, Plan) else str(precision)


def stage_threads(precision: str, stage: str):
    """The thread count a :class:`Plan` chose for ``stage`` inside (see :func:`threads`)."""
    return threads(precision.threads.get(stage) if isinstance(precision, Plan) else None)


#: The most threads a stage may take in this process (a batch worker's share of the
#: cores; None: no cap).
_THREAD_CAP: int | None = None


def cap_threads(n: int | None) -> None:
    """Never give a stage more than ``n`` threads (batch workers share the cores)."""
    global _THREAD_CAP
    _THREAD_CAP = n


@contextlib.contextmanager
def threads(n: int | None):
    """``n`` torch threads inside (None: as they are; never above :func:`cap_threads`);
    the process's own setting is restored on leaving (a library never keeps a
    process-wide change)."""
    if n and _THREAD_CAP:
        n = min(n, _THREAD_CAP)
    old = torch.get_num_threads()
    if not n or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def autocast(precision: str, device: torch.device):
    """A context running matmuls and convolutions in the resolved precision."""
    if precision in ("fp32", "int8"):  # int8: quantized layers, the rest in fp32
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of ``module``'s linear layers, in place.

    Weights are stored as int8 (per tensor); activations are quantized on the fly per
    call, so no calibration data is needed. PyTorch's own tool
    (``torch.ao.quantization.quantize_dynamic``); its deprecation notice (it moves to
    torchao) is silenced here. CPU only.
    """
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    for layer in module.modules():
        if type(layer).__name__ == "Linear" and "quantized" in type(layer).__module__:
            # open_clip asks a quantized layer for the dtype its inputs should have.
            layer.int8_original_dtype = torch.float32
    return module


_TUNED = False
#: Heavy work in progress in this process (see :func:`heavy_work_allocator`).
_SCOPE_DEPTH = 0
_SCOPE_APPLIED = False
_SCOPE_LOCK = threading.Lock()
#: What the scope leaves behind: glibc's own ceiling for its dynamic mmap threshold
#: (32 MiB on 64-bit) and twice that for trimming, where a process that frees large
#: arrays ends up by itself (setting a threshold turns glibc's adjustment off, so
#: its starting values would be a worse place to leave a process in).
RESTORED_MMAP_THRESHOLD = 32 << 20
RESTORED_TRIM_THRESHOLD = 64 << 20


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    if os.environ.get("NAPARI_SLIP_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap_threshold, 2**31 - 1)))
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1)))
    except (OSError, AttributeError):
        return False
    return bool(ok)


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Keep large freed blocks in glibc's heap for reuse, for the rest of the process
    (the command line and the widget, which own their process, opt in; scripts get
    the same inside every run through :func:`heavy_work_allocator`).

    Returns True if the allocator was tuned. Does nothing on other C libraries, or if
    ``NAPARI_SLIP_MALLOC=0``.
    """
    global _TUNED
    if _TUNED:
        return True
    _TUNED = _mallopt(mmap_threshold, trim_threshold)
    return _TUNED


#: Called (no arguments) each time the last run in progress ends.
_IDLE_HOOKS: list = []


def when_idle(callback) -> None:
    """Call ``callback()`` whenever the last run in progress ends (used to measure
    ``auto``'s precisions when nothing else runs; see :mod:`.autotune`)."""
    if callback not in _IDLE_HOOKS:
        _IDLE_HOOKS.append(callback)


def runs_started() -> int:
    """How many runs this process has started (see :func:`running`): a measurement that
    sees it change knows a run began meanwhile. A count, not a depth, so a run whose
    generator was abandoned and never closed cannot block measuring for good."""
    return _RUNS_STARTED


def allocator_scoped() -> bool:
    """Whether :func:`heavy_work_allocator` has the allocator tuned right now."""
    return _SCOPE_APPLIED


@contextlib.contextmanager
def heavy_work_allocator(run: bool = True):
    """glibc tuned as :func:`tune_allocator` does, for the work inside only.

    Without it, every large tensor of SAM's decoder and mask stage is a fresh ``mmap``
    whose pages fault in one by one (measured: a first prompt through the plain API
    three times as slow, most of it system time). Entered by every blocking run
    (:func:`~napari_slip.core.runtime.generators.drain`: ``segment()``,
    ``Segmenter.segment``, batches and their workers, evaluation, training); nested
    and concurrent runs share one scope. On leaving the last one, the thresholds are
    set to :data:`RESTORED_MMAP_THRESHOLD` / :data:`RESTORED_TRIM_THRESHOLD` and the
    memory the work kept is handed back (``malloc_trim``). Nothing happens at import,
    after :func:`tune_allocator`, off Linux, or with ``NAPARI_SLIP_MALLOC=0``.

    ``run=False``: the allocator as a run has it, without counting as a run (the
    measurement of ``auto``, which must time what runs get and give way to them).
    """
    global _SCOPE_DEPTH, _SCOPE_APPLIED
    with _SCOPE_LOCK:
        _SCOPE_DEPTH += 1
        if _SCOPE_DEPTH == 1 and not _TUNED:
            _SCOPE_APPLIED = _mallopt(1 << 30, 1 << 31)
    try:
        with running() if run else contextlib.nullcontext():
            yield
    finally:
        with _SCOPE_LOCK:
            _SCOPE_DEPTH -= 1
            if _SCOPE_DEPTH == 0 and _SCOPE_APPLIED:
                _SCOPE_APPLIED = False
                if not _TUNED:
                    _mallopt(RESTORED_MMAP_THRESHOLD, RESTORED_TRIM_THRESHOLD)
                    _trim()


_RUNS_STARTED = 0
_RUN_DEPTH = 0


@contextlib.contextmanager
def running():
    """Mark a run (blocking runs through :func:`heavy_work_allocator`, the widget's
    thread workers directly): counted when it starts (:func:`runs_started`); when the
    last one in progress ends, the idle hooks run."""
    global _RUNS_STARTED, _RUN_DEPTH
    with _SCOPE_LOCK:
        _RUNS_STARTED += 1
        _RUN_DEPTH += 1
    try:
        yield
    finally:
        with _SCOPE_LOCK:
            _RUN_DEPTH -= 1
            idle = _RUN_DEPTH == 0
        if idle:
            for hook in list(_IDLE_HOOKS):
                hook()
