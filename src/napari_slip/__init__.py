"""napari-slip: segment objects from a text prompt (SAM proposes, CLIP picks).

The scripting API needs no Qt::

    import napari_slip
    result = napari_slip.segment(image, "nucleus", mode="threshold")
    result.labels, result.table, result.provenance
    napari_slip.batch("plate/", "out/", "nucleus")   # many images, resumable

Inside napari, :func:`segment_in_viewer` does what the widget's button does.
Importing this package is cheap: torch and the models load on first use.
"""

from __future__ import annotations

from ._version import __version__

_FROM_CORE = (
    "BatchSummary",
    "Concept",
    "CropParams",
    "LabelEditor",
    "ModelHub",
    "NormalisationParams",
    "SamProposalParams",
    "SegmentationResult",
    "Segmenter",
    "SelectionParams",
    "SlipError",
    "TileParams",
    "batch",
    "edit",
    "list_models",
    "segment",
)


def segment_in_viewer(viewer, prompt, image=None, **options):
    """Segment ``prompt`` in a napari viewer's image; returns the Labels layer.

    Blocks until done. See :func:`napari_slip._napari.scripting.segment_in_viewer`
    (imports napari).
    """
    from ._napari.scripting import segment_in_viewer as _impl

    return _impl(viewer, prompt, image=image, **options)


def edit_in_viewer(viewer, kind, point, label=None):
    """Edit the last result in a napari viewer as a click does (``"add"``,
    ``"remove"``, ``"inside"`` / ``"outside"`` to refine ``label``); only that object
    changes, as one undo step. See
    :func:`napari_slip._napari.scripting.edit_in_viewer` (imports napari)."""
    from ._napari.scripting import edit_in_viewer as _impl

    return _impl(viewer, kind, point, label)


def __getattr__(name: str):
    if name in _FROM_CORE:
        from . import core

        value = getattr(core, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_FROM_CORE})


__all__ = [*_FROM_CORE, "__version__", "edit_in_viewer", "segment_in_viewer"]
