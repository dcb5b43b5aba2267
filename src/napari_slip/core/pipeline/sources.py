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

from ..params import SamProposalParams
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


__all__ = ["LabelSource", "ProposalSource", "SamGridSource"]
