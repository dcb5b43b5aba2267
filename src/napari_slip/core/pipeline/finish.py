"""The one step that finishes a result, whatever made it: a run (a plane or a stack),
a re-selection of either, an edit.

:func:`finished` records the configuration of the run that made the result (a later
re-selection or edit works with its models and options) and measures its table as
the run measures: a plane's objects by its candidates' measuring (the original
image, pixel sizes, unit), a stack's per 3D object, or per track and frame
(:func:`.stack_measure.measured`). Every path ends here, so a result's columns never
depend on how it was reached.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..measure import Measuring
from .images import plane_of
from .stack_measure import measured
from .stack_result import StackResult


def table_of(result: Any) -> pd.DataFrame:
    """``result``'s table with the measurements of its labels (the table as it is
    where nothing says how to measure: a plane run with ``measure=False``)."""
    if isinstance(result, StackResult):
        return measured(result)
    measuring = getattr(result.candidates, "measuring", None)
    if measuring is None or not len(result.table):
        return result.table
    return measuring.table(result.table, result.labels)


def plane_measuring(result: Any, plane: tuple[int, ...] = ()) -> Measuring:
    """How one plane of ``result`` is measured as its run measured it: a stack's plane
    of its image, with its Y and X pixel sizes; a plane result's own measuring."""
    if isinstance(result, StackResult):
        image = None
        if result.image is not None:
            image = np.asarray(plane_of(result.image, plane) if plane else result.image)
        scale = {k: v for k, v in (result.scale or {}).items() if k in "YX"}
        return Measuring(image, scale or None, result.unit)
    return getattr(result.candidates, "measuring", None) or Measuring()


def finished(result: Any, config: Any = None) -> Any:
    """``result`` with its run's ``config`` (when given) and its measured table."""
    if config is not None:
        result.config = config
    result.table = table_of(result)
    return result


__all__ = ["finished", "plane_measuring", "table_of"]
