"""The stateful segmenter: embed an image once, answer many prompts.

Models come from the process-wide :class:`~..models.hub.ModelHub` (through a
:class:`~.modelset.ModelSet`, loaded as an explicit step); per-image work is cached in
:class:`~.session.ImageSession` objects. A second prompt on the same image, a change of
mode, threshold or distractors, or switching models and back reuses the SAM image
embedding, the proposals and the crop embeddings, and costs only a text encoding
(itself cached per phrase).

:meth:`Segmenter.iter_run` is the one place a run is put together (image -> proposals
-> candidates -> relevance -> selection -> result) from a validated
:class:`~..config.RunConfig`; :func:`~.api.segment`, :meth:`Segmenter.segment`, stacks
(:mod:`.stack`), batches, the widget, the console call and the command line all call
it. Its two halves can also be called on their own: candidate collection
(:meth:`Segmenter.iter_candidates`) and selection (:meth:`Segmenter.select`), so new
selection settings need no image work. Proposal sources see a narrow
:class:`~.context.RunContext`, never the segmenter.
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
from ..runtime.generators import drain
from ..runtime.progress import Progress
from .context import RelevanceMaps, RunContext, SamEmbeddings, TextEmbeddings
from .images import LazyImage, PreparedImage, is_lazy, prepare_image
from .modelset import ModelSet
from .proposals import Proposals
from .provenance import provenance
from .results import SegmentationResult, candidates_table, mean_inside, paint_labels
from .scoring import check_templates, cosine, embed_proposals
from .selection import select
from .session import LRU, Candidates, ImageSession, digest
from .sources import (
    GuidedSource,
    LabelSource,
    ProposalSource,
    RelevanceSource,
    SamGridSource,
    TiledGuidedSource,
)
from .tiles import TiledSamSource

#: Keyword options of :meth:`Segmenter.segment` besides the image and the prompt.
SEGMENT_OPTIONS = (
    *SelectionParams.names(),
    *NormalisationParams.names(),
    "labels",
    "source",
    "proposals",
    "relevance",
)


def proposals_of(proposals: str | None, labels: Any = None, source: Any = None) -> str:
    """The proposals a call means: as named, else from its labels, else SAM's grid (or
    a source of the caller's own, which may not need SAM)."""
    if proposals is not None:
        return proposals
    if labels is not None:
        return "labels"
    if source is not None and not getattr(source, "needs_sam", True):
        return "labels"
    return "sam"


