"""The model hub: each (model, device, precision) is loaded once per process.

The widget, the console call, :func:`napari_slip.segment`, evaluation and
fine-tuning all ask the hub, so opening a second widget, calling ``segment()`` from
the console or switching "Exact SAM in fp32" on and off never loads the same weights
twice. SAM is loaded per (file, device): its precision is a property of each run
(autocast), not of the weights. CLIP is loaded per (file, device, precision) because
inference casts its weights once. Each kind keeps its ``keep`` most recently used
models; older ones are released.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from ..runtime.perf import stage_precision
from .registry import LoadedClip, LoadedSam, load_clip_model, load_sam_model, resolve_device

DownloadProgress = Callable[[int, int], None]


class ModelHub:
    """Loaded models shared by everything in a process; safe to use from threads.

    Parameters
    ----------
    keep
        How many SAM and how many CLIP models stay loaded (least recently used go).
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = max(1, int(keep))
        self._lock = threading.RLock()
        self._sam: OrderedDict[tuple, LoadedSam] = OrderedDict()
        self._clip: OrderedDict[tuple, LoadedClip] = OrderedDict()
        #: How many times weights were read from disk, per kind (for tests and logs).
        self.loads = {"sam": 0, "clip": 0}

    @staticmethod
    def _key(spec: str, device: torch.device | str, *rest: str) -> tuple:
        return (str(spec), str(resolve_device(device)), *rest)

    @classmethod
    def _clip_key(cls, spec: str, device, precision: str) -> tuple:
        """CLIP's key: its own stage's precision and threads (a per-stage plan shares
        the CLIP of any plan that runs CLIP the same way)."""
        threads = getattr(precision, "threads", {}).get("clip")
        return cls._key(spec, device, stage_precision(precision, "clip"), threads)

    def _get(self, table: OrderedDict, key: tuple, load: Callable):
        with self._lock:
            if key in table:
                table.move_to_end(key)
                return table[key]
            model = load()
            table[key] = model
            while len(table) > self.keep:
                table.popitem(last=False)
            return model

    def sam(
        self,
        spec: str,
        device: torch.device | str = "cpu",
        progress: DownloadProgress | None = None,
    ) -> LoadedSam:
        """SAM by name or path on ``device``, loaded (downloaded) on first request."""
        key = self._key(spec, device)

        def load() -> LoadedSam:
            self.loads["sam"] += 1
            return load_sam_model(spec, resolve_device(device), progress)

        return self._get(self._sam, key, load)

    def clip(
        self,
        spec: str,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        progress: DownloadProgress | None = None,
    ) -> LoadedClip:
        """CLIP by ``MODEL:TAG`` or path, its weights cast to ``precision`` for inference."""
        key = self._clip_key(spec, device, precision)

        def load() -> LoadedClip:
            self.loads["clip"] += 1
            loaded = load_clip_model(spec, resolve_device(device), progress)
            loaded.clip.set_precision(precision)
            return loaded

        return self._get(self._clip, key, load)

    def has_sam(self, spec: str, device: torch.device | str = "cpu") -> bool:
        with self._lock:
            return self._key(spec, device) in self._sam

    def has_clip(self, spec: str, device: torch.device | str = "cpu", precision="fp32") -> bool:
        with self._lock:
            return self._clip_key(spec, device, precision) in self._clip

    def clear(self) -> None:
        """Release every model."""
        with self._lock:
            self._sam.clear()
            self._clip.clear()


_DEFAULT = ModelHub()


def default_hub() -> ModelHub:
    """The process-wide hub."""
    return _DEFAULT


__all__ = ["ModelHub", "default_hub"]
