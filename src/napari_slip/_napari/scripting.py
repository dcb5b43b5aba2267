"""``napari_slip.segment_in_viewer``: what the widget's Run button does, from the console:
one call on a :class:`~.session.ViewerSession`, the scripting object the widget drives."""

from __future__ import annotations

import weakref
from typing import Any

from ..core.errors import InputError
from ..core.params import (
    check_options,
)
from ..core.pipeline.api import shared_lock, shared_segmenter
from ..core.proposal_kinds import kinds_where
from .job import MODEL_OPTIONS, REQUEST_OPTIONS, Request, check
from .session import ViewerSession


def _layer(viewer, value, kind: str, what: str):
    if value is None:
        return None
    if isinstance(value, str):
        if value not in viewer.layers:
            names = ", ".join(repr(x.name) for x in viewer.layers if type(x).__name__ == kind)
            raise InputError(
                f"No layer named {value!r} for {what}; {kind} layers: {names or 'none'}."
            )
        value = viewer.layers[value]
    if type(value).__name__ != kind:
        raise InputError(
            f"{what} must be a {kind} layer; {value.name!r} is a {type(value).__name__}."
        )
    return value


#: The Segment-from-text widget open in each viewer (by the viewer's id).
_OPEN_WIDGETS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def remember_widget(viewer, widget) -> None:
    """The widget open in ``viewer``, whose models the console call then uses."""
    _OPEN_WIDGETS[id(viewer)] = widget


def open_widget(viewer):
    """``viewer``'s open Segment-from-text widget, or None."""
    widget = _OPEN_WIDGETS.get(id(viewer))
    if widget is None or getattr(widget, "viewer", None) is not viewer:
        return None
    try:
        widget.native.objectName()  # gone with its dock: a deleted C++ object raises
    except RuntimeError:
        return None
    return widget


#: The widget's Advanced settings a console call takes when it gives none of its own.
ADVANCED = ("sam_params", "crop_params", "tile_params", "templates")


def widget_models(viewer) -> dict:
    """The models and Advanced settings chosen in ``viewer``'s open widget (empty if
    none is open)."""
    widget = open_widget(viewer)
    if widget is None:
        return {}
    given = widget.request().options
    return {name: given[name] for name in (*MODEL_OPTIONS, *ADVANCED) if name in given}


#: The console's session of each viewer without an open widget (by the viewer's id).
_SESSIONS: dict[int, ViewerSession] = {}


def viewer_session(viewer) -> ViewerSession:
    """The one scripting session of ``viewer``: the open widget's (its models, its last
    result, its edits), else the console's own, kept for the viewer."""
    widget = open_widget(viewer)
    if widget is not None:
        if widget.busy:
            raise InputError("The widget is busy: wait for its run or edits to finish.")
        return widget.session
    session = _SESSIONS.get(id(viewer))
    if session is None or session.viewer is not viewer:
        session = _SESSIONS[id(viewer)] = ViewerSession(viewer)
    return session


def edit_in_viewer(viewer, kind: str, point, label: int | None = None):
    """Edit the last result in ``viewer`` as a click does, blocking: ``"add"`` the
    object at ``point`` (viewer coordinates, as ``viewer.cursor.position``),
    ``"remove"`` the one there, or refine object ``label`` with a point ``"inside"``
    or ``"outside"`` it. Only that object changes, as one undo step of the layer
    (Ctrl+Z). Returns the result shown (labels, table)."""
    session = viewer_session(viewer)
    if label is not None and session.last is not None and session.last.layer is not None:
        session.last.layer.selected_label = int(label)
    return session.correct(kind, point)


#: The run's options the console call takes (:data:`~.job.REQUEST_OPTIONS`; proposals
#: are a parameter of their own: a name, or a Labels layer).
CONSOLE_OPTIONS = tuple(o for o in REQUEST_OPTIONS if o != "proposals")


