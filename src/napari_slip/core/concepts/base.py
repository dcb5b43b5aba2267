"""What a concept is made of, for :mod:`.concept` and :mod:`.files` alike: the
examples' arrays, the limits that keep a concept (and a hostile file) small, and the
checks of names and feature groups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .features import FEATURE_GROUPS, MEASUREMENTS

#: Every feature group, in order.
GROUP_ORDER = ("shape", "intensity", "texture", "clip")
#: The feature groups a concept uses unless told (see ``benchmarks/bench_concepts.py``).
DEFAULT_FEATURES = ("auto",)
#: Limits that keep a concept (and a hostile concept file) small.
MAX_CLASSES = 256
MAX_NAME = 200
MAX_EXAMPLES = 100_000


def check_name(name: object, what: str = "A class name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{what} must be a non-empty text; got {name!r}.")
    if len(name) > MAX_NAME:
        raise InputError(f"{what} is longer than {MAX_NAME} characters.")
    return name.strip()


def check_features(features: Iterable[str]) -> tuple[str, ...]:
    if isinstance(features, str):
        features = (
            tuple(f.strip() for f in features.split(",")) if "," in features else (features,)
        )
    chosen = tuple(features)
    if chosen == ("auto",):
        return chosen
    unknown = [f for f in chosen if f not in FEATURE_GROUPS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise InputError(
            f"Concept features are 'auto' or groups of {', '.join(FEATURE_GROUPS)} (each "
            f"once); got {list(chosen)!r}."
        )
    return chosen


@dataclass
class Examples:
    """The examples' features: measurements, embeddings, class (-1: negative), step."""

    measurements: np.ndarray
    clip: np.ndarray
    labels: np.ndarray
    steps: np.ndarray

    @classmethod
    def empty(cls, dim: int = 0) -> Examples:
        return cls(
            np.zeros((0, len(MEASUREMENTS))),
            np.zeros((0, dim), dtype=np.float32),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.labels)


__all__ = [
    "DEFAULT_FEATURES",
    "GROUP_ORDER",
    "MAX_CLASSES",
    "MAX_EXAMPLES",
    "MAX_NAME",
    "Examples",
    "check_features",
    "check_name",
]
