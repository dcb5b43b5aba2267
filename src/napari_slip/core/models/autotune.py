"""``precision="auto"`` chosen by measuring the CPU it runs on, stage by stage.

A table of CPU flags cannot know which precision is fastest on a CPU nobody here has
(int8 on a VNNI laptop, bf16 on a chip that emulates part of it). So ``auto`` times
the shapes that matter on this machine, once:

- **encoder**: two blocks of SAM ViT-B's image encoder (one windowed, one global,
  width 768) with its patch embedding and neck, on a 448 px image;
- **decoder**: SAM's full-size mask decoder (width 256, a 64 x 64 embedding) on 8
  points, once with no mask passing the IoU filter and once with every mask passing;
- **clip**: two blocks of CLIP ViT-B/32's vision tower (width 768) on 16 crops at
  224 px, through the same weight casting / quantization the real CLIP gets;
- **the grid's point batch**: then, in the decoder's chosen precision and threads,
  the grid's decode at 8, 16, 32 and 64 points per batch (the real shapes), the
  smallest batch within ``TIE`` of the fastest per point winning.

Each stage runs in every precision this CPU supports (fp32, bf16, int8), with every
thread count worth trying (the logical cores and the physical ones, when they
differ); the weights are random (speed does not depend on them). A precision is
eligible for a stage only if its output agrees with fp32's (cosine >= ``FIDELITY``);
the fastest eligible one wins, but times within ``TIE`` of it are a tie, won by the
simplest precision (fp32, then bf16, then int8): never slower than fp32 beyond noise,
exact when nothing is clearly faster, and no int8 copy of a model for a gain that
noise could give. 15-25 s on 2 cores.

When: never during a run. A run with no measurement yet uses the flag table's guess;
the measurement follows once the process has no heavy work (a background thread that
gives up and retries later if a run starts meanwhile); the command line measures at
the end of its first run. The choice is cached per CPU model, flags, torch version
and thread counts in ``CACHE/autotune.json``; a change of any of them measures again.
``napari-slip models`` prints the table and the choice (``--measure``: now).
``NAPARI_SLIP_AUTOTUNE=0`` turns measuring off (``auto`` is the flag table).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import threading
import time
from collections.abc import Callable

import torch

from ..errors import InputError
from ..runtime.machine import cpu_precisions, physical_cores, thread_options
from ..runtime.perf import (
    STAGES,
    Plan,
    autocast,
    cpu_has_fast_bf16,
    cpu_info,
    heavy_work_allocator,
    quantize_int8,
    runs_started,
    threads,
    when_idle,
)
from .autotune_cache import (
    cache_file,
    check_writable,
    load_measurement,
    machine_key,
    save_measurement,
    writable,
)

#: Output cosine against fp32 a precision needs to be chosen for a stage.
FIDELITY = 0.99
#: Times within this share of the fastest count as a tie: the simplest precision of
#: :data:`SIMPLICITY` among them wins (measurement noise must not pick int8's copy).
TIE = 0.05
#: fp32 (exact), bf16 (autocast), int8 (a quantized copy of the model, made once).
SIMPLICITY = ("fp32", "bf16", "int8")
#: Seconds a background measurement waits after a run before it starts (a script's
#: or the widget's next call usually follows within this, and then comes first).
QUIET_S = 1.0
#: Timed repetitions per cell (the fastest counts), after one warm-up.
REPEATS = 2


class Interrupted(Exception):
    """A run started while measuring: the measurement is abandoned (and redone later)."""


# -- choosing ---------------------------------------------------------------------------
def choose(table: dict, fidelity: dict) -> dict:
    """``{stage: {"precision": p, "threads": n}}`` from measured seconds
    ``table[stage][precision][threads]`` and cosines ``fidelity[stage][precision]``.

    Per stage: among the (precision, threads) whose output agrees with fp32's, the
    simplest precision (fp32, then bf16, then int8, which needs a quantized copy of
    the model made at first use) whose time is within :data:`TIE` of the fastest; so
    never slower than fp32 by more than noise, and exact when nothing is clearly
    faster.
    """
    chosen = {}
    for stage, by_precision in table.items():
        cells = [
            (t, p, int(n))
            for p, row in by_precision.items()
            for n, t in row.items()
            if p == "fp32" or fidelity.get(stage, {}).get(p, 0.0) >= FIDELITY
        ]
        if not cells:
            raise InputError(f"No precision of stage {stage!r} was measured.")
        fastest = min(cells)[0]
        near = [c for c in cells if c[0] <= fastest * (1 + TIE)]
        simplest = min(
            near,
            key=lambda c: (
                SIMPLICITY.index(c[1]) if c[1] in SIMPLICITY else len(SIMPLICITY),
                c[0],
            ),
        )
        chosen[stage] = {"precision": simplest[1], "threads": simplest[2]}
    return chosen


def plan_of(choice: dict) -> Plan:
    return Plan(
        *(choice[s]["precision"] for s in STAGES),
        threads={s: choice[s]["threads"] for s in STAGES},
        point_batch=choice["decoder"].get("point_batch"),
    )


def choose_batch(per_point: dict) -> int:
    """The grid's points per decoder batch from measured seconds per point
    ``{batch: s}``: the smallest batch within :data:`TIE` of the fastest (a smaller
    batch holds less memory and reports progress, or stops, sooner)."""
    fastest = min(per_point.values())
    return min(int(b) for b, t in per_point.items() if t <= fastest * (1 + TIE))


# -- measuring ----------------------------------------------------------------------------
def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().flatten(), b.float().flatten()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@contextlib.contextmanager
def _seeded():
    """The same random weights for every precision; the caller's random state kept."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _encoder_probe(precision: str) -> list:
    """ViT-B's 8 windowed blocks (25 windows each, timed on 4) and 4 global ones."""
    import copy

    from .sam import SamConfig, build_sam

    gen = torch.Generator().manual_seed(0)
    side = ENCODER_GRID
    with _seeded():
        sam = build_sam(SamConfig(img_size=16 * side, depth=2, global_attn_indexes=(1,)))
    blocks = tuple(sam.image_encoder.blocks)
    if precision == "int8":
        blocks = tuple(quantize_int8(copy.deepcopy(b)) for b in blocks)
    x_window = torch.randn(1, 28, 28, 768, generator=gen)  # 4 windows of 14 x 14
    x_global = torch.randn(1, side, side, 768, generator=gen)
    windows = math.ceil(side / 14) ** 2

    def part(block, x):
        def run():
            with autocast(precision, torch.device("cpu")):
                return block(x)

        return run

    return [(part(blocks[0], x_window), 8 * windows / 4), (part(blocks[1], x_global), 4.0)]


