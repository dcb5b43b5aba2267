"""What one run's settings pick of the engine: its models, its texts, its contexts.

A :class:`RunScope` is made from a :class:`~..config.RunConfig` (or from a segmenter's
own defaults) by :meth:`Segmenter.scope <napari_slip.core.pipeline.segmenter.Segmenter.scope>`;
the run, a re-selection of its result and an edit of it all work through the scope
of the configuration that made the result. Nothing is written onto the segmenter:
its caches (image sessions, text embeddings, loaded models in the hub) are shared,
its defaults stay what its caller gave.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..config import Models, RunConfig
from ..params import CropParams, GuidedParams, SamProposalParams, TileParams
from .context import RelevanceMaps, RunContext, SamEmbeddings, TextEmbeddings
from .modelset import ModelSet
from .session import LRU, ImageSession, open_session


@dataclass(frozen=True)
class RunScope:
    """One run's models, text embeddings (through its templates), the context its
    proposal sources see, and the option groups the engine's steps take."""

    models: ModelSet
    texts: TextEmbeddings
    context: RunContext
    sam_params: SamProposalParams
    tile_params: TileParams
    guided_params: GuidedParams
    crop_params: CropParams


class Workspace:
    """What every run of one segmenter shares: the caches of its images (and which
    one it saw last), text embeddings, the model sets of runs whose models are not
    its defaults, and the counters of expensive work; and the :class:`RunScope` of a
    run made of them.

    Parameters
    ----------
    model_set
        The segmenter's own models (its defaults).
    cache_size
        How many images' caches are kept.
    disk_cache
        Keep SAM image embeddings on disk.
    """

    def __init__(self, model_set: ModelSet, cache_size: int, disk_cache: bool) -> None:
        self.model_set, self.disk_cache = model_set, disk_cache
        #: Counts of expensive work done, for diagnostics and benchmarks.
        self.stats: Counter = Counter()
        #: The segmenter's own text embeddings (its templates); every scope's share
        #: their cache.
        self.texts = TextEmbeddings(model_set, self.stats)
        self.sessions = LRU(max(1, cache_size))
        self.current: ImageSession | None = None
        self._model_sets = LRU(4)

    def open(self, image: Any, normalisation: dict, lazy: bool) -> ImageSession:
        """The cache of ``image`` prepared with ``normalisation`` (``lazy``: a dask or
        zarr array stays lazy), made the current image."""
        self.current = open_session(self.sessions, image, normalisation, lazy)
        return self.current

    def models_for(self, models: Models) -> ModelSet:
        """The model set of a run's ``models``: the segmenter's own when they are its
        defaults, else one kept for them (sharing the hub: loaded models are shared)."""
        own = self.model_set
        spec = (models.sam, models.clip, models.device, models.precision, models.decoder)
        if spec == (*own.models, own.decoder_spec):
            return own
        found = self._model_sets.get_fresh(spec)
        if found is None:
            found = ModelSet(own.hub, *spec, download_progress=own.download_progress)
            self._model_sets.put(spec, found)
        return found

    def scope(self, config: RunConfig | None, own: tuple, window: int | None = None) -> RunScope:
        """The scope of a run of ``config``; None: of the segmenter's own options
        ``own`` (its sam, tile, guided and crop params) with its own models and
        templates. ``window``: the relevance maps' window (None: CLIP's input size)."""
        if config is None:
            models, texts, params = self.model_set, self.texts, own
        else:
            models = self.models_for(config.models)
            texts = TextEmbeddings(models, self.stats, self.texts.cache, config.templates)
            params = (config.sam_params, config.tile_params, config.guided_params)
            params = (*params, config.crop_params)
        maps = RelevanceMaps(models, texts, self.stats, window, params[2].map)
        sam = SamEmbeddings(models, self.disk_cache, self.stats)
        context = RunContext(models, sam, maps, self.sessions)
        return RunScope(models, texts, context, *params)


__all__ = ["RunScope", "Workspace"]
