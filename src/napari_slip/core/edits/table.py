"""The table of an edited result: each object's row (score, similarity, prompt,
source_id) kept through the edits, measured as the run measured it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..measure import with_measurements

#: The columns an object's row carries beside its measurements.
ROW_COLUMNS = ("score", "similarity", "prompt", "source_id")


class Objects:
    """Rows by id, and how a table of labels is measured.

    Parameters
    ----------
    table
        The result's table: its rows and its column order are kept.
    prompt
        The prompt an added object is shown under.
    finish
        ``finish(labels, table)``: the run's own measuring step (a stack result's);
        None: :func:`~..measure.with_measurements` of a plane with ``image``,
        ``scale`` and ``unit``.
    """

    def __init__(
        self,
        table: pd.DataFrame | None,
        prompt: str,
        finish: Callable[[np.ndarray, pd.DataFrame], pd.DataFrame] | None = None,
        *,
        image: np.ndarray | None = None,
        scale: dict | None = None,
        unit: str | None = None,
    ) -> None:
        self.prompt, self.finish = prompt, finish
        self.image, self.scale, self.unit = image, scale, unit
        self.rows: dict[int, dict] = {}
        #: The run's column order, which the edited table keeps.
        self.columns = [] if table is None else list(table.columns)
        if table is not None and len(table):
            for row in table.to_dict("records"):
                self.rows[int(row["id"])] = {k: row[k] for k in ROW_COLUMNS if k in row}

    def table(self, labels: np.ndarray, rows: dict | None = None) -> pd.DataFrame:
        """One row per object of ``labels`` with its measurements, in the run's order;
        ``rows`` are known rows not kept yet (an edit's, before it is applied)."""
        known = {**self.rows, **(rows or {})}
        ids = [int(i) for i in np.unique(labels) if i]
        blank = {"score": np.nan, "similarity": np.nan, "prompt": self.prompt, "source_id": 0}
        records = [{"id": i, **blank, **known.get(i, {})} for i in ids]
        table = pd.DataFrame(records, columns=["id", *ROW_COLUMNS])
        if not len(table):
            return table
        if self.finish is not None:
            table = self.finish(labels, table)
        else:
            table = with_measurements(table, labels, self.image, "YX", self.scale, self.unit)
        first = [c for c in self.columns if c in table.columns]
        return table[first + [c for c in table.columns if c not in first]]


__all__ = ["ROW_COLUMNS", "Objects"]
