"""Where candidate masks come from, behind one small protocol.

A source has a cache :meth:`~ProposalSource.key` and a
:meth:`~ProposalSource.generate` generator that yields progress and returns
:class:`~.proposals.Proposals` for an image session. The :class:`~.segmenter.Segmenter`
caches what a source returns per image and per key, so a new source (relevance
peaks, guided points, tiles) is a new class here, not a new branch in the segmenter.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..params import GuidedParams, SamProposalParams, TileParams
from ..runtime.progress import Progress
from .proposals import Proposals, proposals_from_labels, sam_proposals, upscale_proposals
from .session import ImageSession, digest

if TYPE_CHECKING:
    from .context import RunContext


@runtime_checkable
class ProposalSource(Protocol):
    """What every proposal source provides."""

    #: Short name recorded in provenance (``sam``, ``labels``, ...).
    name: str
    #: Whether :meth:`generate` uses the segmenter's SAM (its identity joins the key).
    needs_sam: bool
    # A source made from the prompt's relevance map also has ``uses_map = True`` (its
    # provenance then names the decoder); without the attribute it uses none.

    def key(self) -> tuple:
        """Identifies the proposals this source makes for a given image."""
        ...

    def describe(self) -> dict:
        """Options for provenance."""
        ...

    def generate(
        self, session: ImageSession, context: RunContext
    ) -> Generator[Progress, None, Proposals]:
        """Yield progress, return the proposals for ``session``'s image."""
        ...


@dataclass(frozen=True)
class SamGridSource:
    """SAM's automatic masks from a point grid (see :func:`.proposals.sam_proposals`)."""

    params: SamProposalParams = field(default_factory=SamProposalParams)
    name: str = "sam"
    needs_sam: bool = True

    def key(self) -> tuple:
        return ("sam", tuple(sorted(self.params.as_dict().items())))

    def describe(self) -> dict:
        return self.params.as_dict()

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        embedding = yield from context.iter_embedding(session, self.params)
        sam = yield from context.iter_load("sam")
        proposals = yield from sam_proposals(
            sam.promptable, embedding, self.params, context.precision
        )
        return upscale_proposals(proposals, session.image.shape)


class LabelSource:
    """Each label of an existing 2D label image is one proposal (no SAM)."""

    name = "labels"
    needs_sam = False

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels)
        self._key = ("labels", digest(self.labels))

    def key(self) -> tuple:
        return self._key

    def describe(self) -> dict:
        return {}

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        return proposals_from_labels(self.labels, session.image.shape)
        yield  # a generator like every source


@dataclass(frozen=True)
class RelevanceSource:
    """The regions of the prompt's relevance map above a level (no SAM; see
    :mod:`.guided`). ``models`` identifies the map (CLIP, precision, decoder)."""

    prompt: str
    params: GuidedParams = field(default_factory=GuidedParams)
    models: tuple = ()
    name: str = "relevance"
    needs_sam: bool = False
    uses_map: bool = True

    def key(self) -> tuple:
        return ("relevance", self.prompt.strip(), self.models, _items(self.params))

    def describe(self) -> dict:
        return {"prompt": self.prompt, **self.params.as_dict()}

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        from .guided import relevance_regions

        unit = yield from context.iter_unit_relevance(session, self.prompt)
        return relevance_regions(unit, self.params)


@dataclass(frozen=True)
class GuidedSource:
    """SAM's masks for points placed by the prompt's relevance map (see :mod:`.guided`).

    The masks of every decoded point are kept with the image, per SAM and decoding
    options, so another prompt decodes only the points it adds.
    """

    prompt: str
    params: GuidedParams = field(default_factory=GuidedParams)
    sam_params: SamProposalParams = field(default_factory=SamProposalParams)
    models: tuple = ()
    name: str = "guided"
    needs_sam: bool = True
    uses_map: bool = True

    def key(self) -> tuple:
        return (
            "guided",
            self.prompt.strip(),
            self.models,
            _items(self.params),
            _items(self.sam_params),
        )

    def describe(self) -> dict:
        return {"prompt": self.prompt, **self.params.as_dict(), **self.sam_params.as_dict()}

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        from .guided import guided_points, point_proposals

        embedding = yield from context.iter_embedding(session, self.sam_params)
        unit = yield from context.iter_unit_relevance(session, self.prompt)
        points = guided_points(unit, self.params)
        h, w = session.image.shape
        sh, sw = embedding.original_size
        points = points * np.array([[sw / w, sh / h]])
        cache = _point_cache(session, context, self.sam_params, None)
        sam = yield from context.iter_load("sam")
        proposals = yield from point_proposals(
            sam.promptable, embedding, points, self.sam_params, context.precision, cache
        )
        return upscale_proposals(proposals, session.image.shape)