def _full_size_decoder(n_points: int) -> tuple:
    """SAM's full-size mask decoder (random weights, seeded), a random 64 x 64
    embedding of a 1,024 px image, and ``n_points`` random points on it."""
    import numpy as np

    from .promptable import ImageEmbedding, PromptableSam
    from .sam import SamConfig, build_sam

    gen = torch.Generator().manual_seed(0)
    with _seeded():
        decoder = PromptableSam(build_sam(SamConfig(depth=0, global_attn_indexes=())))
    embedding = ImageEmbedding(
        torch.randn(1, 256, 64, 64, generator=gen), (1024, 1024), (1024, 1024)
    )
    return decoder, embedding, np.random.default_rng(1).uniform(0, 1024, (n_points, 2))


def _decoder_probe(precision: str) -> list:
    """SAM's mask decoder on 16 points none of whose masks pass, and 8 whose all do."""
    decoder, embedding, points = _full_size_decoder(16)

    def run():
        none = decoder.decode_points_above(embedding, points, 1e9, precision)
        every = decoder.decode_points_above(embedding, points[:8], -1e9, precision)
        return torch.cat([every[0].flatten(), none[1]])

    return [(run, 1.0)]


def _clip_probe(precision: str) -> list:
    """Two blocks of CLIP ViT-B/32's vision tower on 16 crops, cast / quantized as the
    real CLIP is (:meth:`~..models.clip.ClipModel.set_precision`)."""
    import numpy as np

    from .clip import ClipModel, build_clip

    config = {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 768, "patch_size": 32},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 64, "heads": 2, "layers": 1},
    }
    with _seeded():
        clip = ClipModel(build_clip(config).eval(), None, config, 224)
    clip.set_precision(precision)
    crops = [
        np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8) for i in range(16)
    ]
    return [(lambda: torch.from_numpy(clip.encode_images(crops)), 1.0)]


