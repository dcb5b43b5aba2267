"""The stateful segmenter: embed an image once, answer many prompts.

A second prompt on the same image, or a change of mode, threshold or distractors,
reuses the SAM image embedding, the proposals and the crop embeddings, and costs only
a text encoding (itself cached per phrase).
"""

from __future__ import annotations

import datetime
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from .._version import __version__
from .crops import CropParams
from .embedding_cache import embedding_path, load_embedding, save_embedding
from .errors import InputError
from .images import PreparedImage, prepare_image
from .models import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    LoadedClip,
    LoadedSam,
    load_clip_model,
    load_sam_model,
    resolve_device,
)
from .perf import resolve_precision, tune_allocator
from .progress import Progress, drain
from .proposals import (
    Proposals,
    SamProposalParams,
    downscale_for_sam,
    embed_image,
    proposals_from_labels,
    sam_proposals,
    upscale_proposals,
)
from .results import SegmentationResult, paint_labels
from .scoring import DEFAULT_TEMPLATES, check_templates, cosine, embed_phrase, embed_proposals
from .selection import MODES, select


class _LRU(OrderedDict):
    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get_fresh(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.data)
    return h.hexdigest()


class Segmenter:
    """Segment objects from text prompts with SAM proposals and CLIP scoring.

    Models load on first use and stay loaded. Results are cached per image, so a new
    prompt or new selection settings on a seen image cost only a text encoding.
    Not thread-safe: run one call at a time.

    Parameters
    ----------
    sam
        SAM name (``vit_b``, ``vit_l``, ``vit_h``) or path of a SAM-format checkpoint.
        Not loaded at all when proposals come from a label image.
    clip
        ``MODEL:TAG`` of open_clip, or path of a napari-slip CLIP checkpoint.
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    sam_params
        Automatic mask generation options.
    crop_params
        How proposals are cropped for CLIP.
    templates
        Prompt templates, each with one ``{}`` (averaged). Defaults to the checkpoint's
        own template if it recorded one, else ``"a photo of {}."``.
    background
        The phrase that competes with the prompt in ``distractors`` mode ("" for none).
    batch_size
        CLIP crops per batch.
    cache_size
        How many images' embeddings are kept.
    download_progress
        Called as ``f(bytes_done, bytes_total)`` while weights download.
    precision
        ``auto`` (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), or ``fp32``,
        ``bf16``, ``fp16``. With ``fp32`` and ``SamProposalParams.exact()`` the answer
        is SAM's own.
    disk_cache
        Keep SAM image embeddings on disk (cache folder, 1 GB at most), so reopening an
        image skips the image encoder.

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
        templates: Sequence[str] | None = None,
        background: str = "background",
        batch_size: int = 32,
        cache_size: int = 4,
        download_progress: Callable[[int, int], None] | None = None,
        precision: str = "auto",
        disk_cache: bool = True,
    ) -> None:
        self.sam_spec = str(sam)
        self.clip_spec = str(clip)
        self.device_spec = str(device)
        self.precision_spec = str(precision)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.disk_cache = disk_cache
        if self.device.type == "cpu":
            tune_allocator()
        self.sam_params = sam_params or SamProposalParams()
        self.crop_params = crop_params or CropParams()
        self._templates = check_templates(templates) if templates is not None else None
        self.background = background
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1; got {batch_size}.")
        self.batch_size = batch_size
        self.download_progress = download_progress
        self._sam: LoadedSam | None = None
        self._clip: LoadedClip | None = None
        self._image: PreparedImage | None = None
        self._image_key: str | None = None
        self._predictors = _LRU(max(1, cache_size))
        self._proposals = _LRU(max(1, cache_size) * 2)
        self._embeddings = _LRU(max(1, cache_size) * 2)
        self._texts = _LRU(256)
        #: Counts of expensive work done, for diagnostics and benchmarks.
        self.stats: Counter = Counter()

    # --- models --------------------------------------------------------------------

    @property
    def models(self) -> tuple[str, str, str, str]:
        """``(sam, clip, device, precision)`` as given: whether models can be kept."""
        return (self.sam_spec, self.clip_spec, self.device_spec, self.precision_spec)

    @property
    def sam(self) -> LoadedSam:
        """The SAM model, loaded (downloaded) on first access."""
        if self._sam is None:
            self._sam = load_sam_model(self.sam_spec, self.device, self.download_progress)
        return self._sam

    @property
    def clip(self) -> LoadedClip:
        """The CLIP model, loaded (downloaded) on first access."""
        if self._clip is None:
            self._clip = load_clip_model(self.clip_spec, self.device, self.download_progress)
            self._clip.clip.set_precision(self.precision)
        return self._clip

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

    # --- image ---------------------------------------------------------------------

    def set_image(self, image: np.ndarray, **normalisation: Any) -> PreparedImage:
        """Normalise and remember an image (see :func:`prepare_image` for options)."""
        prepared = prepare_image(image, **normalisation)
        self._image = prepared
        self._image_key = _digest(prepared.rgb)
        return prepared

    @property
    def image(self) -> PreparedImage | None:
        return self._image

    # --- the pipeline --------------------------------------------------------------

    def _proposals_key(self, labels: np.ndarray | None) -> tuple:
        if labels is not None:
            return ("labels", _digest(np.asarray(labels)))
        params = tuple(sorted(self.sam_params.as_dict().items()))
        return ("sam", self.sam_spec, self.precision, params)

    def iter_proposals(
        self, labels: np.ndarray | None = None
    ) -> Generator[Progress, None, Proposals]:
        """Proposals for the current image (cached), from SAM or from ``labels``."""
        if self._image is None:
            raise InputError("No image set: call set_image() or pass an image.")
        key = (self._image_key, self._proposals_key(labels))
        cached = self._proposals.get_fresh(key)
        if cached is not None:
            return cached
        if labels is not None:
            proposals = proposals_from_labels(labels, self._image.shape)
        else:
            if self._sam is None:
                yield Progress("loading models", 0, 1, f"SAM {self.sam_spec}")
            sam = self.sam
            max_side = self.sam_params.max_side
            sam_key = f"{self._image_key}-{max_side}"
            predictor = self._predictors.get_fresh(sam_key)
            on_disk = embedding_path(sam.sha256, self.precision, sam_key)
            if predictor is None and self.disk_cache:
                predictor = load_embedding(on_disk, sam.model)
                if predictor is not None:
                    self.stats["sam_embeddings_from_disk"] += 1
                    self._predictors.put(sam_key, predictor)
            if predictor is None:
                yield Progress("embedding", 0, 1, "SAM image encoder")
                rgb = downscale_for_sam(self._image.rgb, max_side)
                predictor = embed_image(sam.model, rgb, self.precision)
                self.stats["sam_image_encodings"] += 1
                self._predictors.put(sam_key, predictor)
                if self.disk_cache:
                    save_embedding(on_disk, predictor)
                yield Progress("embedding", 1, 1, "SAM image encoder")
            proposals = yield from sam_proposals(predictor, self.sam_params, self.precision)
            proposals = upscale_proposals(proposals, self._image.shape)
            self.stats["sam_decoded_points"] += proposals.decoded_points
            self.stats["sam_proposal_runs"] += 1
        self._proposals.put(key, proposals)
        return proposals

    def iter_embeddings(
        self, proposals: Proposals, labels: np.ndarray | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """CLIP embeddings of the proposals' crops (cached)."""
        if self._clip is None:
            yield Progress("loading models", 0, 1, f"CLIP {self.clip_spec}")
        clip = self.clip
        key = (self._image_key, self._proposals_key(labels), self.crop_params, clip.sha256)
        cached = self._embeddings.get_fresh(key)
        if cached is not None:
            return cached
        emb = yield from embed_proposals(
            clip.clip, self._image.rgb, proposals, self.crop_params, self.batch_size
        )
        self.stats["clip_crop_embeddings"] += len(proposals)
        self._embeddings.put(key, emb)
        return emb

    def text_embedding(self, phrase: str) -> np.ndarray:
        """Embedding of one phrase through the templates (cached)."""
        clip = self.clip
        key = (clip.sha256, phrase.strip(), self.templates)
        cached = self._texts.get_fresh(key)
        if cached is None:
            cached = embed_phrase(clip.clip, phrase, self.templates)
            self.stats["text_encodings"] += 1
            self._texts.put(key, cached)
        return cached

    def is_cached(
        self,
        image: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        **normalisation: Any,
    ) -> bool:
        """Whether segmenting ``image`` (default: the current one) needs no image work.

        True when its proposals and crop embeddings are cached, so any prompt, mode,
        threshold or distractors is answered with at most a text encoding.
        """
        if self._clip is None:
            return False
        if image is None:
            if self._image is None:
                return False
            image_key = self._image_key
        else:
            image_key = _digest(prepare_image(image, **normalisation).rgb)
        proposals_key = self._proposals_key(labels)
        proposals = self._proposals.get((image_key, proposals_key))
        if proposals is None:
            return False
        return len(proposals) == 0 or (
            (image_key, proposals_key, self.crop_params, self._clip.sha256) in self._embeddings
        )

    def iter_segment(
        self,
        image: np.ndarray | None,
        prompt: str,
        *,
        mode: str = "best",
        threshold: float | None = None,
        top_k: int = 3,
        distractors: Sequence[str] | str = (),
        labels: np.ndarray | None = None,
        **normalisation: Any,
    ) -> Generator[Progress, None, SegmentationResult]:
        """:meth:`segment` as a generator of :class:`Progress` (for GUIs and cancelling)."""
        if mode not in MODES:
            raise InputError(f"Unknown selection mode {mode!r}; use one of {', '.join(MODES)}.")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
        distractors = _phrases(distractors)
        if image is not None:
            self.set_image(image, **normalisation)
        elif normalisation:
            raise InputError("Normalisation options need the image they apply to.")
        if self._image is None:
            raise InputError("No image given: pass the image to segment.")
        proposals = yield from self.iter_proposals(labels)
        if len(proposals):
            embeddings = yield from self.iter_embeddings(proposals, labels)
        else:
            embeddings = np.zeros((0, 1), dtype=np.float32)
        yield Progress("selection", 0, 1, prompt)
        result = self._select(
            proposals, embeddings, prompt, mode, threshold, top_k, distractors, labels
        )
        yield Progress("selection", 1, 1, result.message)
        return result

    def _select(
        self, proposals, embeddings, prompt, mode, threshold, top_k, distractors, labels
    ) -> SegmentationResult:
        phrases = [prompt, *distractors]
        if mode == "distractors" and self.background.strip():
            phrases.append(self.background)
        if len(proposals):
            texts = np.stack([self.text_embedding(p) for p in phrases])
            sims = cosine(embeddings, texts)
        else:
            sims = np.zeros((0, len(phrases)))
        chosen = select(sims, mode, threshold, top_k, self.clip.clip.logit_scale)
        label_image, table = paint_labels(
            proposals,
            chosen.indices,
            chosen.scores,
            sims[:, 0] if len(sims) else np.zeros(0),
            prompt,
        )
        message = (
            f"{len(table)} object(s) matching {prompt!r}"
            if len(table)
            else f"Nothing found for {prompt!r}: {chosen.reason}"
        )
        return SegmentationResult(
            labels=label_image,
            table=table,
            provenance=self._provenance(
                prompt, mode, threshold, top_k, distractors, labels, len(proposals)
            ),
            message=message,
        )

    def _provenance(self, prompt, mode, threshold, top_k, distractors, labels, n) -> dict:
        from_labels = labels is not None
        return {
            "napari_slip_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "prompt": prompt,
            "selection": {
                "mode": mode,
                "threshold": threshold,
                "top_k": top_k,
                "distractors": list(distractors),
                "background": self.background if mode == "distractors" else None,
            },
            "templates": list(self.templates),
            "proposals": {"source": "labels", "n": n}
            if from_labels
            else {"source": "sam", "n": n, **self.sam_params.as_dict()},
            "crops": {"fill": self.crop_params.fill, "margin": self.crop_params.margin},
            "sam": None if from_labels else self.sam.describe(),
            "clip": self.clip.describe(),
            "normalisation": dict(self._image.normalisation),
            "device": str(self.device),
            "precision": self.precision,
        }

    def segment(
        self,
        image: np.ndarray | None,
        prompt: str,
        *,
        mode: str = "best",
        threshold: float | None = None,
        top_k: int = 3,
        distractors: Sequence[str] | str = (),
        labels: np.ndarray | None = None,
        progress: Callable[[Progress], None] | None = None,
        **normalisation: Any,
    ) -> SegmentationResult:
        """Segment what ``prompt`` describes.

        Parameters
        ----------
        image
            The 2D image (see :func:`~napari_slip.core.images.prepare_image`), or None to
            reuse the last one.
        prompt
            What to segment, e.g. ``"mitotic nucleus"``.
        mode
            ``best``, ``threshold``, ``distractors`` or ``topk`` (see
            :func:`~napari_slip.core.selection.select`).
        threshold
            Score floor; in ``threshold`` mode the cosine cut-off.
        top_k
            Objects kept in ``topk`` mode.
        distractors
            Phrases that compete with the prompt in ``distractors`` mode (a list, or one
            comma-separated string).
        labels
            A 2D label image whose labels are the proposals, instead of SAM's masks.
        progress
            Called with every :class:`Progress` event.
        **normalisation
            ``rgb``, ``channel_axis``, ``channels``, ``contrast_limits``, ``percentiles``.

        Returns
        -------
        SegmentationResult
        """
        return drain(
            self.iter_segment(
                image,
                prompt,
                mode=mode,
                threshold=threshold,
                top_k=top_k,
                distractors=distractors,
                labels=labels,
                **normalisation,
            ),
            progress,
        )


