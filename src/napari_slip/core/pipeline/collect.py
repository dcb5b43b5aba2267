"""Candidate collection: which source proposes, its proposals, and their CLIP crops.

Plain functions over a session and a :class:`~.context.RunContext`, each cached in the
image's session by what made it (source, SAM and precision; crops and CLIP), so a new
prompt or new selection settings on a seen image cost no image work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..params import CropParams, GuidedParams, SamProposalParams, TileParams
from ..proposal_kinds import PROPOSAL_KINDS, kinds_where, proposal_kind
from ..runtime.progress import Progress
from .context import RunContext
from .proposals import Proposals
from .scoring import embed_proposals
from .session import Candidates, ImageSession
from .sources import (
    GuidedSource,
    LabelSource,
    ProposalSource,
    RelevanceSource,
    SamGridSource,
    TiledGuidedSource,
)
from .tiles import TiledSamSource


def is_tiled(tiles: TileParams, sam_params: SamProposalParams, shape: tuple[int, int]) -> bool:
    """Whether SAM works tile by tile on an image of ``shape``."""
    if tiles.tiles != "auto":
        return tiles.tiles == "on"
    return sam_params.max_side is not None and max(shape) > sam_params.max_side


@dataclass(frozen=True)
class SourceArgs:
    """What a named kind's factory may use to make its source."""

    prompt: str | None
    labels: np.ndarray | None
    tiled: bool
    context: RunContext | None
    guided: GuidedParams
    sam_params: SamProposalParams
    tiles: TileParams


def _sam(a: SourceArgs) -> ProposalSource:
    return TiledSamSource(a.sam_params, a.tiles) if a.tiled else SamGridSource(a.sam_params)


def _labels(a: SourceArgs) -> ProposalSource:
    if a.labels is None:
        raise InputError("proposals='labels' needs the label image: labels=...")
    return LabelSource(a.labels)


def _relevance(a: SourceArgs) -> ProposalSource:
    return RelevanceSource(a.prompt, a.guided, a.context.relevance.key())


def _guided(a: SourceArgs) -> ProposalSource:
    models = a.context.relevance.key()
    if a.tiled:
        return TiledGuidedSource(a.prompt, a.guided, a.sam_params, a.tiles, models)
    return GuidedSource(a.prompt, a.guided, a.sam_params, models)


#: The source of each named kind of proposals (:mod:`~..proposal_kinds`): name -> factory.
SOURCES: dict[str, Callable[[SourceArgs], ProposalSource]] = {
    "sam": _sam,
    "labels": _labels,
    "relevance": _relevance,
    "guided": _guided,
}


def uses(source: ProposalSource) -> dict:
    """Which models a source's proposals come from (for provenance)."""
    return {
        "needs_sam": bool(source.needs_sam),
        "uses_map": bool(getattr(source, "uses_map", False)),
    }


def make_source(
    kind: str,
    session: ImageSession | None,
    sam_params: SamProposalParams,
    tiles: TileParams,
    *,
    prompt: str | None = None,
    labels: np.ndarray | None = None,
    context: RunContext | None = None,
    guided: GuidedParams | None = None,
) -> ProposalSource:
    """The source of the named kind ``kind`` (one of
    :data:`~..proposal_kinds.PROPOSALS`) for the session's image."""
    found = proposal_kind(kind)
    if found is None:
        shown = ", ".join(PROPOSAL_KINDS)
        raise InputError(f"proposals must be one of {shown}; got {kind!r}.")
    if found.from_prompt and (not isinstance(prompt, str) or not prompt.strip()):
        raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
    tiled = session is not None and is_tiled(tiles, sam_params, session.image.shape)
    args = SourceArgs(prompt, labels, tiled, context, guided or GuidedParams(), sam_params, tiles)
    return SOURCES[kind](args)


def prompt_source(
    kind: str,
    prompt: str,
    session: ImageSession | None,
    context: RunContext,
    guided: GuidedParams,
    sam_params: SamProposalParams,
    tiles: TileParams,
) -> ProposalSource:
    """The source of a kind made from the prompt (``relevance``, ``guided``)."""
    if kind not in kinds_where(from_prompt=True):
        made = ", ".join(kinds_where(from_prompt=True))
        raise InputError(f"proposal_source() makes {made}; got {kind!r}.")
    return make_source(
        kind, session, sam_params, tiles, prompt=prompt, context=context, guided=guided
    )


def pick_source(
    source: ProposalSource | None,
    labels: np.ndarray | None,
    session: ImageSession | None,
    sam_params: SamProposalParams,
    tiles: TileParams,
) -> ProposalSource:
    """The source a call means: its own, its labels', or SAM's grid."""
    if source is not None and labels is not None:
        raise InputError("Give either labels or a proposal source, not both.")
    if source is None:
        kind = "sam" if labels is None else "labels"
        return make_source(kind, session, sam_params, tiles, labels=labels)
    if not isinstance(source, ProposalSource):
        raise InputError(f"source must be a proposal source; got {type(source).__name__}.")
    return source


def proposals_key(source: ProposalSource, context: RunContext) -> tuple:
    """What identifies a source's proposals (with the SAM and precision that made them)."""
    if source.needs_sam:
        return (source.key(), context.sam_spec, context.precision)
    return source.key()


def iter_proposals(
    session: ImageSession, source: ProposalSource, context: RunContext, stats: Counter
) -> Generator[Progress, None, Proposals]:
    """The source's proposals for the session's image, cached with it."""
    key = proposals_key(source, context)
    cached = session.proposals.get_fresh(key)
    if cached is not None:
        return cached
    proposals = yield from source.generate(session, context)
    if source.needs_sam:
        stats["sam_decoded_points"] += proposals.decoded_points
        stats["sam_proposal_runs"] += 1
        sam = yield from context.iter_load("sam")  # loaded: it just decoded them
        proposals = replace(proposals, sam=sam.describe())
    session.proposals.put(key, proposals)
    return proposals


def iter_candidates(
    session: ImageSession,
    source: ProposalSource,
    context: RunContext,
    crop_params: CropParams,
    batch_size: int,
    stats: Counter,
) -> Generator[Progress, None, Candidates]:
    """Proposals and their CLIP crop embeddings, each cached with the session."""
    proposals = yield from iter_proposals(session, source, context, stats)
    clip = yield from context.iter_load("clip")
    models = context.models
    embeddings = np.zeros((0, clip.clip.embed_dim), dtype=np.float32)
    if len(proposals):
        key = (proposals_key(source, context), crop_params, models.clip_spec, models.precision)
        embeddings = session.crop_embeddings.get_fresh(key)
        if embeddings is None:
            embeddings = yield from embed_proposals(
                clip.clip, session.image, proposals, crop_params, batch_size
            )
            stats["clip_crop_embeddings"] += len(proposals)
            session.crop_embeddings.put(key, embeddings)
    return Candidates(
        proposals=proposals,
        embeddings=embeddings,
        clip=(models.clip_spec, models.precision),
        source={"source": source.name, "n": len(proposals), **source.describe(), **uses(source)},
        normalisation=dict(session.image.normalisation),
        image_key=session.key,
    )


__all__ = [
    "SOURCES",
    "SourceArgs",
    "is_tiled",
    "iter_candidates",
    "iter_proposals",
    "make_source",
    "pick_source",
    "prompt_source",
    "proposals_key",
]