#: Point batches the grid's decode is timed at (see :func:`measure_point_batch`).
POINT_BATCHES = (8, 16, 32, 64)


def measure_point_batch(
    precision: str, n_threads: int, stop: Callable[[], bool] = lambda: False
) -> dict:
    """Seconds per point of the grid's decode at each of :data:`POINT_BATCHES`, in the
    decoder's chosen precision and threads, on the real shapes: SAM's full-size mask
    decoder on a 64 x 64 embedding, 64 points per batch size, none of whose masks
    passes SAM's IoU filter (most of a grid's points; a passing mask's head costs the
    same in any batch). Best of :data:`REPEATS` after a warm-up."""
    decoder, embedding, points = _full_size_decoder(max(POINT_BATCHES))

    def grid(batch: int) -> None:
        for start in range(0, len(points), batch):
            if stop():
                raise Interrupted
            decoder.decode_points_above(embedding, points[start : start + batch], 1e9, precision)

    best = {}
    with threads(n_threads):
        grid(POINT_BATCHES[-1])  # warm-up: the allocator's pools, a bf16 copy
        for _ in range(REPEATS):
            for batch in POINT_BATCHES:  # rounds over every batch (see _time_stage)
                t0 = time.perf_counter()
                grid(batch)
                seconds = (time.perf_counter() - t0) / len(points)
                best[str(batch)] = min(best.get(str(batch), float("inf")), seconds)
    return best


#: Per stage: ``probe(precision) -> [(run, weight), ...]``; the stage's time is the
#: weighted sum of its parts' times (the encoder's stand for ViT-B's 12 blocks). The
#: weights are random and seeded alike for every precision (the same model each time).
PROBES = {"encoder": _encoder_probe, "decoder": _decoder_probe, "clip": _clip_probe}
#: The encoder probe's token grid (64: SAM's 1,024 px input; smaller only in tests).
ENCODER_GRID = 64


def _time_stage(stage, order, n, table, fidelity, stop) -> None:
    """Time one stage's probe in every precision on ``n`` threads into ``table``, in
    rounds that visit every precision in turn (a burst of load on a shared machine
    then slows one round of all of them, not one precision), the fastest round
    counting; and fp32's output as the reference of ``fidelity``."""
    probes = {}
    for precision in order:
        if stop():
            raise Interrupted
        parts = PROBES[stage](precision)
        outs = torch.cat([run().flatten() for run, _ in parts])  # warm-up (int8: quantizing)
        probes[precision] = (parts, outs)
    best = {p: [float("inf")] * len(parts) for p, (parts, _) in probes.items()}
    for _ in range(REPEATS):
        for precision, (parts, _) in probes.items():
            for i, (run, _) in enumerate(parts):
                if stop():
                    raise Interrupted
                t0 = time.perf_counter()
                run()
                best[precision][i] = min(best[precision][i], time.perf_counter() - t0)
    reference = probes["fp32"][1]
    for precision, (parts, out) in probes.items():
        total = sum(w * t for (_, w), t in zip(parts, best[precision], strict=True))
        table[stage].setdefault(precision, {})[str(n)] = total
        cos = 1.0 if precision == "fp32" else _cosine(out, reference)
        fidelity[stage][precision] = min(cos, fidelity[stage].get(precision, 1.0))