def _phrases(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [p.strip() for p in value if p and p.strip()]


_SEGMENTERS: dict[tuple, Segmenter] = {}


def shared_segmenter(
    sam: str = DEFAULT_SAM, clip: str = DEFAULT_CLIP, device: str = "auto", precision: str = "auto"
) -> Segmenter:
    """The process-wide segmenter for these models (one set of models kept in memory).

    Used by :func:`segment` and the napari console call, so repeated calls reuse loaded
    models and cached embeddings.
    """
    key = (str(sam), str(clip), str(device), str(precision))
    seg = _SEGMENTERS.get(key)
    if seg is None:
        _SEGMENTERS.clear()
        seg = Segmenter(*key[:3], cache_size=64, precision=key[3])
        _SEGMENTERS[key] = seg
    return seg


def segment(
    image: np.ndarray,
    prompt: str,
    *,
    sam: str = DEFAULT_SAM,
    clip: str = DEFAULT_CLIP,
    device: str = "auto",
    sam_params: SamProposalParams | None = None,
    crop_params: CropParams | None = None,
    templates: Sequence[str] | None = None,
    background: str = "background",
    precision: str = "auto",
    **options: Any,
) -> SegmentationResult:
    """One call: segment what ``prompt`` describes in ``image``.

    Keeps the last :class:`Segmenter` (and its loaded models and caches) for the same
    models, so repeated calls in a notebook are fast. Options are those of
    :meth:`Segmenter.segment`.
    """
    seg = shared_segmenter(sam, clip, device, precision)
    seg.sam_params = sam_params or SamProposalParams()
    seg.crop_params = crop_params or CropParams()
    seg.templates = templates
    seg.background = background
    return seg.segment(image, prompt, **options)


__all__ = ["Segmenter", "segment", "shared_segmenter"]
