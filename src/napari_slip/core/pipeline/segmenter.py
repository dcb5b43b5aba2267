"""The stateful segmenter: embed an image once, answer many prompts.

Models come from the process-wide :class:`~..models.hub.ModelHub` (through a
:class:`~.modelset.ModelSet`, loaded as an explicit step); per-image work is cached in
:class:`~.session.ImageSession` objects. A second prompt on the same image, a change of
mode, threshold or distractors, or switching models and back reuses the SAM image
embedding, the proposals and the crop embeddings, and costs only a text encoding
(itself cached per phrase).

:func:`.run.iter_run` is the one place a run is put together (image -> proposals
-> candidates -> relevance -> selection -> result) from a validated
:class:`~..config.RunConfig`, through the run's :meth:`Segmenter.scope` (its models
and options; the segmenter's own defaults are neither used nor changed);
:func:`~.api.segment`, :meth:`Segmenter.segment`, stacks (:mod:`.stack`), batches, the
widget, the console call and the command line all call it. Its two halves can also be
called on their own: candidate collection (:meth:`Segmenter.iter_candidates`) and
selection (:meth:`Segmenter.select`), so new selection settings need no image work.
Proposal sources see a narrow :class:`~.context.RunContext`, never the segmenter.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import InputError
from ..models.hub import ModelHub, default_hub
from ..params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    CropParams,
    GuidedParams,
    NormalisationParams,
    SamProposalParams,
    SelectionParams,
    TileParams,
    check_options,
)
from ..params_base import check_templates
from ..runtime.generators import drain
from ..runtime.progress import Progress
from .choose import choose
from .collect import is_tiled, iter_candidates, iter_proposals, pick_source, prompt_source
from .dispatch import SEGMENT_OPTIONS, iter_call
from .finish import finished
from .images import LazyImage, PreparedImage
from .modelset import ModelSet, UsesModels
from .proposals import Proposals
from .results import SegmentationResult
from .run import proposals_of
from .scope import RunScope, Workspace
from .session import Candidates, ImageSession
from .sources import ProposalSource


class Segmenter(UsesModels):
    """Segment objects from text prompts with SAM proposals and CLIP scoring.

    A run loads the models it needs as a step of its own, with a progress event
    (:meth:`load` does it up front); they come from the shared model hub and stay
    loaded. Results
    are cached per image, so a new prompt or new selection settings on a seen image
    cost only a text encoding. Not thread-safe: run one call at a time.

    Parameters
    ----------
    sam
        SAM name (``vit_b``, ``vit_l``, ``vit_h``, the light ``vit_t`` and
        ``efficientvit_l0`` ... ``efficientvit_xl1``: see ``napari-slip models``) or path
        of a SAM, MobileSAM or EfficientViT-SAM checkpoint (recognised from its keys).
        Not loaded at all when proposals come from a label image.
    clip
        ``MODEL:TAG`` of open_clip, or path of a napari-slip CLIP checkpoint.
    device
        One of :data:`~napari_slip.core.params.DEVICES`.
    sam_params
        Automatic mask generation options.
    crop_params
        How proposals are cropped for CLIP.
    tile_params
        Whether and how SAM works tile by tile on large images (default: off, images
        longer than ``sam_params.max_side`` are shrunk for SAM).
    templates
        Prompt templates, each with one ``{}`` (averaged). Defaults to the checkpoint's
        own template if it recorded one, else ``"a photo of {}."``.
    background
        The phrase that competes with the prompt in ``distractors`` mode ("" for none).
    batch_size
        CLIP crops per batch.
    cache_size
        How many images' caches are kept.
    download_progress
        Called as ``f(bytes_done, bytes_total)`` while weights download.
    precision
        ``auto`` (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), or ``fp32``,
        ``bf16``, ``fp16``. With ``fp32`` and ``SamProposalParams.exact()`` the answer
        is SAM's own.
    disk_cache
        Keep SAM image embeddings on disk (cache folder, 1 GB at most), so reopening an
        image skips the image encoder.
    hub
        Where models are loaded; default the process-wide hub.
    decoder
        Path of a trained text-conditioned decoder (``napari-slip train-decoder``): its
        map replaces CLIP's untrained relevance map. Must match ``clip``.
    guided_params
        Options of ``proposals="relevance"`` and ``"guided"``.

    Examples
    --------
    >>> seg = Segmenter(sam="vit_b", clip="ViT-B-32:laion2b_s34b_b79k")  # doctest: +SKIP
    >>> result = seg.segment(image, "nucleus", mode="threshold", threshold=0.24)  # doctest: +SKIP
    >>> result.labels, result.table  # doctest: +SKIP
    """

    def __init__(
        self,
        sam: str = DEFAULT_SAM,
        clip: str = DEFAULT_CLIP,
        device: str = "auto",
        *,
        sam_params: SamProposalParams | None = None,
        crop_params: CropParams | None = None,
        tile_params: TileParams | None = None,
        templates: Sequence[str] | None = None,
        background: str = SelectionParams.default("background"),
        batch_size: int = 32,
        cache_size: int = 4,
        download_progress: Callable[[int, int], None] | None = None,
        precision: str = "auto",
        disk_cache: bool = True,
        hub: ModelHub | None = None,
        decoder: str | os.PathLike | None = None,
        guided_params: GuidedParams | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1; got {batch_size}.")
        hub = hub or default_hub()
        self.model_set = ModelSet(hub, sam, clip, device, precision, decoder, download_progress)
        #: What its runs share: image caches, text embeddings, model sets, counters.
        self.workspace = Workspace(self.model_set, cache_size, disk_cache)
        #: Counts of expensive work done, for diagnostics and benchmarks.
        self.stats: Counter = self.workspace.stats
        #: The prompt's text embeddings, cached (and the templates they are made with).
        self.texts = self.workspace.texts
        self.templates = templates
        self.sam_params = sam_params or SamProposalParams()
        self.crop_params = crop_params or CropParams()
        self.tile_params = tile_params or TileParams()
        self.guided_params = guided_params or GuidedParams()
        self.background = background
        self.batch_size = batch_size
        #: Side (8-4096 px) of the windows CLIP sees for relevance maps; None: its input
        #: size, larger for big images. ``relevance(window=...)`` overrides it per call.
        self.relevance_window: int | None = None

    @property
    def templates(self) -> tuple[str, ...]:
        """The prompt templates in use (the CLIP's own if none were given: loads it)."""
        return self.texts.templates()

    @templates.setter
    def templates(self, value: Sequence[str] | None) -> None:
        self.texts.given = check_templates(value) if value is not None else None

    def set_tile_params(self, params: TileParams) -> None:
        """Change tiling; cached embeddings stay valid (tiles are cached per tile)."""
        self.tile_params = params

    def defaults(self) -> dict:
        """This segmenter's models and options (as given to it, or by
        :meth:`set_models`, :meth:`set_tile_params`, ...) as keyword options of
        :meth:`RunConfig.build <napari_slip.core.config.RunConfig.build>`: what its
        own calls (:meth:`segment`, :meth:`select`, ...) start from."""
        return {
            "sam": self.sam_spec,
            "clip": self.clip_spec,
            "device": self.device_spec,
            "precision": self.precision_spec,
            "decoder": self.decoder_spec,
            "templates": self.texts.given,
            "sam_params": self.sam_params,
            "tile_params": self.tile_params,
            "guided_params": self.guided_params,
            "crop_params": self.crop_params,
        }

    def scope(self, config: RunConfig | None = None) -> RunScope:
        """The engine parts a run of ``config`` uses (its models, its templates' text
        embeddings, its sources' context) beside this segmenter's caches; default:
        this segmenter's own settings. Nothing is written onto the segmenter."""
        own = (self.sam_params, self.tile_params, self.guided_params, self.crop_params)
        return self.workspace.scope(config, own, self.relevance_window)

    # --- image ---------------------------------------------------------------------

    def set_image(self, image: np.ndarray, **normalisation: Any) -> PreparedImage | LazyImage:
        """Normalise and remember an image (see :func:`prepare_image` for options).

        A :class:`~.images.LazyImage`, or a dask/zarr array while tiling is on or
        ``auto``, is kept lazy: SAM and CLIP read it region by region.
        """
        check_options(normalisation, NormalisationParams.names(), "set_image()")
        lazy = self.tile_params.tiles != "off"
        return self.workspace.open(image, normalisation, lazy).image

    @property
    def image(self) -> PreparedImage | LazyImage | None:
        current = self.workspace.current
        return None if current is None else current.image

    def current_session(self) -> ImageSession:
        """The cache of the last image (:meth:`set_image`, or a run's)."""
        if self.workspace.current is None:
            raise InputError("No image given: pass the image to segment.")
        return self.workspace.current

    # --- candidate collection ------------------------------------------------------

    def tiled(self, shape: tuple[int, int] | None = None) -> bool:
        """Whether SAM works tile by tile on an image of ``shape`` (default: current)."""
        shape = self.current_session().image.shape if shape is None else shape
        return is_tiled(self.tile_params, self.sam_params, shape)

    def proposal_source(self, proposals: str, prompt: str | None = None) -> ProposalSource:
        """The source of ``proposals="relevance"`` or ``"guided"`` for ``prompt``."""
        scope = self.scope()
        return prompt_source(
            proposals,
            prompt,
            self.workspace.current,
            scope.context,
            scope.guided_params,
            scope.sam_params,
            scope.tile_params,
        )

    def iter_proposals(
        self, source: ProposalSource | None = None, *, labels: np.ndarray | None = None
    ) -> Generator[Progress, None, Proposals]:
        """Proposals for the current image from ``source`` (default SAM's grid), cached."""
        session, scope = self.current_session(), self.scope()
        source = pick_source(source, labels, session, scope.sam_params, scope.tile_params)
        return (yield from iter_proposals(session, source, scope.context, self.stats))

    def iter_candidates(
        self,
        image: np.ndarray | None = None,
        source: ProposalSource | None = None,
        *,
        labels: np.ndarray | None = None,
        **normalisation: Any,
    ) -> Generator[Progress, None, Candidates]:
        """Candidate objects of an image: proposals and their CLIP crop embeddings.

        ``image`` None: the last one; ``source``: where proposals come from (default
        SAM's automatic masks); ``labels``: shorthand for ``source=LabelSource(labels)``;
        ``normalisation``: options of :func:`prepare_image`.
        """
        check_options(normalisation, NormalisationParams.names(), "iter_candidates()")
        if image is not None:
            self.set_image(image, **normalisation)
        elif normalisation:
            raise InputError("Normalisation options need the image they apply to.")
        session, scope = self.current_session(), self.scope()
        source = pick_source(source, labels, session, scope.sam_params, scope.tile_params)
        return (
            yield from iter_candidates(
                session, source, scope.context, scope.crop_params, self.batch_size, self.stats
            )
        )

    def text_embedding(self, phrase: str) -> np.ndarray:
        """Embedding of one phrase through the templates (cached; loads CLIP if needed)."""
        return self.texts.embed(phrase)

    def select(
        self,
        candidates: Candidates,
        prompt: str,
        selection: SelectionParams | None = None,
        *,
        labels_out: Any = None,
        relevance: np.ndarray | None = None,
        config: RunConfig | None = None,
        **options: Any,
    ) -> SegmentationResult:
        """Choose among ``candidates`` for ``prompt``: a text encoding at most.

        Parameters
        ----------
        candidates
            From :meth:`iter_candidates` (with this segmenter's CLIP).
        prompt
            What to segment.
        selection
            Selection options; or give them as keywords (``mode``, ``threshold``, ...).
        labels_out
            Where to paint the labels instead of memory: a ``.zarr`` path (created) or
            an array of zeros with the image's shape. For images too large to hold.
        relevance
            The prompt's relevance map (:meth:`relevance`): with
            ``relevance_weight`` above 0, each candidate's similarity to the prompt
            gains ``relevance_weight`` x its mean relevance (0-1) inside its mask.
        config
            The run that made ``candidates`` (``result.config``): its models, templates
            and crops score them (default: this segmenter's own).
        """
        if selection is None:
            check_options(options, SelectionParams.names(), "select()")
            options.setdefault("background", self.background)
            selection = SelectionParams(**options)
        elif options:
            raise InputError("Give selection options either as SelectionParams or keywords.")
        scope = self.scope(config)
        result = choose(
            candidates,
            prompt,
            selection,
            scope.models,
            scope.texts,
            scope.crop_params,
            relevance=relevance,
            labels_out=labels_out,
        )
        result.candidates = candidates
        return finished(result, None if config is None else config.with_selection(selection))

    def run_config(self, prompt: str, where: str = "segment()", **options: Any) -> RunConfig:
        """A validated :class:`~..config.RunConfig`: this segmenter's models and options
        with the per-call ``options`` (selection, normalisation, ``proposals``,
        ``relevance``). Loads nothing."""
        options.setdefault("background", self.background)
        return RunConfig.build(prompt, where, **{**self.defaults(), **options})

    def iter_segment(
        self, image: np.ndarray | None, prompt: str, **options: Any
    ) -> Generator[Progress, None, SegmentationResult]:
        """:meth:`segment` as a generator of :class:`Progress` (for GUIs and cancelling)."""
        return (yield from iter_call(self, image, prompt, options))  # a plane or a stack

    def iter_relevance(
        self, prompt: str, window: int | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """The current image's relevance map for ``prompt`` (see :mod:`.relevance`): a
        decoder's probabilities (0-1), else CLIP's untrained cosines. CLIP's features are
        kept with the image, so another prompt costs a text encoding. ``window``: the
        side (8 to 4,096 px) of the windows CLIP sees (default: its input size or more).
        """
        session = self.current_session()
        return (yield from self.scope().context.relevance.iter_map(session, prompt, window))

    def relevance(
        self, prompt: str, image: np.ndarray | None = None, window: int | None = None
    ) -> np.ndarray:
        """(H, W) float32 relevance map of ``prompt`` (cosine similarity of each pixel's
        CLIP patch to the prompt; see :mod:`.relevance`). ``image`` None: the last one."""
        if image is not None:
            self.set_image(image)
        return drain(self.iter_relevance(prompt, window))

    def segment(
        self,
        image: np.ndarray | None,
        prompt: str,
        *,
        progress: Callable[[Progress], None] | None = None,
        **options: Any,
    ) -> SegmentationResult:
        """Segment what ``prompt`` describes.

        Parameters
        ----------
        image
            The 2D image (see :func:`~napari_slip.core.pipeline.images.prepare_image`),
            or None to reuse the last one.
        prompt
            What to segment, e.g. ``"mitotic nucleus"``.
        progress
            Called with every :class:`Progress` event.
        **options
            Any option of a run (:data:`~..config.OPTIONS`, the same list
            :func:`~.api.segment` and :func:`napari_slip.batch` take): selection
            (:class:`~..params.SelectionParams`: ``mode``, ``threshold``, ``top_k``,
            ``distractors``, ``background``, ``relevance_weight``), normalisation
            (:class:`~..params.NormalisationParams`), ``proposals``
            (:data:`~..params.PROPOSALS`), ``relevance`` (also return the map), and
            for this call only the models and option groups this segmenter holds
            (``precision="fp32"``, ``sam_params=...``: its own are the defaults and
            stay); and the image's: ``labels`` (a label image whose labels are the
            proposals), ``source`` (a proposal source), for a stack ``axes``
            (``"ZYX"``...), ``pixel_size`` and ``link`` (see :func:`~.api.segment`).
            Anything else, or a bad combination, is refused in one line before any
            model loads. Returns a :class:`SegmentationResult` (a
            :class:`~.stack.StackResult` for a stack).
        """
        return drain(self.iter_segment(image, prompt, **options), progress)


__all__ = ["SEGMENT_OPTIONS", "Segmenter", "proposals_of"]
