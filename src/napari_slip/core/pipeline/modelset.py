"""The models one segmenter works with: named, switched, and loaded as an explicit step.

Loading is never a side effect of reading an attribute: :meth:`ModelSet.iter_load`
loads one model and yields a progress event first when it is not loaded yet (the
progress contract of every long step); :meth:`ModelSet.load` drains it, for scripts.
Models come from a :class:`~..models.hub.ModelHub`, so two segmenters share them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

from ..errors import InputError
from ..models.autotune import resolve_precision
from ..models.hub import ModelHub
from ..models.registry import resolve_all, resolve_device
from ..runtime.generators import drain
from ..runtime.progress import Progress
from .session import LRU

#: What :meth:`ModelSet.iter_load` loads.
KINDS = ("sam", "clip", "decoder")


class ModelSet:
    """SAM, CLIP and an optional trained decoder by name or path, on one device.

    Parameters
    ----------
    hub
        Where models are loaded (and shared).
    sam, clip, device, precision
        As for :class:`~.segmenter.Segmenter`.
    decoder
        Path of a trained decoder, or None.
    download_progress
        Called as ``f(bytes_done, bytes_total)`` while weights download.
    """

    def __init__(
        self,
        hub: ModelHub,
        sam: str,
        clip: str,
        device: str = "auto",
        precision: str = "auto",
        decoder: str | os.PathLike | None = None,
        download_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.hub = hub
        self.download_progress = download_progress
        self._decoders = LRU(2)
        self.sam_spec, self.clip_spec = str(sam), str(clip)
        self.device_spec, self.precision_spec = str(device), str(precision)
        self.set(sam, clip, device, precision)
        self.decoder_spec: str | None = None
        self.set_decoder(decoder)

    def set(
        self,
        sam: str | None = None,
        clip: str | None = None,
        device: str | None = None,
        precision: str | None = None,
    ) -> None:
        """Switch models (None keeps one); nothing is loaded here."""
        self.sam_spec = str(sam if sam is not None else self.sam_spec)
        self.clip_spec = str(clip if clip is not None else self.clip_spec)
        self.device_spec = str(device if device is not None else self.device_spec)
        self.precision_spec = str(precision if precision is not None else self.precision_spec)
        self.device = resolve_device(self.device_spec)
        self.precision = resolve_precision(self.precision_spec, self.device)

    def set_decoder(self, decoder: str | os.PathLike | None) -> None:
        """Use a trained decoder's map for relevance (None: CLIP's untrained map)."""
        self.decoder_spec = None if decoder in (None, "") else str(decoder)

    @property
    def models(self) -> tuple[str, str, str, str]:
        """``(sam, clip, device, precision)`` as given."""
        return (self.sam_spec, self.clip_spec, self.device_spec, self.precision_spec)

    @property
    def relevance_is_probability(self) -> bool:
        """Whether relevance maps are a decoder's probabilities, not CLIP's cosines."""
        return self.decoder_spec is not None

    def _decoder_key(self) -> tuple:
        path = os.path.abspath(os.path.expanduser(self.decoder_spec))
        stamp = os.stat(path).st_mtime_ns if os.path.isfile(path) else None
        return (path, stamp, str(self.device))

    def is_loaded(self, kind: str) -> bool:
        """Whether ``kind`` (``sam``, ``clip`` or ``decoder``) needs no loading."""
        if kind == "sam":
            return self.hub.has_sam(self.sam_spec, self.device)
        if kind == "clip":
            return self.hub.has_clip(self.clip_spec, self.device, self.precision)
        if kind == "decoder":
            return self.decoder_spec is None or self._decoder_key() in self._decoders
        raise InputError(f"Models to load are {', '.join(KINDS)}; got {kind!r}.")

    def iter_resolve(self, needs_sam: bool = True) -> Generator[Progress, None, None]:
        """Every model file the run needs here (downloaded if missing) before any model
        work: all that cannot be had are reported together, with URLs and paths."""
        specs = [("sam", self.sam_spec)] if needs_sam and not self.is_loaded("sam") else []
        if not self.is_loaded("clip"):
            specs.append(("clip", self.clip_spec))
        if specs:
            names = ", ".join(f"{k.upper()} {v}" for k, v in specs)
            yield Progress("loading models", 0, 1, f"checking the files of {names}")
            resolve_all(specs, self.download_progress)

    def iter_load(self, kind: str) -> Generator[Progress, None, Any]:
        """Load ``sam``, ``clip`` or ``decoder`` (announced first when not loaded yet);
        return it (the decoder: None when there is none).

        Raises
        ------
        InputError
            If the decoder was trained on another CLIP than the one in use.
        """
        if not self.is_loaded(kind):
            shown = {"sam": self.sam_spec, "clip": self.clip_spec, "decoder": self.decoder_spec}
            label = {"sam": "SAM", "clip": "CLIP", "decoder": "decoder"}[kind]
            yield Progress("loading models", 0, 1, f"{label} {shown[kind]}", heavy=True)
        if kind == "sam":
            return self.hub.sam(self.sam_spec, self.device, self.download_progress)
        if kind == "clip":
            return self.hub.clip(
                self.clip_spec, self.device, self.precision, self.download_progress
            )
        if self.decoder_spec is None:
            return None
        clip = yield from self.iter_load("clip")
        key = self._decoder_key()
        loaded = self._decoders.get_fresh(key)
        if loaded is None:
            from ..models.decoder import load_decoder

            loaded = load_decoder(key[0], self.device)
            self._decoders.put(key, loaded)
        loaded.check_clip(clip.sha256, self.clip_spec)
        loaded.check_fits(clip.clip)
        return loaded

    def load(self, kind: str) -> Any:
        """:meth:`iter_load` drained: the model, loaded now if it was not."""
        return drain(self.iter_load(kind))

    def loaded(self, kind: str) -> Any:
        """The model of ``kind`` if it is loaded; never loads.

        Raises
        ------
        InputError
            If it is not loaded yet (call ``load`` first).
        """
        if not self.is_loaded(kind):
            raise InputError(
                f"The {kind} model is not loaded yet: call load() first (or run a "
                "segmentation, which loads what it needs)."
            )
        return self.load(kind)


class UsesModels:
    """What an object with a :class:`ModelSet` (its ``model_set``) tells and does with
    its models: their names, the loaded ones (never loading), switching them, and
    loading as an explicit step. The :class:`~.segmenter.Segmenter` is one."""

    model_set: ModelSet

    hub = property(lambda self: self.model_set.hub)
    sam_spec = property(lambda self: self.model_set.sam_spec)
    clip_spec = property(lambda self: self.model_set.clip_spec)
    device_spec = property(lambda self: self.model_set.device_spec)
    precision_spec = property(lambda self: self.model_set.precision_spec)
    device = property(lambda self: self.model_set.device)
    precision = property(lambda self: self.model_set.precision)
    decoder_spec = property(lambda self: self.model_set.decoder_spec)
    models = property(lambda self: self.model_set.models, doc="(sam, clip, device, precision)")
    relevance_is_probability = property(lambda self: self.model_set.relevance_is_probability)
    sam = property(lambda self: self.model_set.loaded("sam"))  # loaded ones: never load
    clip = property(lambda self: self.model_set.loaded("clip"))
    decoder = property(lambda self: self.model_set.loaded("decoder"))

    def set_models(self, sam=None, clip=None, device=None, precision=None) -> None:
        """Switch models (None keeps one). Caches stay: they are keyed by model."""
        self.model_set.set(sam, clip, device, precision)

    def set_decoder(self, decoder: str | os.PathLike | None) -> None:
        """Use a trained decoder's map for relevance (None: CLIP's untrained map)."""
        self.model_set.set_decoder(decoder)

    def iter_load(self, kind: str) -> Generator[Progress, None, Any]:
        """Load ``sam``, ``clip`` or ``decoder``, announced first when not loaded yet."""
        return self.model_set.iter_load(kind)

    def load(self, *kinds: str, progress: Callable[[Progress], None] | None = None) -> UsesModels:
        """Load (download) models now, before any image: ``"sam"``, ``"clip"``,
        ``"decoder"`` (default: SAM, CLIP, and the decoder if one is set)."""
        kinds = kinds or ("sam", "clip", *(("decoder",) if self.decoder_spec else ()))
        for kind in kinds:
            drain(self.model_set.iter_load(kind), progress)
        return self


__all__ = ["KINDS", "ModelSet", "UsesModels"]