class Segmenter:
    """Segment objects from text prompts with SAM proposals and CLIP scoring.

    A run loads the models it needs as a step of its own, with a progress event
    (:meth:`load` does it up front); they come from the shared model hub and stay
    loaded. Results
    are cached per image, so a new prompt or new selection settings on a seen image
    cost only a text encoding. Not thread-safe: run one call at a time.

    Parameters
    ----------
    sam
        SAM name (``vit_b``, ``vit_l``, ``vit_h``; the light ``vit_t`` (MobileSAM) and
        ``efficientvit_l0`` ... ``efficientvit_xl1`` (EfficientViT-SAM); all in
        :data:`~napari_slip.core.models.registry.SAM_MODELS`) or path of a SAM-format
        checkpoint (SAM, MobileSAM or EfficientViT-SAM layout, recognised from its keys).
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
        #: Counts of expensive work done, for diagnostics and benchmarks.
        self.stats: Counter = Counter()
        self._texts = TextEmbeddings(self.model_set, self.stats)
        self.templates = templates
        self.disk_cache = disk_cache
        self.sam_params = sam_params or SamProposalParams()
        self.crop_params = crop_params or CropParams()
        self.tile_params = tile_params or TileParams()
        self.guided_params = guided_params or GuidedParams()
        self.background = background
        self.batch_size = batch_size
        self._sessions = LRU(max(1, cache_size))
        self._session: ImageSession | None = None

    # --- models: named here, loaded as a step of their own ---------------------------

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
    #: The loaded SAM, CLIP, decoder: these never load (see :meth:`load`).
    sam = property(lambda self: self.model_set.loaded("sam"))
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

    def load(self, *kinds: str, progress: Callable[[Progress], None] | None = None) -> Segmenter:
        """Load (download) models now, before any image: ``"sam"``, ``"clip"``,
        ``"decoder"`` (default: SAM, CLIP, and the decoder if one is set)."""
        kinds = kinds or ("sam", "clip", *(("decoder",) if self.decoder_spec else ()))
        for kind in kinds:
            drain(self.model_set.iter_load(kind), progress)
        return self

    @property
    def templates(self) -> tuple[str, ...]:
        """The prompt templates in use (the CLIP's own if none were given: loads it)."""
        return self._texts.templates()

    @templates.setter
    def templates(self, value: Sequence[str] | None) -> None:
        self._texts.given = check_templates(value) if value is not None else None

    def set_sam_params(self, params: SamProposalParams) -> None:
        """Change proposal options; the cached SAM image embeddings stay valid."""
        self.sam_params = params

    def set_crop_params(self, params: CropParams) -> None:
        self.crop_params = params

    def set_tile_params(self, params: TileParams) -> None:
        """Change tiling; cached embeddings stay valid (tiles are cached per tile)."""
        self.tile_params = params

    def context(self) -> RunContext:
        """What proposal sources may use (see :mod:`.context`)."""
        relevance = RelevanceMaps(self.model_set, self._texts, self.stats)
        return RunContext(
            self.model_set, SamEmbeddings(self.model_set, self.disk_cache, self.stats), relevance
        )

    # --- image ---------------------------------------------------------------------

    def set_image(self, image: np.ndarray, **normalisation: Any) -> PreparedImage | LazyImage:
        """Normalise and remember an image (see :func:`prepare_image` for options).

        A :class:`~.images.LazyImage`, or a dask/zarr array while tiling is on or
        ``auto``, is kept lazy: SAM and CLIP read it region by region.
        """
        check_options(normalisation, NormalisationParams.names(), "set_image()")
        if isinstance(image, LazyImage) or (is_lazy(image) and self.tile_params.tiles != "off"):
            prepared = LazyImage(image, **normalisation)
            key = prepared.key
        else:
            prepared = prepare_image(image, **normalisation)
            key = digest(prepared.rgb)
        session = self._sessions.get_fresh(key)
        if session is None:
            session = ImageSession(prepared, key)
            self._sessions.put(key, session)
        else:
            session.image = prepared  # same pixels; keep the latest provenance
        self._session = session
        return prepared

    @property
    def image(self) -> PreparedImage | LazyImage | None:
        return None if self._session is None else self._session.image

    def _current(self) -> ImageSession:
        if self._session is None:
            raise InputError("No image given: pass the image to segment.")
        return self._session

    # --- candidate collection ------------------------------------------------------

    def tiled(self, shape: tuple[int, int] | None = None) -> bool:
        """Whether SAM works tile by tile on an image of ``shape`` (default: current)."""
        mode = self.tile_params.tiles
        if mode != "auto":
            return mode == "on"
        if shape is None:
            shape = self._current().image.shape
        return self.sam_params.max_side is not None and max(shape) > self.sam_params.max_side

    def proposal_source(self, proposals: str, prompt: str | None = None) -> ProposalSource:
        """The source of ``proposals="relevance"`` or ``"guided"`` for ``prompt``."""
        if proposals not in ("relevance", "guided"):
            raise InputError(f"proposal_source() makes relevance or guided; got {proposals!r}.")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
        models = self.context().relevance.key()
        if proposals == "relevance":
            return RelevanceSource(prompt, self.guided_params, models)
        session = self._session
        if session is not None and self.tiled(session.image.shape):
            return TiledGuidedSource(
                prompt, self.guided_params, self.sam_params, self.tile_params, models
            )
        return GuidedSource(prompt, self.guided_params, self.sam_params, models)

    def _source(self, source: ProposalSource | None, labels: np.ndarray | None):
        if source is not None and labels is not None:
            raise InputError("Give either labels or a proposal source, not both.")
        if labels is not None:
            return LabelSource(labels)
        if source is None:
            if self._session is not None and self.tiled(self._session.image.shape):
                return TiledSamSource(self.sam_params, self.tile_params)
            return SamGridSource(self.sam_params)
        if not isinstance(source, ProposalSource):
            raise InputError(f"source must be a proposal source; got {type(source).__name__}.")
        return source

    def _proposals_key(self, source: ProposalSource) -> tuple:
        if source.needs_sam:
            return (source.key(), self.sam_spec, self.precision)
        return source.key()

    def iter_proposals(
        self, source: ProposalSource | None = None, *, labels: np.ndarray | None = None
    ) -> Generator[Progress, None, Proposals]:
        """Proposals for the current image from ``source`` (default SAM's grid), cached."""
        session = self._current()
        source = self._source(source, labels)
        key = self._proposals_key(source)
        cached = session.proposals.get_fresh(key)
        if cached is not None:
            return cached
        proposals = yield from source.generate(session, self.context())
        if source.needs_sam:
            self.stats["sam_decoded_points"] += proposals.decoded_points
            self.stats["sam_proposal_runs"] += 1
        session.proposals.put(key, proposals)
        return proposals

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
        session = self._current()
        source = self._source(source, labels)
        proposals = yield from self.iter_proposals(source)
        clip = yield from self.iter_load("clip")
        embeddings = np.zeros((0, clip.clip.embed_dim), dtype=np.float32)
        if len(proposals):
            key = (self._proposals_key(source), self.crop_params, self.clip_spec, self.precision)
            embeddings = session.crop_embeddings.get_fresh(key)
            if embeddings is None:
                embeddings = yield from embed_proposals(
                    clip.clip, session.image, proposals, self.crop_params, self.batch_size
                )
                self.stats["clip_crop_embeddings"] += len(proposals)
                session.crop_embeddings.put(key, embeddings)
        return Candidates(
            proposals=proposals,
            embeddings=embeddings,
            clip=(self.clip_spec, self.precision),
            source={"source": source.name, "n": len(proposals), **source.describe()},
            normalisation=dict(session.image.normalisation),
            image_key=session.key,
        )

    # --- selection -----------------------------------------------------------------

    def text_embedding(self, phrase: str) -> np.ndarray:
        """Embedding of one phrase through the templates (cached; loads CLIP if needed)."""
        return self._texts.embed(phrase)

    def select(
        self,
        candidates: Candidates,
        prompt: str,
        selection: SelectionParams | None = None,
        *,
        labels_out: Any = None,
        relevance: np.ndarray | None = None,
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
        """
        if selection is None:
            check_options(options, SelectionParams.names(), "select()")
            options.setdefault("background", self.background)
            selection = SelectionParams(**options)
        elif options:
            raise InputError("Give selection options either as SelectionParams or keywords.")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
        if candidates.clip != (self.clip_spec, self.precision):
            raise InputError(
                "These candidates were embedded with another CLIP; collect them again."
            )
        same = [d for d in selection.distractors if d.casefold() == prompt.strip().casefold()]
        if selection.mode == "distractors" and same:
            raise InputError(
                f"The distractor {same[0]!r} is the prompt itself, so nothing could beat "
                "it; remove it from the distractors."
            )
        phrases = [prompt, *selection.distractors]
        if selection.mode == "distractors" and selection.background.strip():
            phrases.append(selection.background)
        proposals = candidates.proposals
        if len(proposals):
            texts = np.stack([self.text_embedding(p) for p in phrases])
            sims = cosine(candidates.embeddings, texts)
        else:
            sims = np.zeros((0, len(phrases)))
        if selection.relevance_weight and len(proposals):
            if relevance is None:
                raise InputError("relevance_weight needs the prompt's relevance map.")
            from .guided import unit_map

            inside = mean_inside(proposals, unit_map(relevance, self.relevance_is_probability))
            sims = sims.copy()
            sims[:, 0] += selection.relevance_weight * inside
        logit_scale = self.model_set.load("clip").clip.logit_scale
        chosen = select(sims, selection.mode, selection.threshold, selection.top_k, logit_scale)
        similarity = sims[:, 0] if len(sims) else np.zeros(0)
        if isinstance(labels_out, (str, os.PathLike)):
            from ..io import create_zarr_labels

            labels_out = create_zarr_labels(labels_out, proposals.shape)
        label_image, table, ids = paint_labels(
            proposals, chosen.indices, chosen.scores, similarity, prompt, out=labels_out
        )
        message = (
            f"{len(table)} object(s) matching {prompt!r}"
            if len(table)
            else f"Nothing found for {prompt!r}: {chosen.reason}"
        )
        shrunk = candidates.source.get("max_side")
        if candidates.source.get("source") == "sam" and shrunk and max(proposals.shape) > shrunk:
            message += (
                f" (SAM saw the image shrunk {max(proposals.shape) / shrunk:.1f}x; "
                "tiles keep small objects)"
            )
        return SegmentationResult(
            labels=label_image,
            table=table,
            provenance=provenance(
                prompt, selection, candidates, self.model_set, self.templates, self.crop_params
            ),
            message=message,
            candidate_table=candidates_table(
                proposals, chosen.all_scores, similarity, ids, prompt
            ),
        )

    def settings(self) -> dict:
        """This segmenter's models and options as keyword options of
        :meth:`RunConfig.build <napari_slip.core.config.RunConfig.build>`."""
        return {
            "sam": self.sam_spec,
            "clip": self.clip_spec,
            "device": self.device_spec,
            "precision": self.precision_spec,
            "decoder": self.decoder_spec,
            "templates": self._texts.given,
            "sam_params": self.sam_params,
            "tile_params": self.tile_params,
            "guided_params": self.guided_params,
            "crop_params": self.crop_params,
        }

    def run_config(self, prompt: str, where: str = "segment()", **options: Any) -> RunConfig:
        """A validated :class:`~..config.RunConfig`: this segmenter's models and options
        with the per-call ``options`` (selection, normalisation, ``proposals``,
        ``relevance``). Loads nothing."""
        options.setdefault("background", self.background)
        return RunConfig.build(prompt, where, **{**self.settings(), **options})

    def configure(self, config: RunConfig) -> None:
        """Take a run's models and options. Caches stay valid: they are keyed by the
        models and options that made them."""
        models = config.models
        self.model_set.set(models.sam, models.clip, models.device, models.precision)
        self.model_set.set_decoder(models.decoder)
        self.sam_params = config.sam_params
        self.tile_params = config.tile_params
        self.guided_params = config.guided_params
        self.crop_params = config.crop_params
        self._texts.given = config.templates

    def iter_segment(
        self, image: np.ndarray | None, prompt: str, **options: Any
    ) -> Generator[Progress, None, SegmentationResult]:
        """:meth:`segment` as a generator of :class:`Progress` (for GUIs and cancelling)."""
        check_options(options, SEGMENT_OPTIONS, "segment()")
        labels, source = options.pop("labels", None), options.pop("source", None)
        options["proposals"] = proposals_of(options.get("proposals"), labels, source)
        config = self.run_config(prompt, **options)  # every check before any model loads
        return (yield from self.iter_run(image, config, labels=labels, source=source))

    def iter_run(
        self,
        image: np.ndarray | None,
        config: RunConfig,
        *,
        labels: np.ndarray | None = None,
        source: ProposalSource | None = None,
        labels_out: Any = None,
    ) -> Generator[Progress, None, SegmentationResult]:
        """One run, as every entry point puts it together: image -> proposals ->
        candidates -> (relevance) -> selection -> result.

        Parameters
        ----------
        image
            The 2D image, or None for the last one.
        config
            The run's settings (validated when it was made).
        labels
            A label image whose objects are the proposals (``proposals="labels"``).
        source
            A proposal source of your own instead of the configured proposals.
        labels_out
            Where to paint the labels instead of memory (see :meth:`select`).

        The result also carries the candidates (``result.candidates``) and the
        relevance map it used, so that new selection settings need no image work.
        """
        self.configure(config)
        prompt, selection = config.prompt, config.selection
        normalisation = config.normalisation.kwargs()
        if config.proposals in ("relevance", "guided"):
            if labels is not None or source is not None:
                raise InputError(
                    f"proposals={config.proposals!r} makes its own candidates: give no "
                    "labels or source."
                )
            if image is not None:  # the source needs to know the image (tiled or not)
                self.set_image(image, **normalisation)
                image, normalisation = None, {}
            source = self.proposal_source(config.proposals, prompt)
        elif config.proposals == "labels" and labels is None and source is None:
            raise InputError("proposals='labels' needs the label image: labels=...")
        candidates = yield from self.iter_candidates(image, source, labels=labels, **normalisation)
        relevance = None
        if config.relevance or selection.relevance_weight:
            relevance = yield from self.iter_relevance(prompt)
        yield Progress("selection", 0, 1, prompt)
        result = self.select(
            candidates, prompt, selection, relevance=relevance, labels_out=labels_out
        )
        yield Progress("selection", 1, 1, result.message)
        result.candidates, result.used_relevance = candidates, relevance
        if config.relevance:
            result.relevance = relevance
        return result

    def iter_relevance(
        self, prompt: str, window: int | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """The current image's relevance map for ``prompt`` (see :mod:`.relevance`):
        with a trained decoder its probabilities (0-1), else CLIP's untrained cosines.

        CLIP's features of the image are computed once per (CLIP, window or decoder)
        and kept with the image: another prompt costs one text encoding and, with a
        decoder, one pass of the decoder. ``window``: the side (8 to 4,096 pixels) of
        the windows CLIP sees (default: its input size, larger for big images).
        """
        session = self._current()
        return (yield from self.context().relevance.iter_map(session, prompt, window))

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
            Selection (:class:`~napari_slip.core.params.SelectionParams`: ``mode``,
            ``threshold``, ``top_k``, ``distractors``, ``background``), normalisation
            (:class:`~napari_slip.core.params.NormalisationParams`: ``rgb``,
            ``channel_axis``, ``channels``, ``contrast_limits``, ``percentiles``),
            ``labels`` (a 2D label image whose labels are the proposals) or ``source``
            (a proposal source). Anything else is refused with the list of options.

        Returns
        -------
        SegmentationResult
        """
        return drain(self.iter_segment(image, prompt, **options), progress)


__all__ = ["SEGMENT_OPTIONS", "Segmenter", "proposals_of"]
