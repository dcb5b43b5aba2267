"""The stateful segmenter: embed an image once, answer many prompts.

Models come from the process-wide :class:`~..models.hub.ModelHub`; per-image work is
cached in :class:`~.session.ImageSession` objects. A second prompt on the same image,
a change of mode, threshold or distractors, or switching models and back reuses the
SAM image embedding, the proposals and the crop embeddings, and costs only a text
encoding (itself cached per phrase).

A run is two steps that can also be called on their own: candidate collection
(:meth:`Segmenter.iter_candidates`: proposals from a source, CLIP on their crops) and
selection (:meth:`Segmenter.select`), so several candidate sets can feed one
selection.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from ..._version import __version__
from ..config import RunConfig
from ..errors import InputError
from ..models.hub import ModelHub, default_hub
from ..models.promptable import ImageEmbedding
from ..models.registry import LoadedClip, LoadedSam, resolve_device
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
from ..runtime.embedding_cache import embedding_path, load_embedding, save_embedding
from ..runtime.generators import drain
from ..runtime.perf import resolve_precision
from ..runtime.progress import Progress
from .images import LazyImage, PreparedImage, is_lazy, prepare_image
from .proposals import Proposals, downscale_for_sam
from .results import SegmentationResult, candidates_table, mean_inside, paint_labels
from .scoring import DEFAULT_TEMPLATES, check_templates, cosine, embed_phrase, embed_proposals
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

    Models load on first use (through the shared model hub) and stay loaded. Results
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
        self.hub = hub or default_hub()
        self._decoders = LRU(2)
        self.decoder_spec: str | None = None
        self.set_decoder(decoder)
        self.guided_params = guided_params or GuidedParams()
        self.set_models(sam, clip, device, precision)
        self.disk_cache = disk_cache
        self.sam_params = sam_params or SamProposalParams()
        self.crop_params = crop_params or CropParams()
        self.tile_params = tile_params or TileParams()
        self._templates = check_templates(templates) if templates is not None else None
        self.background = background
        #: Window side (pixels) of relevance maps; None: CLIP's input size, larger for
        #: big images (see :func:`.relevance.default_window`).
        self.relevance_window: int | None = None
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1; got {batch_size}.")
        self.batch_size = batch_size
        self.download_progress = download_progress
        self._sessions = LRU(max(1, cache_size))
        self._session: ImageSession | None = None
        self._texts = LRU(256)
        #: Counts of expensive work done, for diagnostics and benchmarks.
        self.stats: Counter = Counter()

    # --- models --------------------------------------------------------------------

    def set_models(
        self,
        sam: str | None = None,
        clip: str | None = None,
        device: str | None = None,
        precision: str | None = None,
    ) -> None:
        """Switch models (None keeps one). Caches stay: they are keyed by model."""
        self.sam_spec = str(sam if sam is not None else self.sam_spec)
        self.clip_spec = str(clip if clip is not None else self.clip_spec)
        self.device_spec = str(device if device is not None else self.device_spec)
        self.precision_spec = str(precision if precision is not None else self.precision_spec)
        self.device = resolve_device(self.device_spec)
        self.precision = resolve_precision(self.precision_spec, self.device)

    @property
    def models(self) -> tuple[str, str, str, str]:
        """``(sam, clip, device, precision)`` as given."""
        return (self.sam_spec, self.clip_spec, self.device_spec, self.precision_spec)

    @property
    def sam(self) -> LoadedSam:
        """The SAM model, loaded (downloaded) on first access."""
        return self.hub.sam(self.sam_spec, self.device, self.download_progress)

    @property
    def clip(self) -> LoadedClip:
        """The CLIP model, loaded (downloaded) on first access."""
        return self.hub.clip(self.clip_spec, self.device, self.precision, self.download_progress)

    def set_decoder(self, decoder: str | os.PathLike | None) -> None:
        """Use a trained decoder's map for relevance (None: CLIP's untrained map).

        Checked on first use: the file must exist and match the CLIP in use.
        """
        self.decoder_spec = None if decoder in (None, "") else str(decoder)

    @property
    def decoder(self):
        """The trained decoder (:class:`~..models.decoder.LoadedDecoder`), or None.

        Raises
        ------
        InputError
            If it was trained on another CLIP than the one in use.
        """
        if self.decoder_spec is None:
            return None
        from ..models.decoder import load_decoder

        path = os.path.abspath(os.path.expanduser(self.decoder_spec))
        stamp = os.stat(path).st_mtime_ns if os.path.isfile(path) else None
        key = (path, stamp, str(self.device))
        loaded = self._decoders.get_fresh(key)
        if loaded is None:
            loaded = load_decoder(path, self.device)
            self._decoders.put(key, loaded)
        clip = self.clip
        loaded.check_clip(clip.sha256, self.clip_spec)
        return loaded

    @property
    def relevance_is_probability(self) -> bool:
        """Whether relevance maps are probabilities (a trained decoder) rather than
        CLIP's untrained cosines."""
        return self.decoder_spec is not None

    def iter_load(self, kind: str) -> Generator[Progress, None, Any]:
        """Load ``sam`` or ``clip`` (announcing it first if it is not loaded yet)."""
        if kind == "sam":
            if not self.hub.has_sam(self.sam_spec, self.device):
                yield Progress("loading models", 0, 1, f"SAM {self.sam_spec}", heavy=True)
            return self.sam
        if not self.hub.has_clip(self.clip_spec, self.device, self.precision):
            yield Progress("loading models", 0, 1, f"CLIP {self.clip_spec}", heavy=True)
        return self.clip

    @property
    def templates(self) -> tuple[str, ...]:
        if self._templates is not None:
            return self._templates
        recorded = self.clip.clip.metadata.get("prompt_template")
        if isinstance(recorded, str) and recorded.count("{}") == 1:
            return (recorded,)
        return DEFAULT_TEMPLATES

    @templates.setter
    def templates(self, value: Sequence[str] | None) -> None:
        self._templates = check_templates(value) if value is not None else None

    def set_sam_params(self, params: SamProposalParams) -> None:
        """Change proposal options; the cached SAM image embeddings stay valid."""
        self.sam_params = params

    def set_crop_params(self, params: CropParams) -> None:
        self.crop_params = params

    def set_tile_params(self, params: TileParams) -> None:
        """Change tiling; cached embeddings stay valid (tiles are cached per tile)."""
        self.tile_params = params

    # --- image ---------------------------------------------------------------------

    def set_image(self, image: np.ndarray, **normalisation: Any) -> PreparedImage | LazyImage:
        """Normalise and remember an image (see :func:`prepare_image` for options).

        A :class:`~.images.LazyImage`, or a dask/zarr array while tiling is on or
        ``auto``, is kept lazy: SAM and CLIP read it region by region.
        """
        check_options(normalisation, NormalisationParams.names(), "set_image()")
        prepared, key = self._prepare(image, normalisation)
        session = self._sessions.get_fresh(key)
        if session is None:
            session = ImageSession(prepared, key)
            self._sessions.put(key, session)
        else:
            session.image = prepared  # same pixels; keep the latest provenance
        self._session = session
        return prepared

    def _prepare(self, image, normalisation: dict) -> tuple[PreparedImage | LazyImage, str]:
        if isinstance(image, LazyImage) or (is_lazy(image) and self.tile_params.tiles != "off"):
            prepared = LazyImage(image, **normalisation)
            return prepared, prepared.key
        prepared = prepare_image(image, **normalisation)
        return prepared, digest(prepared.rgb)

    @property
    def image(self) -> PreparedImage | LazyImage | None:
        return None if self._session is None else self._session.image

    # --- candidate collection ------------------------------------------------------

    def iter_embedding(
        self, session: ImageSession, max_side: int | None, region: tuple | None = None
    ) -> Generator[Progress, None, ImageEmbedding]:
        """SAM's embedding of the session's image (memory, then disk, then computed).

        With ``region`` ``(y0, x0, y1, x1)``: the embedding of that tile at full
        resolution (kept on disk only, so a tiled run does not fill the memory).
        """
        key = (self.sam_spec, self.precision, max_side)
        embedding = None
        if region is None:
            embedding = session.embeddings.get_fresh(key)
            if embedding is not None:
                return embedding
        sam = yield from self.iter_load("sam")
        if region is None:
            sam.promptable.check_shape(session.image.shape)  # in the user's pixels
            name = f"{session.key}-{max_side}"
        else:
            sam.promptable.check_shape((region[2] - region[0], region[3] - region[1]))
            name = f"{session.key}-tile-{'-'.join(str(int(v)) for v in region)}"
        on_disk = embedding_path(sam.sha256, self.precision, name)
        if self.disk_cache:
            embedding = load_embedding(on_disk, sam.promptable.device)
            if embedding is not None:
                self.stats["sam_embeddings_from_disk"] += 1
        if embedding is None:
            yield Progress("embedding", 0, 1, "SAM image encoder", heavy=True)
            if region is None:
                rgb = downscale_for_sam(session.image.rgb, max_side)
            else:
                rgb = session.image.read(*region)
            embedding = sam.promptable.embed(rgb, self.precision)
            self.stats["sam_image_encodings"] += 1
            if self.disk_cache:
                save_embedding(on_disk, embedding)
            yield Progress("embedding", 1, 1, "SAM image encoder")
        if region is None:
            session.embeddings.put(key, embedding)
        return embedding

    def tiled(self, shape: tuple[int, int] | None = None) -> bool:
        """Whether SAM works tile by tile on an image of ``shape`` (default: current)."""
        mode = self.tile_params.tiles
        if mode != "auto":
            return mode == "on"
        if shape is None:
            shape = self._current().image.shape
        return self.sam_params.max_side is not None and max(shape) > self.sam_params.max_side

    def _relevance_models(self) -> tuple:
        decoder = self.decoder
        return (
            self.clip_spec,
            self.precision,
            None if decoder is None else decoder.sha256,
            None if decoder is not None else self.relevance_window,
        )

    def proposal_source(self, proposals: str, prompt: str | None = None) -> ProposalSource:
        """The source of ``proposals="relevance"`` or ``"guided"`` for ``prompt``."""
        if proposals not in ("relevance", "guided"):
            raise InputError(f"proposal_source() makes relevance or guided; got {proposals!r}.")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
        if proposals == "relevance":
            return RelevanceSource(prompt, self.guided_params, self._relevance_models())
        models = self._relevance_models()
        session = self._session
        if session is not None and self.tiled(session.image.shape):
            return TiledGuidedSource(
                prompt, self.guided_params, self.sam_params, self.tile_params, models
            )
        return GuidedSource(prompt, self.guided_params, self.sam_params, models)

    def _source(
        self,
        source: ProposalSource | None,
        labels: np.ndarray | None,
        session: ImageSession | None = None,
    ):
        if source is not None and labels is not None:
            raise InputError("Give either labels or a proposal source, not both.")
        if labels is not None:
            return LabelSource(labels)
        if source is None:
            session = session or self._session
            if session is not None and self.tiled(session.image.shape):
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
        proposals = yield from source.generate(session, self)
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

        Parameters
        ----------
        image
            The 2D image, or None for the last one.
        source
            Where proposals come from (default SAM's automatic masks).
        labels
            Shorthand for ``source=LabelSource(labels)``.
        **normalisation
            Options of :func:`prepare_image`.
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
        if len(proposals):
            key = (self._proposals_key(source), self.crop_params, self.clip_spec, self.precision)
            embeddings = session.crop_embeddings.get_fresh(key)
            if embeddings is None:
                embeddings = yield from embed_proposals(
                    clip.clip, session.image, proposals, self.crop_params, self.batch_size
                )
                self.stats["clip_crop_embeddings"] += len(proposals)
                session.crop_embeddings.put(key, embeddings)
        else:
            embeddings = np.zeros((0, clip.clip.embed_dim), dtype=np.float32)
        return Candidates(
            proposals=proposals,
            embeddings=embeddings,
            clip=(self.clip_spec, self.precision),
            source={"source": source.name, "n": len(proposals), **source.describe()},
            normalisation=dict(session.image.normalisation),
            image_key=session.key,
        )

    def is_cached(
        self,
        image: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        **normalisation: Any,
    ) -> bool:
        """Whether segmenting ``image`` (default: the current one) needs no image work.

        True when its proposals (from SAM with the current options, or from
        ``labels``) and their crop embeddings with the current CLIP are cached.
        Normalises and hashes ``image``: call it off the GUI thread.
        """
        if image is None:
            session = self._session
        else:
            check_options(normalisation, NormalisationParams.names(), "is_cached()")
            session = self._sessions.get(self._prepare(image, normalisation)[1])
        if session is None:
            return False
        key = self._proposals_key(self._source(None, labels, session))
        proposals = session.proposals.get(key)
        if proposals is None:
            return False
        crops_key = (key, self.crop_params, self.clip_spec, self.precision)
        return len(proposals) == 0 or crops_key in session.crop_embeddings

    def _current(self) -> ImageSession:
        if self._session is None:
            raise InputError("No image given: pass the image to segment.")
        return self._session

    # --- selection -----------------------------------------------------------------

    def text_embedding(self, phrase: str) -> np.ndarray:
        """Embedding of one phrase through the templates (cached)."""
        key = (self.clip_spec, self.precision, phrase.strip(), self.templates)
        cached = self._texts.get_fresh(key)
        if cached is None:
            cached = embed_phrase(self.clip.clip, phrase, self.templates)
            self.stats["text_encodings"] += 1
            self._texts.put(key, cached)
        return cached

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
        chosen = select(
            sims, selection.mode, selection.threshold, selection.top_k, self.clip.clip.logit_scale
        )
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
            provenance=self._provenance(prompt, selection, candidates),
            message=message,
            candidate_table=candidates_table(
                proposals, chosen.all_scores, similarity, ids, prompt
            ),
        )

    def _provenance(self, prompt: str, selection: SelectionParams, candidates: Candidates) -> dict:
        name = candidates.source.get("source")
        from_sam = name in ("sam", "sam-tiles", "guided", "guided-tiles")
        uses_map = selection.relevance_weight or name in ("relevance", "guided", "guided-tiles")
        decoder = self.decoder if uses_map else None
        return {
            "napari_slip_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "prompt": prompt,
            "selection": {
                "mode": selection.mode,
                "threshold": selection.threshold,
                "top_k": selection.top_k,
                "distractors": list(selection.distractors),
                "background": selection.background if selection.mode == "distractors" else None,
                "relevance_weight": selection.relevance_weight,
            },
            "templates": list(self.templates),
            "proposals": dict(candidates.source),
            "crops": {"fill": self.crop_params.fill, "margin": self.crop_params.margin},
            "sam": self.sam.describe() if from_sam else None,
            "clip": self.clip.describe(),
            "decoder": None if decoder is None else decoder.describe(),
            "normalisation": dict(candidates.normalisation),
            "device": str(self.device),
            "precision": self.precision,
        }

    # --- both steps ----------------------------------------------------------------

    def settings(self) -> dict:
        """This segmenter's models and options as keyword options of
        :meth:`RunConfig.build <napari_slip.core.config.RunConfig.build>`."""
        return {
            "sam": self.sam_spec,
            "clip": self.clip_spec,
            "device": self.device_spec,
            "precision": self.precision_spec,
            "decoder": self.decoder_spec,
            "templates": self._templates,
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
        self.set_models(models.sam, models.clip, models.device, models.precision)
        self.set_decoder(models.decoder)
        self.sam_params = config.sam_params
        self.tile_params = config.tile_params
        self.guided_params = config.guided_params
        self.crop_params = config.crop_params
        self._templates = config.templates

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
        decoder, one pass of the decoder.
        """
        from .relevance import decoder_map, relevance_map

        dense = yield from self._iter_dense(window)
        decoder = self.decoder
        if decoder is not None:
            return decoder_map(decoder.model, dense, self.text_embedding(prompt))
        return relevance_map(dense, self.text_embedding(prompt))

    def iter_unit_relevance(
        self, prompt: str, region: tuple[int, int, int, int] | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """The relevance map on a 0-1 scale (a decoder's probabilities; CLIP's cosines
        rescaled from the lowest to the highest over the image), of the whole image or
        of ``region`` ``(y0, x0, y1, x1)`` alone: a region's map is made from the CLIP
        windows that overlap it, so a large image's map is never held whole.

        The untrained map of a region is rescaled over the range of every patch's
        cosine (:func:`.relevance.relevance_range`), which bounds the whole map's.
        """
        from .guided import unit_map
        from .relevance import decoder_map, relevance_map, relevance_range

        if region is None:
            relevance = yield from self.iter_relevance(prompt)
            return unit_map(relevance, self.relevance_is_probability)
        dense = yield from self._iter_dense(None)
        text = self.text_embedding(prompt)
        decoder = self.decoder
        if decoder is not None:
            return unit_map(decoder_map(decoder.model, dense, text, region=region), True)
        low, high = relevance_range(dense, text)
        part = relevance_map(dense, text, region=region)
        if high - low < 1e-6:
            return np.zeros_like(part)
        return np.clip((part - low) / (high - low), 0, 1)

    def _iter_dense(self, window: int | None) -> Generator[Progress, None, object]:
        """CLIP's features of the current image for relevance maps, cached with it."""
        from .relevance import iter_decoder_features, iter_dense_features

        session = self._current()
        clip = yield from self.iter_load("clip")
        decoder = self.decoder
        window = window or self.relevance_window
        if decoder is not None:
            key = (self.clip_spec, self.precision, "decoder", decoder.sha256)
        else:
            key = (self.clip_spec, self.precision, window)
        dense = session.dense.get_fresh(key)
        if dense is None:
            image = session.image
            source = image if isinstance(image, LazyImage) else image.rgb
            if decoder is not None:
                dense = yield from iter_decoder_features(clip.clip, decoder.model, source)
            else:
                dense = yield from iter_dense_features(clip.clip, source, window)
            self.stats["relevance_windows"] += len(dense.windows)
            session.dense.put(key, dense)
        return dense

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


_SHARED: dict[str, Segmenter] = {}
_SHARED_LOCK = threading.RLock()


def shared_segmenter(
    sam: str = DEFAULT_SAM, clip: str = DEFAULT_CLIP, device: str = "auto", precision: str = "auto"
) -> Segmenter:
    """The process-wide segmenter, switched to these models (its caches kept).

    Used by :func:`segment` and the napari console call. Hold :data:`shared_lock`
    while using it from several threads.
    """
    with _SHARED_LOCK:
        seg = _SHARED.get("default")
        if seg is None:
            seg = Segmenter(sam, clip, device, cache_size=64, precision=precision)
            _SHARED["default"] = seg
        else:
            seg.set_models(sam, clip, device, precision)
        return seg


#: Serialises calls on the shared segmenter (``segment()`` from several threads).
shared_lock = _SHARED_LOCK


def segment(
    image: np.ndarray,
    prompt: str,
    *,
    sam: str = DEFAULT_SAM,
    clip: str = DEFAULT_CLIP,
    device: str = "auto",
    sam_params: SamProposalParams | None = None,
    crop_params: CropParams | None = None,
    tile_params: TileParams | None = None,
    tiles: str | None = None,
    templates: Sequence[str] | None = None,
    precision: str = "auto",
    decoder: str | os.PathLike | None = None,
    guided_params: GuidedParams | None = None,
    progress: Callable[[Progress], None] | None = None,
    **options: Any,
) -> SegmentationResult:
    """One call: segment what ``prompt`` describes in ``image``.

    ``tiles="on"`` (or ``"auto"``: above ``max_side``) runs SAM tile by tile at full
    resolution, for large images; ``tile_params`` sets the tile size and overlap. A
    dask or zarr image is then read tile by tile, never whole.

    ``proposals="guided"`` decodes SAM only at points the prompt's relevance map
    places (fast), ``proposals="relevance"`` takes the map's regions (no SAM);
    ``decoder`` names a trained decoder whose map that is.

    Keeps one shared :class:`Segmenter` (models in the shared hub, caches per image),
    so repeated calls in a notebook are fast. Options are those of
    :meth:`Segmenter.segment`; unknown ones are refused with the list of known ones.
    Safe to call from several threads (calls run one at a time).
    """
    check_options(options, SEGMENT_OPTIONS, "segment()")
    labels, source = options.pop("labels", None), options.pop("source", None)
    options["proposals"] = proposals_of(options.get("proposals"), labels, source)
    # Every check, the combinations included, before the shared segmenter or a model.
    config = RunConfig.build(
        prompt,
        "segment()",
        sam=sam,
        clip=clip,
        device=device,
        precision=precision,
        decoder=decoder,
        sam_params=sam_params,
        crop_params=crop_params,
        tile_params=tile_params,
        tiles=tiles,
        templates=templates,
        guided_params=guided_params,
        **options,
    )
    with shared_lock:
        seg = shared_segmenter(sam, clip, device, precision)
        run = seg.iter_run(image, config, labels=labels, source=source)
        return drain(run, progress)


__all__ = ["Segmenter", "proposals_of", "segment", "shared_segmenter"]
