"""A plane or a stack: what an image is decides the path it takes.

:func:`iter_segment_image` is what :func:`~.api.segment`, :meth:`Segmenter.segment
<napari_slip.core.pipeline.segmenter.Segmenter.segment>`, the command line and batches
call with a whole image: its axes are resolved (given, from its file, or obvious for a
plane: :func:`~napari_slip.core.axes.resolve_axes`), a plane goes to the one run
(:func:`.run.iter_run`) and a stack to :func:`.stack.iter_stack`, planes linked along Z
and T. Everything about the axes is checked before any model work.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..axes import ImageAxes, canonical, resolve_axes
from ..config import IMAGE_OPTIONS, OPTIONS, RunConfig
from ..errors import InputError
from ..params import check_options
from ..runtime.progress import Progress
from .run import iter_run, proposals_of

#: Keyword options of :meth:`Segmenter.segment` besides the image and the prompt: a
#: run's (:data:`~..config.OPTIONS`; a segmenter's models and options are the defaults
#: of the ones not given) and the image's.
SEGMENT_OPTIONS = (*OPTIONS, *IMAGE_OPTIONS)


def iter_call(
    segmenter: Any, image: Any, prompt: str, options: dict
) -> Generator[Progress, None, Any]:
    """:meth:`Segmenter.segment`'s keyword options checked and made one run, then
    :func:`iter_segment_image`."""
    check_options(options, SEGMENT_OPTIONS, "segment()")
    inputs = ImageInputs.pick(options)
    options["proposals"] = proposals_of(options.get("proposals"), inputs.labels, inputs.source)
    config = segmenter.run_config(prompt, **options)  # every check before any model loads
    return (yield from iter_segment_image(segmenter, image, config, inputs))


def image_axes(
    image: Any,
    config: RunConfig,
    axes: str | ImageAxes | None = None,
    pixel_size: Any = None,
    path: str | os.PathLike | None = None,
) -> ImageAxes:
    """The image's axes (see :func:`~napari_slip.core.axes.resolve_axes`)."""
    norm = config.normalisation
    if axes is not None and norm.channel_axis is not None:
        raise InputError("Give the channel axis once: as C in axes=..., or channel_axis.")
    return resolve_axes(
        np.shape(image) if not hasattr(image, "shape") else image.shape,
        axes,
        path=path,
        pixel_size=pixel_size,
        rgb=norm.rgb,
        channel_axis=norm.channel_axis,
    )


@dataclass(frozen=True)
class ImageInputs:
    """What an image brings to a run beside its pixels (the run's settings are its
    :class:`~..config.RunConfig`).

    Parameters
    ----------
    axes, pixel_size
        The image's axes (``"ZYX"``, ``"TCYX"``...) and pixel sizes, where its file
        does not record them (see :func:`~napari_slip.core.axes.resolve_axes`).
    path
        The file it came from, whose metadata is read where ``axes`` is None.
    labels
        A label image whose objects are the proposals (in the image's axis order).
    source
        A proposal source of the caller's own (a plane only).
    labels_out
        Where to paint a large plane's labels (a ``.zarr`` path or an array).
    planes
        The leading indices of a stack's planes to segment (None: all).
    """

    axes: Any = None
    pixel_size: Any = None
    path: str | os.PathLike | None = None
    labels: Any = field(default=None, repr=False)
    source: Any = None
    labels_out: Any = field(default=None, repr=False)
    planes: Sequence[tuple[int, ...]] | None = None

    @classmethod
    def pick(cls, options: dict) -> ImageInputs:
        """The image's options (:data:`~..config.IMAGE_OPTIONS`) taken out of a call's."""
        return cls(**{k: options.pop(k) for k in IMAGE_OPTIONS if k in options})


def iter_segment_image(
    segmenter: Any, image: Any, config: RunConfig, inputs: ImageInputs | None = None
) -> Generator[Progress, None, Any]:
    """Segment a plane (a :class:`~.results.SegmentationResult`) or a stack (a
    :class:`~.stack.StackResult`, in the engine's axis order: T, Z, Y, X) with the
    run's ``config`` and the image's ``inputs``. ``image`` None reuses the
    segmenter's last one (a plane)."""
    inputs = inputs or ImageInputs()
    labels, source, labels_out = inputs.labels, inputs.source, inputs.labels_out
    if image is None:
        return (
            yield from iter_run(
                segmenter, None, config, labels=labels, source=source, labels_out=labels_out
            )
        )
    if not hasattr(image, "shape"):
        image = np.asarray(image)
    info = image_axes(image, config, inputs.axes, inputs.pixel_size, inputs.path)
    arranged, colour = canonical(image, info)
    plane_scale = {k: v for k, v in info.scale.items() if k in "YX"}
    if info.colour == "C":
        config = replace(config, normalisation=replace(config.normalisation, channel_axis=-1))
    elif info.colour == "S" and config.normalisation.rgb is None:
        config = replace(config, normalisation=replace(config.normalisation, rgb=True))
    if not info.lead:
        if inputs.planes not in (None, [()], ((),)):
            raise InputError("A 2D image has one plane: give no planes.")
        if labels is not None and not hasattr(labels, "chunks"):  # as the image: reordered
            labels = _labels_in_order(labels, info, image.shape)
        return (
            yield from iter_run(
                segmenter,
                arranged,
                config,
                labels=labels,
                source=source,
                labels_out=labels_out,
                scale=plane_scale,
                unit=info.unit,
            )
        )
    if source is not None:
        raise InputError("A proposal source answers for one plane: give a 2D image.")
    if labels_out is not None:
        raise InputError("Labels painted into a store are for one large plane, not a stack.")
    if labels is not None:
        labels = _labels_in_order(labels, info, image.shape)
    from .stack import iter_stack

    return (
        yield from iter_stack(
            segmenter,
            arranged,
            config,
            rgb=colour,
            planes=inputs.planes,
            labels=labels,
            lead=info.lead,
            scale=info.scale,
            unit=info.unit,
        )
    )


def _labels_in_order(labels: Any, info: ImageAxes, shape: tuple[int, ...]) -> np.ndarray:
    """Proposal labels given in the image's axis order (without colour), reordered.
    Labels without the image's size-1 axes (a one-plane stack's labels, which readers
    squeeze: OME cannot tell a single Z from none) get them back."""
    own = "".join(a for a in info.letters if a not in "CS")
    sizes = tuple(n for a, n in zip(info.letters, shape, strict=True) if a not in "CS")
    labels = np.asarray(labels)
    squeezed = tuple(n for n in sizes if n != 1)
    if labels.ndim < len(own) and tuple(n for n in labels.shape if n != 1) == squeezed:
        labels = labels.reshape(sizes)
    if labels.ndim != len(own):
        raise InputError(
            f"Proposal labels have {labels.ndim} axes; the image's labels have {len(own)} ({own})."
        )
    return np.transpose(labels, [own.index(a) for a in info.label_letters])


__all__ = ["SEGMENT_OPTIONS", "ImageInputs", "image_axes", "iter_call", "iter_segment_image"]
