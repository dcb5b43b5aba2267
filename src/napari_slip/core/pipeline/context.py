"""What a proposal source may use: a narrow context, never the segmenter itself.

A source (:mod:`.sources`, :mod:`.tiles`) gets a :class:`RunContext` with

- the models and their precision (:class:`~.modelset.ModelSet`; ``iter_load`` loads),
- SAM image embeddings of an image or of a tile (:class:`SamEmbeddings`: memory, then
  the disk cache, then the encoder),
- the prompt's relevance map on a 0-1 scale, whole or by region (:class:`RelevanceMaps`),
- and text embeddings through the run's templates (:class:`TextEmbeddings`),

each keyed by what made it and cached with the image's session. A new source is a new
class that uses these; it needs no change in the segmenter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..models.promptable import ImageEmbedding
from ..params import SamProposalParams
from ..runtime.perf import stage_precision
from ..runtime.progress import Progress
from .embedding_cache import embedding_path, load_embedding, save_embedding
from .images import LazyImage
from .modelset import ModelSet
from .proposals import downscale_for_sam
from .scoring import DEFAULT_TEMPLATES, embed_phrase
from .session import LRU, ImageSession

#: The largest relevance window a caller may ask for (pixels); CLIP sees each at its
#: input size, so a larger one only costs memory (a window of 100,000 asked for 28 GiB).
MAX_RELEVANCE_WINDOW = 4096


class SamEmbeddings:
    """SAM's image embeddings, from the session's memory, the disk cache, or SAM."""

    def __init__(self, models: ModelSet, disk_cache: bool, stats: Counter) -> None:
        self.models, self.disk_cache, self.stats = models, disk_cache, stats

    def iter_embedding(
        self, session: ImageSession, params: SamProposalParams, region: tuple | None = None
    ) -> Generator[Progress, None, ImageEmbedding]:
        """SAM's embedding of the session's image (memory, then disk, then computed),
        as ``params`` say SAM sees it (``max_side``, ``input_side``).

        With ``region`` ``(y0, x0, y1, x1)``: the embedding of that tile at full
        resolution (never shrunk; kept on disk only, so a tiled run does not fill the
        memory).
        """
        precision = self.models.precision
        # The embedding depends on the encoder's precision only (a plan's other stages
        # may differ): kept, in memory and on disk, under that.
        encoder = stage_precision(precision, "encoder")
        max_side, side = (None if region else params.max_side), params.input_side
        if max_side is not None and max(session.image.shape) <= max_side:
            max_side = None  # not shrunk either way: one embedding, whatever the limit
        key = (self.models.sam_spec, encoder, max_side, side)
        if region is None:
            embedding = session.embeddings.get_fresh(key)
            if embedding is not None:
                return embedding
        sam = yield from self.models.iter_load("sam")
        frame = sam.promptable.frame_side(side)
        if region is None:
            sam.promptable.check_shape(session.image.shape, frame)  # in the user's pixels
            name = f"{session.key}-{max_side}"
        else:
            sam.promptable.check_shape((region[2] - region[0], region[3] - region[1]), frame)
            name = f"{session.key}-tile-{'-'.join(str(int(v)) for v in region)}"
        if frame != sam.promptable.input_size:
            name += f"-side{frame}"
        on_disk = embedding_path(sam.sha256, encoder, name)
        embedding = load_embedding(on_disk, sam.promptable.device) if self.disk_cache else None
        if embedding is not None:
            self.stats["sam_embeddings_from_disk"] += 1
        else:
            yield Progress("embedding", 0, 1, "SAM image encoder", heavy=True)
            if region is None:
                rgb = downscale_for_sam(session.image.rgb, max_side)
            else:
                rgb = session.image.read(*region)
            embedding = sam.promptable.embed(rgb, precision, frame)
            self.stats["sam_image_encodings"] += 1
            if self.disk_cache:
                save_embedding(on_disk, embedding)
            yield Progress("embedding", 1, 1, "SAM image encoder")
        if region is None:
            session.embeddings.put(key, embedding)
        return embedding


class TextEmbeddings:
    """Phrases through the run's templates (the CLIP's own when none are given), cached."""

    def __init__(
        self,
        models: ModelSet,
        stats: Counter,
        cache: LRU | None = None,
        given: tuple[str, ...] | None = None,
    ) -> None:
        self.models, self.stats = models, stats
        self.cache = cache if cache is not None else LRU(256)
        #: The templates given (None: the CLIP's own, else the default).
        self.given = given

    def templates(self) -> tuple[str, ...]:
        """The templates in use: as given, else the one the CLIP recorded, else the
        default. Never loads a model: an unloaded checkpoint's header is read."""
        if self.given is not None:
            return self.given
        if self.models.is_loaded("clip"):
            recorded = self.models.loaded("clip").clip.metadata.get("prompt_template")
        else:
            recorded = _recorded_template(self.models.clip_spec)
        if isinstance(recorded, str) and recorded.count("{}") == 1:
            return (recorded,)
        return DEFAULT_TEMPLATES

    def embed(self, phrase: str, templates: Sequence[str] | None = None) -> np.ndarray:
        """Embedding of one phrase through the templates (loads CLIP if needed)."""
        templates = tuple(templates) if templates is not None else self.templates()
        key = (self.models.clip_spec, self.models.precision, phrase.strip(), templates)
        cached = self.cache.get_fresh(key)
        if cached is None:
            cached = embed_phrase(self.models.load("clip").clip, phrase, templates)
            self.stats["text_encodings"] += 1
            self.cache.put(key, cached)
        return cached