@dataclass(frozen=True)
class TiledGuidedSource:
    """Guided points tile by tile, for large images (tiles on).

    CLIP reads the whole image window by window (a lazy image a window at a time); each
    tile's part of the relevance map is made from the windows that overlap it (the map
    of a large image is never held whole) and places the tile's points (peaks and local
    maxima, at most ``params.peaks``, and the safety grid); SAM decodes them on that
    tile at full resolution, and the masks are merged across tile borders as SAM's
    tiles are (see :mod:`.tiles`). A tile whose points are all
    decoded already (another prompt) needs no image encoding at all.
    """

    prompt: str
    params: GuidedParams = field(default_factory=GuidedParams)
    sam_params: SamProposalParams = field(default_factory=SamProposalParams)
    tiles: TileParams = field(default_factory=TileParams)
    models: tuple = ()
    name: str = "guided-tiles"
    needs_sam: bool = True
    uses_map: bool = True

    def key(self) -> tuple:
        from .tiles import tiled_key

        return (
            "guided-tiles",
            self.prompt.strip(),
            self.models,
            _items(self.params),
            *tiled_key(self.sam_params, self.tiles),
        )

    def describe(self) -> dict:
        return {
            "prompt": self.prompt,
            **self.params.as_dict(),
            **self.sam_params.as_dict(),
            **self.tiles.as_dict(),
        }

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        from .guided import cached_proposals, decode_points, guided_points, point_keys
        from .tiles import merge_tiles, one_bar, shift, tile_grid

        sam = yield from context.iter_load("sam")
        shape = session.image.shape
        size = self.tiles.checked_size(sam.promptable.input_size)
        tiles = tile_grid(shape, size, self.tiles.overlap_for(size))
        n, found, decoded = len(tiles), [], 0
        for t, box in enumerate(tiles):
            what = f"tile {t + 1}/{n}"
            y0, x0, y1, x1 = box
            unit = yield from context.iter_unit_relevance(session, self.prompt, region=box)
            keys = point_keys(guided_points(unit, self.params))
            cache = _point_cache(session, context, self.sam_params, box)
            new = 0
            if any(k not in cache for k in keys):
                yield Progress("tiles", t, n, f"{what}: SAM image encoder", heavy=True)
                embedding = yield from one_bar(
                    context.iter_embedding(session, self.sam_params, region=box), t, n, what
                )
                new = yield from one_bar(
                    decode_points(
                        sam.promptable, embedding, keys, self.sam_params, context.precision, cache
                    ),
                    t,
                    n,
                    what,
                )
            props = cached_proposals((y1 - y0, x1 - x0), keys, cache, self.sam_params, new)
            found.append(shift(props, box, shape))
            decoded += new
            yield Progress("tiles", t + 1, n, f"{what}: {len(keys)} points ({new} decoded)")
        yield Progress("tiles", n, n, f"merging masks of {decoded} new points across tiles")
        return merge_tiles(
            found, tiles, shape, self.tiles.merge_iou, nms_thresh=self.sam_params.box_nms_thresh
        )


def _point_cache(session, context, sam_params: SamProposalParams, region) -> dict:
    """The image's (or a tile's) masks per decoded point, for this SAM and decoding."""
    decoding = {k: v for k, v in sam_params.as_dict().items() if k != "points_per_side"}
    if region is not None:
        decoding.pop("max_side")  # tiles are never shrunk
    key = (context.sam_spec, context.precision, tuple(sorted(decoding.items())))
    regions = session.point_masks.get_fresh(key)  # region (None: whole image) -> cache
    if regions is None:
        regions = {}
        session.point_masks.put(key, regions)
    return regions.setdefault(region, {})


def _items(params) -> tuple:
    return tuple(sorted(params.as_dict().items()))


__all__ = [
    "GuidedSource",
    "LabelSource",
    "ProposalSource",
    "RelevanceSource",
    "SamGridSource",
    "TiledGuidedSource",
]
