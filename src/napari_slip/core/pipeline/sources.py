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

from ..errors import InputError
from ..params import GuidedParams, SamProposalParams
from ..runtime.progress import Progress
from .proposals import Proposals, proposals_from_labels, sam_proposals, upscale_proposals
from .session import ImageSession, digest

if TYPE_CHECKING:
    from .segmenter import Segmenter


@runtime_checkable
class ProposalSource(Protocol):
    """What every proposal source provides."""

    #: Short name recorded in provenance (``sam``, ``labels``, ...).
    name: str
    #: Whether :meth:`generate` uses the segmenter's SAM (its identity joins the key).
    needs_sam: bool

    def key(self) -> tuple:
        """Identifies the proposals this source makes for a given image."""
        ...

    def describe(self) -> dict:
        """Options for provenance."""
        ...

    def generate(
        self, session: ImageSession, engine: Segmenter
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

    def generate(self, session, engine) -> Generator[Progress, None, Proposals]:
        embedding = yield from engine.iter_embedding(session, self.params.max_side)
        proposals = yield from sam_proposals(
            engine.sam.promptable, embedding, self.params, engine.precision
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

    def generate(self, session, engine) -> Generator[Progress, None, Proposals]:
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

    def key(self) -> tuple:
        return ("relevance", self.prompt.strip(), self.models, _items(self.params))

    def describe(self) -> dict:
        return {"prompt": self.prompt, **self.params.as_dict()}

    def generate(self, session, engine) -> Generator[Progress, None, Proposals]:
        from .guided import relevance_regions, unit_map

        relevance = yield from engine.iter_relevance(self.prompt)
        unit = unit_map(relevance, engine.relevance_is_probability)
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

    def generate(self, session, engine) -> Generator[Progress, None, Proposals]:
        from .guided import guided_points, point_proposals, unit_map
        from .images import LazyImage

        if isinstance(session.image, LazyImage):
            raise InputError(
                "Guided proposals need the image in memory; for a lazy (dask/zarr) image "
                "use proposals='sam' with tiles."
            )
        embedding = yield from engine.iter_embedding(session, self.sam_params.max_side)
        relevance = yield from engine.iter_relevance(self.prompt)
        points = guided_points(unit_map(relevance, engine.relevance_is_probability), self.params)
        h, w = session.image.shape
        sh, sw = embedding.original_size
        points = points * np.array([[sw / w, sh / h]])
        decoding = {k: v for k, v in self.sam_params.as_dict().items() if k != "points_per_side"}
        cache_key = (engine.sam_spec, engine.precision, tuple(sorted(decoding.items())))
        cache = session.point_masks.get_fresh(cache_key)
        if cache is None:
            cache = {}
            session.point_masks.put(cache_key, cache)
        sam = yield from engine.iter_load("sam")
        proposals = yield from point_proposals(
            sam.promptable, embedding, points, self.sam_params, engine.precision, cache
        )
        return upscale_proposals(proposals, session.image.shape)


def _items(params) -> tuple:
    return tuple(sorted(params.as_dict().items()))


__all__ = ["GuidedSource", "LabelSource", "ProposalSource", "RelevanceSource", "SamGridSource"]