def _recorded_template(spec: str) -> str | None:
    """The template a napari-slip CLIP checkpoint recorded (its header only), if any."""
    from pathlib import Path

    from ..errors import SlipError
    from ..models.clip import read_clip_metadata

    path = Path(spec).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        return read_clip_metadata(path).get("prompt_template")
    except (SlipError, OSError):
        return None


class RelevanceMaps:
    """Relevance maps of a session's image for a prompt (see :mod:`.relevance`)."""

    def __init__(
        self,
        models: ModelSet,
        texts: TextEmbeddings,
        stats: Counter,
        window: int | None = None,
        method: str = "naclip",
    ) -> None:
        self.models, self.texts, self.stats, self.window = models, texts, stats, window
        #: CLIP's training-free map (see :data:`.relevance.MAPS`), without a decoder.
        self.method = method

    def key(self) -> tuple:
        """What identifies the map besides the prompt (CLIP, precision, decoder)."""
        models = self.models
        decoder = models.load("decoder") if models.decoder_spec else None
        return (
            models.clip_spec,
            models.precision,
            None if decoder is None else decoder.sha256,
            None if decoder is not None else self.window,
            None if decoder is not None else self.method,
        )

    def iter_dense(
        self, session: ImageSession, window: int | None = None
    ) -> Generator[Progress, None, object]:
        """CLIP's features of the image for relevance maps, cached with the session."""
        from ..errors import InputError
        from .relevance import iter_decoder_features, iter_dense_features

        window = window or self.window
        if window is not None and not 8 <= int(window) <= MAX_RELEVANCE_WINDOW:
            raise InputError(
                f"The relevance window must be 8 to {MAX_RELEVANCE_WINDOW} pixels; got {window}."
            )
        clip = yield from self.models.iter_load("clip")
        decoder = yield from self.models.iter_load("decoder")
        models = self.models
        if decoder is not None:
            key = (models.clip_spec, models.precision, "decoder", decoder.sha256)
        else:
            key = (models.clip_spec, models.precision, window, self.method)
        dense = session.dense.get_fresh(key)
        if dense is None:
            image = session.image
            source = image if isinstance(image, LazyImage) else image.rgb
            if decoder is not None:
                dense = yield from iter_decoder_features(clip.clip, decoder.model, source)
            else:
                dense = yield from iter_dense_features(
                    clip.clip, source, window, method=self.method
                )
            self.stats["relevance_windows"] += len(dense.windows)
            session.dense.put(key, dense)
        return dense

    def iter_map(
        self, session: ImageSession, prompt: str, window: int | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """The map of ``prompt``: a decoder's probabilities (0-1), else CLIP's cosines."""
        from .relevance import decoder_map, relevance_map

        dense = yield from self.iter_dense(session, window)
        decoder = yield from self.models.iter_load("decoder")
        if decoder is not None:
            return decoder_map(decoder.model, dense, self.texts.embed(prompt))
        return relevance_map(dense, self.texts.embed(prompt))

    def iter_unit(
        self,
        session: ImageSession,
        prompt: str,
        region: tuple[int, int, int, int] | None = None,
    ) -> Generator[Progress, None, np.ndarray]:
        """The map on a 0-1 scale (a decoder's probabilities; CLIP's cosines rescaled
        from the lowest to the highest over the image), of the whole image or of
        ``region`` ``(y0, x0, y1, x1)`` alone: a region's map is made from the CLIP
        windows that overlap it, so a large image's map is never held whole.

        The untrained map of a region is rescaled over the range of every patch's
        cosine (:func:`.relevance.relevance_range`), which bounds the whole map's.
        """
        from .guided import unit_map
        from .relevance import decoder_map, relevance_map, relevance_range

        if region is None:
            relevance = yield from self.iter_map(session, prompt)
            return unit_map(relevance, self.models.relevance_is_probability)
        dense = yield from self.iter_dense(session)
        text = self.texts.embed(prompt)
        decoder = yield from self.models.iter_load("decoder")
        if decoder is not None:
            return unit_map(decoder_map(decoder.model, dense, text, region=region), True)
        low, high = relevance_range(dense, text)
        part = relevance_map(dense, text, region=region)
        if high - low < 1e-6:
            return np.zeros_like(part)
        return np.clip((part - low) / (high - low), 0, 1)


@dataclass(frozen=True)
class RunContext:
    """The narrow interface a proposal source gets (see the module's docstring)."""

    models: ModelSet
    embeddings: SamEmbeddings
    relevance: RelevanceMaps
    #: The segmenter's image caches by content hash (edits find their image here).
    sessions: LRU | None = None

    def session(self, key: str) -> ImageSession | None:
        """The cache of the image with content hash ``key``, if still kept."""
        return None if self.sessions is None else self.sessions.get_fresh(key)

    @property
    def precision(self) -> str:
        return self.models.precision

    @property
    def sam_spec(self) -> str:
        return self.models.sam_spec

    def iter_load(self, kind: str):
        return self.models.iter_load(kind)

    def iter_embedding(self, session: ImageSession, params: SamProposalParams, region=None):
        return self.embeddings.iter_embedding(session, params, region)

    def iter_unit_relevance(self, session: ImageSession, prompt: str, region=None):
        return self.relevance.iter_unit(session, prompt, region)


__all__ = [
    "MAX_RELEVANCE_WINDOW",
    "RelevanceMaps",
    "RunContext",
    "SamEmbeddings",
    "TextEmbeddings",
]