def measure(
    precisions: list[str] | None = None,
    thread_counts: list[int] | None = None,
    stop: Callable[[], bool] = lambda: False,
    stages: tuple[str, ...] = STAGES,
) -> dict:
    """Time every stage's probe in every precision and thread count; returns the entry
    :func:`save_measurement` keeps (``table``, ``fidelity``, ``choice``, ``seconds``,
    ``machine``, ``measured_at``).

    Raises
    ------
    Interrupted
        If ``stop()`` turns true (a run started): nothing is kept.
    """
    start = time.perf_counter()
    precisions = precisions or cpu_precisions()
    thread_counts = thread_counts or thread_options()
    table: dict = {s: {} for s in stages}
    fidelity: dict = {s: {} for s in stages}
    order = ["fp32", *(p for p in precisions if p != "fp32")]
    # The allocator as runs have it (untuned, page faults would decide the ranking).
    with torch.no_grad(), heavy_work_allocator(run=False):
        for stage in stages:
            for n in thread_counts:
                with threads(n):
                    _time_stage(stage, order, n, table, fidelity, stop)
        chosen = choose(table, fidelity)
        batches = None
        if "decoder" in chosen:
            pick = chosen["decoder"]
            batches = measure_point_batch(pick["precision"], pick["threads"], stop)
            pick["point_batch"] = choose_batch(batches)
    info = cpu_info()
    return {
        "table": table,
        "fidelity": fidelity,
        "point_batch": batches,
        "choice": chosen,
        "seconds": round(time.perf_counter() - start, 2),
        "machine": {**info, "torch": torch.__version__, "threads": thread_counts},
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# -- what auto gives, and when measuring happens --------------------------------------------
_LOCK = threading.Lock()
_PENDING = False
_THREAD: threading.Thread | None = None
#: Whether a due measurement may run in a background thread (the command line
#: measures in the foreground after its run instead: :func:`in_foreground`).
_BACKGROUND = True
#: Set when the process exits: a background measurement stops at its next step.
_EXITING = threading.Event()


def enabled() -> bool:
    return os.environ.get("NAPARI_SLIP_AUTOTUNE", "1") != "0"


def guess() -> str:
    """The flag table (what ``auto`` gives before a measurement): bf16 with native bf16."""
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def auto_cpu() -> str:
    """``auto`` on the CPU: the measured :class:`Plan`, or the guess (and a measurement
    is due: it runs when the process is idle; see :func:`measure_when_idle`)."""
    global _PENDING
    entry = load_measurement() if enabled() else None
    if entry is not None:
        return plan_of(entry["choice"])
    if enabled():
        with _LOCK:
            _PENDING = True
        when_idle(measure_when_idle)  # hooked when first due, never at import
    return guess()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision used for ``precision`` on ``device`` (``auto``: see the module)."""
    from ..runtime.perf import resolve_precision as table

    resolved = table(precision, device)
    return auto_cpu() if precision == "auto" and device.type == "cpu" else resolved


def pending() -> bool:
    """Whether ``auto`` ran without a measurement and none has been made since."""
    return _PENDING


def measure_now(stop: Callable[[], bool] = lambda: False) -> dict:
    """Measure and cache now (blocking); returns the entry. A cache folder that
    cannot be written is said before any measuring."""
    global _PENDING
    check_writable()
    entry = measure(stop=stop)
    save_measurement(entry)
    with _LOCK:
        _PENDING = False
    return entry


def measure_when_idle() -> threading.Thread | None:
    """Start the due measurement in a background thread, if one is due and none runs;
    it gives up (and stays due) as soon as a run starts, or the process exits. Returns
    the thread."""
    global _THREAD
    with _LOCK:
        busy = _THREAD is not None and _THREAD.is_alive()
        if not (_PENDING and enabled() and _BACKGROUND) or busy or not writable():
            return None

        def work() -> None:
            seen = runs_started()
            time.sleep(QUIET_S)  # a run that follows at once (the next prompt) comes first
            with contextlib.suppress(Interrupted, OSError, InputError):
                measure_now(stop=lambda: runs_started() != seen or _EXITING.is_set())

        _THREAD = threading.Thread(target=work, name="napari-slip autotune", daemon=True)
        atexit.unregister(_stop_at_exit)  # registered once, with the first thread
        atexit.register(_stop_at_exit)
        _THREAD.start()
        return _THREAD


def in_foreground() -> None:
    """This process measures only when it asks (the command line: ``napari-slip models
    --measure`` calls :func:`measure_now`); no background thread is started."""
    global _BACKGROUND
    _BACKGROUND = False


def _stop_at_exit() -> None:
    """A measurement still running stops at its next step; exit waits a moment for it
    (a thread inside torch while the interpreter shuts down could crash)."""
    _EXITING.set()
    thread = _THREAD
    if thread is not None and thread.is_alive():
        thread.join(timeout=5)


__all__ = [
    "FIDELITY",
    "TIE",
    "cache_file",
    "choose",
    "choose_batch",
    "load_measurement",
    "machine_key",
    "measure",
    "measure_now",
    "measure_point_batch",
    "measure_when_idle",
    "physical_cores",
    "resolve_precision",
    "save_measurement",
    "thread_options",
    "writable",
]
