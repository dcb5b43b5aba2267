"""What a stack run returns: :class:`StackResult`, its labels, tables, candidates and
(for linked planes) its tracks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .results import message_for
from .session import Candidates


@dataclass
class StackResult:
    """Labels for a whole stack.

    Attributes
    ----------
    labels
        int32 array of the stack's shape without the colour axis.
    table
        The per-object table with one ``axis{i}`` column per leading axis.
    provenance
        The first segmented plane's provenance, plus the planes done.
    message
        One line about the whole run.
    candidates
        Each segmented plane's candidates (for re-selection without image work).
    prompt
        The prompt the labels answer.
    candidate_table
        Every candidate of every plane with its score, ``kept`` and ``id`` (see
        :class:`~.results.SegmentationResult`), with the ``axis{i}`` columns.
    """

    labels: np.ndarray
    table: pd.DataFrame
    provenance: dict = field(default_factory=dict)
    message: str = ""
    candidates: dict[tuple[int, ...], Candidates] = field(default_factory=dict, repr=False)
    prompt: str = ""
    candidate_table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    #: The prompt's relevance map where one was asked for (``relevance=True``): float32
    #: of the labels' shape; in a stack, planes not segmented are 0.
    relevance: np.ndarray | None = None
    #: Each plane's relevance map where one was made (asked for, or selection used it:
    #: ``relevance_weight``), for re-selection without image work.
    plane_relevance: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)
    #: The labels' axes (e.g. ``"ZYX"``, ``"TYX"``), pixel sizes and unit where known.
    axes: str = ""
    scale: dict = field(default_factory=dict)
    unit: str | None = None
    #: Linked objects (:class:`~.linked.LinkedObjects`) where planes were linked.
    linked: Any = field(default=None, repr=False)
    #: The original image (for measurements after re-selection).
    image: Any = field(default=None, repr=False, compare=False)
    #: Where planes were linked: every linked object's ``score`` and whether it was
    #: ``kept`` (selection chose among these, not among the planes' candidates).
    object_scores: pd.DataFrame | None = field(default=None, repr=False)
    #: What selection looked for: the prompt, or a concept query (its classes).
    query: Any = field(default=None, repr=False)
    #: What ``score`` is (:func:`~napari_slip.core.pipeline.selection.score_unit`).
    score_unit: str = "cosine similarity"
    #: The run that made it (:class:`~napari_slip.core.config.RunConfig`): a
    #: re-selection or an edit works with its models and options.
    config: Any = field(default=None, repr=False, compare=False)

    @property
    def n_objects(self) -> int:
        """Objects found: 3D objects or tracks where planes were linked."""
        if "track_id" in self.table:
            return int(self.table["track_id"].nunique())
        return len(self.table)

    @property
    def found(self) -> bool:
        return len(self.table) > 0

    def message_for(self, surface: str) -> str:
        """:attr:`message` naming the settings as ``surface`` (``python``, ``cli``,
        ``widget``) calls them."""
        return message_for(self, surface)

    @property
    def tracks(self) -> pd.DataFrame | None:
        """One row per track of a time series: ``track_id``, its first and last frame
        (``start``, ``end``), ``n_frames`` and ``parent_track`` (the track it divided
        from; 0: none). None where no T axis was linked."""
        table = self.table
        if "track_id" not in table:
            return None
        columns = ["track_id", "start", "end", "n_frames", "parent_track"]
        if not len(table):
            return pd.DataFrame(columns=columns)
        per_track = table.groupby("track_id", sort=True)
        out = pd.DataFrame(
            {
                "start": per_track["t"].min(),
                "end": per_track["t"].max(),
                "n_frames": per_track["t"].count(),
                "parent_track": per_track["parent_track"].first()
                if "parent_track" in table
                else 0,
            }
        )
        return out.reset_index()[columns]


__all__ = ["StackResult"]
