"""Concepts: classes shown by examples (labels, masks, clicks), a few-shot classifier
over object features, and ``.concept`` files that carry them to every image, stack and
batch. See ``docs/concepts.md``."""

from .concept import DEFAULT_FEATURES, Concept
from .features import FEATURE_GROUPS, MEASUREMENTS, ObjectFeatures, features_of, measure_objects
from .query import ConceptQuery, as_query

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURE_GROUPS",
    "MEASUREMENTS",
    "Concept",
    "ConceptQuery",
    "ObjectFeatures",
    "as_query",
    "features_of",
    "measure_objects",
]
