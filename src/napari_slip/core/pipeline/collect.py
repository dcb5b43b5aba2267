"""Candidate collection: which source proposes, its proposals, and their CLIP crops.

Plain functions over a session and a :class:`~.context.RunContext`, each cached in the
image's session by what made it (source, SAM and precision; crops and CLIP), so a new
prompt or new selection settings on a seen image cost no image work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator

import numpy as np

from ..errors import InputError
from ..params import CropParams, GuidedParams, SamProposalParams, TileParams
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


def grid_source(
    session: ImageSession | None, sam_params: SamProposalParams, tiles: TileParams
) -> ProposalSource:
    """SAM's grid over the image, or over its tiles."""
    if session is not None and is_tiled(tiles, sam_params, session.image.shape):
        return TiledSamSource(sam_params, tiles)
    return SamGridSource(sam_params)


def prompt_source(
    kind: str,
    prompt: str,
    session: ImageSession | None,
    context: RunContext,
    guided: GuidedParams,
    sam_params: SamProposalParams,
    tiles: TileParams,
) -> ProposalSource:
    """The source of ``proposals="relevance"`` or ``"guided"`` for ``prompt``."""
    if kind not in ("relevance", "guided"):
        raise InputError(f"proposal_source() makes relevance or guided; got {kind!r}.")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
    models = context.relevance.key()
    if kind == "relevance":
        return RelevanceSource(prompt, guided, models)
    if session is not None and is_tiled(tiles, sam_params, session.image.shape):
        return TiledGuidedSource(prompt, guided, sam_params, tiles, models)
    return GuidedSource(prompt, guided, sam_params, models)


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
    if labels is not None:
        return LabelSource(labels)
    if source is None:
        return grid_source(session, sam_params, tiles)
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
        source={"source": source.name, "n": len(proposals), **source.describe()},
        normalisation=dict(session.image.normalisation),
        image_key=session.key,
    )


__all__ = [
    "grid_source",
    "is_tiled",
    "iter_candidates",
    "iter_proposals",
    "pick_source",
    "prompt_source",
    "proposals_key",
]
