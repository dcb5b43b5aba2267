"""napari-slip: segment objects from a text prompt (SAM proposes, CLIP picks).

The scripting API needs no Qt::

    import napari_slip
    result = napari_slip.segment(image, "nucleus", mode="threshold")
    result.labels, result.table, result.provenance

Inside napari, :func:`segment_in_viewer` does what the widget's button does.
"""

from ._version import __version__
from .core import (
    CropParams,
    SamProposalParams,
    SegmentationResult,
    Segmenter,
    SlipError,
    list_models,
    segment,
)


def segment_in_viewer(viewer, prompt, image=None, **options):
    """Segment ``prompt`` in a napari viewer's image; returns the Labels layer.

    See :func:`napari_slip._napari.scripting.segment_in_viewer` (imports napari).
    """
    from ._napari.scripting import segment_in_viewer as _impl

    return _impl(viewer, prompt, image=image, **options)


__all__ = [
    "CropParams",
    "SamProposalParams",
    "SegmentationResult",
    "Segmenter",
    "SlipError",
    "__version__",
    "list_models",
    "segment",
    "segment_in_viewer",
]