def segment_in_viewer(
    viewer,
    prompt: str,
    image=None,
    *,
    proposals=None,
    output=None,
    replace: bool = False,
    all_slices: bool = False,
    channel_axis: int | None = None,
    channels=None,
    colour_layers=(),
    progress=None,
    **options: Any,
) -> Any:
    """Segment ``prompt`` in an image layer and return the Labels layer written.

    Blocks until done (the widget runs the same work in a background thread). When
    nothing is found, no layer is added or changed: a notification says why and None
    is returned.

    Parameters
    ----------
    viewer
        The napari viewer (``viewer`` in napari's console).
    prompt
        What to segment, e.g. ``"nucleus"``; or a :class:`~napari_slip.Concept` (classes
        shown by examples: the layer's features get ``class`` and
        ``class_probability``; ``concept_class`` keeps one class).
    image
        An Image layer or its name; default the selected Image layer (or the only one).
    proposals
        A Labels layer (or name) whose labels are the proposals, instead of SAM; or
        ``"guided"`` (SAM decodes only points the relevance map places: fast) or
        ``"relevance"`` (the map's regions, no SAM).
    output
        A Labels layer (or name) to add the objects to; default a new layer.
    replace
        With ``output``: overwrite existing labels where new objects overlap them.
    all_slices
        Segment every plane of a z-stack / time series (default: the current plane).
    channel_axis, channels
        For a multichannel image shown as one layer: its channel axis, and up to three
        channels to show the models as R, G, B (default the first three).
    colour_layers
        One or two more single-channel Image layers (or names) shown as green and blue,
        ``image`` being red: for channels that napari shows as separate layers.
    progress
        Called with each :class:`~napari_slip.core.runtime.progress.Progress` event.
    **options
        Any option of a run but the image's intensities, which the layer decides: the
        list :func:`napari_slip.segment` takes (:data:`napari_slip.core.config.OPTIONS`).
        Selection: ``mode``, ``threshold``, ``top_k``, ``distractors``,
        ``relevance_weight`` (as in :meth:`napari_slip.Segmenter.segment`). Models:
        ``sam``, ``clip``, ``device``, ``precision`` (as in
        :class:`napari_slip.Segmenter`; loaded once and shared) and ``decoder`` (a
        trained decoder file whose map is the relevance map; it must match ``clip``).
        Not given: those chosen in the viewer's **Segment from text** widget when it
        is open (what its Run button uses, its decoder and Advanced settings included:
        ``sam_params``, ``crop_params``, ``tile_params``, ``templates``), else the
        defaults. With the widget open, the call is made on the widget's own session:
        its result is the widget's last result (Shift+clicks edit it, the results
        panel's slider re-selects it). ``tiles`` (``"on"``, or ``"auto"``: above
        ``max_side``) runs SAM tile by tile at full resolution, for large images (see
        :class:`~napari_slip.core.params.TileParams`). ``relevance=True`` also adds an
        Image layer of where the prompt matches. ``guided_params``: the guided modes'
        options (:class:`~napari_slip.core.params.GuidedParams`). ``concept_class``
        keeps one class of a concept. ``link``: with ``all_slices``, link objects
        across Z planes into 3D objects and across T frames into tracks (the viewer's
        axis labels ``t``/``z`` say which is which; otherwise napari's order: the last
        leading axis is Z, the one before it T); False: each plane's objects their own.

    Examples
    --------
    In napari's console::

        import napari_slip
        layer = napari_slip.segment_in_viewer(viewer, "coin", mode="threshold", threshold=0.22)
        layer.features
    """
    check_options(options, CONSOLE_OPTIONS, "segment_in_viewer()")
    if image is None:
        active = viewer.layers.selection.active
        images = [x for x in viewer.layers if type(x).__name__ == "Image"]
        if active is not None and type(active).__name__ == "Image":
            image = active
        elif len(images) == 1:
            image = images[0]
        else:
            raise InputError("Select an Image layer or pass image=... (a layer or its name).")
    image = _layer(viewer, image, "Image", "image")
    from ..core.concepts import Concept

    concept = prompt if isinstance(prompt, Concept) else None
    for name in (*MODEL_OPTIONS, *ADVANCED, "tiles", "guided_params"):
        if name in options and options[name] is None:  # None: not given
            del options[name]
    chosen = widget_models(viewer)  # the widget's models and Advanced settings
    if "tiles" in options or "tile_params" in options:
        chosen.pop("tile_params", None)
    own_clip = concept.clip_spec() if concept is not None else None
    if own_clip and "clip" not in chosen:  # the CLIP the concept was learnt with
        chosen["clip"] = own_clip
    options = {**chosen, **options}
    named = isinstance(proposals, str) and proposals in kinds_where(per_image=False)
    if named:
        options["proposals"] = proposals
    request = Request(
        image_layer=image,
        prompt=concept.name if concept is not None else prompt,
        options=options,
        concept=concept,
        labels_layer=None if named else _layer(viewer, proposals, "Labels", "proposals"),
        all_planes=all_slices,
        axis_labels=tuple(viewer.dims.axis_labels),
        world_point=tuple(viewer.dims.point),
        channel_axis=channel_axis,
        channels=tuple(channels) if channels else None,
        colour_layers=tuple(_layer(viewer, x, "Image", "colour layer") for x in colour_layers),
    )
    target = _layer(viewer, output, "Labels", "output")
    check(request)  # every check before the shared segmenter or any model
    session = viewer_session(viewer)  # the widget's, when it is open: one state
    with shared_lock:
        if session.segmenter is None:
            session.segmenter = shared_segmenter()  # its caches; the run is the config
        result = session.segment(request, progress)
    if not result.n_objects:  # no layer added or changed; the map is shown if asked for
        session.deliver(request, result, hide_proposals=False)
        from .toasts import post, sentence

        post(f"{sentence(result.message)} No layer was added.")
        layer = None
    else:
        options = {"replace_labels": replace, "hide_proposals": False}
        layer = session.deliver(request, result, target, **options)
    widget = open_widget(viewer)
    if widget is not None:  # the dock shows the console's result: it is its last one
        widget.show_outcome(result, request)
        widget.edits.update()
        widget.suggest.update()
    return layer
