"""Edits of a label image that change only what they touch.

A :class:`LabelEditor` edits a result's labels: *add* the object under a click (SAM
decodes the point on that image's cached embedding; the new object gets the next free
id and only background pixels; on a linked stack it is carried through the planes it
continues into, :mod:`.carry`), *remove* the object under a click (its pixels become
background, nothing takes its place; a linked stack's whole 3D object), *refine* one
object with further positive and negative points and a box (decoded together as SAM's
prompt; the object keeps its id and takes no pixel of another), *merge* two objects,
*split* one between two points (:func:`.masks.split_between`); a box drawn is an add
too (:mod:`.box`). Every other object's pixels and id stay exactly as they were.

Each edit is computed first (:meth:`LabelEditor.propose_add` ...: an :class:`Edit`,
the changed pixels with their values before and after, nothing written) and applied
second, so a GUI can compute it in a worker and apply it on its own thread (napari's
``data_setitem``, which its Ctrl+Z undoes); scripts call :meth:`LabelEditor.add_at`
and friends, which do both and keep an undo/redo history.

Edits teach on purpose: each one records an example (added and refined objects of
the editor's class, removed ones as "not these") in :attr:`LabelEditor.concept`; the
concept changes other objects only when it is run (``segment(image, concept)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from ..errors import InputError, NothingToDo
from ..pipeline.plane import PlaneHandle
from .carry import carry
from .edit import Edit
from .lessons import Lessons
from .masks import checked, component_at, innermost, split_between
from .table import Objects


class LabelEditor:
    """Edit a label image object by object (see the module's docstring).

    Parameters
    ----------
    labels
        The label image, edited in place by :meth:`apply` (2D, or a stack whose
        plane ``plane`` is edited).
    handle
        The segmented image (:func:`~.pipeline.plane.plane_of`).
    plane
        Index of the edited plane in ``labels`` (``()`` for a 2D label image).
    table
        The result's table (rows by ``id``): its score, similarity, prompt and
        source_id follow the objects; measurements are made anew.
    prompt
        What added objects are compared with (their similarity).
    image
        The original plane, channels last, for the intensity columns.
    scale, unit
        Pixel sizes (``{"Y": .., "X": ..}``) and their unit, for physical sizes.
    concept, class_name
        The concept that edits teach, and the class added objects are examples of.
    candidates
        The plane's candidates (the run's proposals, embedded): what
        :func:`~.more.suggest` proposes from.
    handles, linked, finish
        A linked stack: every segmented plane's handle (plane -> handle), so that an
        added object is carried to the neighbouring planes (SAM decodes a point inside
        the previous plane's mask on each plane's own embedding, until the object
        ends) and a removal takes the whole 3D object or track; ``finish(labels,
        table)`` measures the whole stack's table as a run does.
    """

    def __init__(
        self,
        labels: np.ndarray,
        handle: PlaneHandle,
        *,
        plane: tuple[int, ...] = (),
        table: pd.DataFrame | None = None,
        prompt: str = "",
        image: np.ndarray | None = None,
        scale: dict | None = None,
        unit: str | None = None,
        concept=None,
        class_name: str | None = None,
        candidates=None,
        handles: dict | None = None,
        linked: bool = False,
        finish: Callable[[np.ndarray, pd.DataFrame], pd.DataFrame] | None = None,
    ) -> None:
        self.labels, self.handle, self.plane = labels, handle, tuple(plane)
        self.handles = {self.plane: handle, **(handles or {})}
        self.linked = linked
        if tuple(labels[self.plane].shape) != handle.shape:
            raise InputError(
                f"The labels' plane is {labels[self.plane].shape}, the image "
                f"{handle.shape}: edit the labels of this image."
            )
        self.prompt = prompt
        #: Each object's row, measured as the run measured (see :class:`.table.Objects`).
        self.objects = Objects(table, prompt, finish, image=image, scale=scale, unit=unit)
        self.finish = finish
        #: What the edits teach (the concept, its class, which edit taught what).
        self.lessons = Lessons(concept, class_name, prompt)
        self.candidates = candidates
        #: Points and box given to each object (its refine prompt grows with clicks).
        self.prompts: dict[int, dict] = {}
        #: Objects the user drew (added or refined): suggestions never remove them.
        self.chosen: set[int] = set()
        self._highest = int(np.asarray(labels).max(initial=0))
        self.done: list[Edit] = []
        self.undone: list[Edit] = []

    # -- what an edit would do ------------------------------------------------------
    @property
    def plane_labels(self) -> np.ndarray:
        return self.labels[self.plane]

    @property
    def concept(self):
        """The concept the edits teach (None: they teach nothing)."""
        return self.lessons.concept

    @property
    def class_name(self) -> str | None:
        """The class added objects are examples of."""
        return self.lessons.class_name

    @class_name.setter
    def class_name(self, name: str | None) -> None:
        self.lessons.class_name = name

    def pixel(self, y: float, x: float) -> tuple[int, int]:
        """The pixel under (``y``, ``x``); refused outside the image."""
        h, w = self.handle.shape
        yi, xi = int(np.floor(y)), int(np.floor(x))
        if not (0 <= yi < h and 0 <= xi < w):
            raise InputError(f"The click ({y:.0f}, {x:.0f}) is outside the image ({h} x {w}).")
        return yi, xi

    def next_id(self) -> int:
        """The next free id: one above every id in the label image and every id this
        editor gave (a removed or merged object's id is never given again)."""
        return max(int(np.asarray(self.labels).max(initial=0)), self._highest) + 1

    def at(self, plane: tuple[int, ...] | None) -> LabelEditor:
        """Edit ``plane`` next (a segmented plane of the stack; None: the current)."""
        if plane is None or tuple(plane) == self.plane:
            return self
        if tuple(plane) not in self.handles:
            raise InputError(f"Plane {tuple(plane)} was not segmented: edit one that was.")
        self.plane, self.handle = tuple(plane), self.handles[tuple(plane)]
        return self

    def propose_add(
        self, y: float, x: float, plane: tuple[int, ...] | None = None, describe: bool = True
    ) -> Edit:
        """The object under (``y``, ``x``) (of ``plane``) as a new label on background
        pixels only; in a linked stack, carried to the planes it continues into.
        ``describe=False``: without its example and similarity (:meth:`describe`
        later: a GUI writes the pixels first)."""
        self.at(plane)
        yi, xi = self.pixel(y, x)
        here = int(self.plane_labels[yi, xi])
        if here:
            raise NothingToDo(
                f"This is object {here} already: click on unlabelled pixels to add, or "
                "refine this object."
            )
        found = self.handle.decode([(yi + 0.5, xi + 0.5)], [True])
        mask = checked(found.mask)
        label = self.next_id()
        free = mask & (self.plane_labels == 0)
        if not free[yi, xi] or not free.any():
            raise NothingToDo("SAM found no object here: nothing was added.")
        free = component_at(free, yi, xi)
        self.prompts[label] = {"points": [(yi + 0.5, xi + 0.5, True)], "box": None}
        masks = {self.plane: free}
        if self.linked:
            masks.update(carry(self.labels, self.handles, self.plane, free))
        message = f"Added object {label}" + (
            f" on {len(masks)} planes." if len(masks) > 1 else "."
        )
        rows = {label: {"prompt": self.prompt, "source_id": 0}}
        made = Edit.setting(self.labels, masks, label, self.plane, "add", label, message, rows)
        return self.describe(made) if describe else made

    def propose_remove(
        self, y: float, x: float, plane: tuple[int, ...] | None = None, describe: bool = True
    ) -> Edit:
        """Every pixel of the object under (``y``, ``x``) (of ``plane``) back to
        background: in a linked stack, every plane of the 3D object."""
        self.at(plane)
        yi, xi = self.pixel(y, x)
        label = int(self.plane_labels[yi, xi])
        if not label:
            raise NothingToDo("There is no object here to remove: click on an object.")
        mask = self.plane_labels == label
        message = f"Removed object {label}."
        if self.linked:
            where = np.nonzero(self.labels == label)
            before = self.labels[where]
            zeros = np.zeros_like(before)
            made = Edit("remove", label, where, before, zeros, message, mask, plane=self.plane)
        else:
            made = self.edit_of("remove", label, mask, 0, message)
        return self.describe(made) if describe else made

    def propose_refine(
        self,
        label: int,
        points: Sequence[tuple[float, float, bool]] = (),
        box: tuple[float, float, float, float] | None = None,
        plane: tuple[int, ...] | None = None,
        describe: bool = True,
    ) -> Edit:
        """Object ``label`` decoded again with its earlier prompt plus ``points``
        ((y, x, inside) each) and ``box`` (y0, x0, y1, x1); it keeps its id and never
        takes another object's pixels."""
        self.at(plane)  # a 3D object is refined on one of its planes
        label = int(label)
        current = self.plane_labels == label
        if not current.any():
            raise InputError(f"There is no object {label} on this plane to refine.")
        # An object no click drew: its innermost pixel is its first point.
        prompt = self.prompts.get(label) or {"points": [innermost(current)], "box": None}
        for y, x, _ in points:
            self.pixel(y, x)
        all_points = [*prompt["points"], *((float(y), float(x), bool(p)) for y, x, p in points)]
        box = box if box is not None else prompt["box"]
        found = self.handle.decode([p[:2] for p in all_points], [p[2] for p in all_points], box)
        mask = checked(found.mask, "with this box" if box is not None else "here")
        mask &= (self.plane_labels == 0) | current  # never another object's pixels
        if not mask.any():
            raise NothingToDo(f"SAM's mask leaves object {label} empty: nothing changed.")
        self.prompts[label] = {"points": all_points, "box": box}
        new = np.where(current, 0, self.plane_labels)
        new[mask] = label
        rows = {label: dict(self.objects.rows.get(label, {}))}
        message = f"Refined object {label}."
        made = Edit.turning(self.labels, self.plane, new, "refine", label, message, rows, mask)
        return self.describe(made) if describe else made

    def propose_merge(self, keep: int, other: int) -> Edit:
        """Object ``other``'s pixels join object ``keep`` (which keeps its id)."""
        keep, other = int(keep), int(other)
        if keep == other:
            raise NothingToDo("Merging an object with itself changes nothing.")
        for label in (keep, other):
            if not (self.plane_labels == label).any():
                raise InputError(f"There is no object {label} on this plane.")
        mask = self.plane_labels == other
        return self.edit_of("merge", keep, mask, keep, f"Merged object {other} into {keep}.")

    def propose_split(
        self,
        first: tuple[float, float],
        second: tuple[float, float],
        plane: tuple[int, ...] | None = None,
    ) -> Edit:
        """Split the object holding both points (``(y, x)`` each) in two along its
        narrowest part between them (a watershed of its distance map from the two
        points): the part of ``first`` keeps the id, the other gets the next free id."""
        self.at(plane)
        (ya, xa), (yb, xb) = self.pixel(*first), self.pixel(*second)
        label = int(self.plane_labels[ya, xa])
        if not label or int(self.plane_labels[yb, xb]) != label or (ya, xa) == (yb, xb):
            raise NothingToDo("Click two different points inside one object to split it.")
        part = split_between(self.plane_labels == label, (ya, xa), (yb, xb))
        new = self.next_id()
        rows = {new: dict(self.objects.rows.get(label, {}))}
        return self.edit_of("split", new, part, new, f"Split object {label}: {new} is new.", rows)

    # -- applying, undo and redo ----------------------------------------------------
    def apply(self, edit: Edit) -> Edit:
        """Write ``edit`` into the labels (refused if they changed since it was made);
        it becomes the last step to undo, and records its example."""
        if not edit.applies_to(self.labels):
            raise InputError("The labels changed since this edit was made: make it again.")
        edit.apply(self.labels)
        self.record(edit)
        self.done.append(edit)
        self.undone.clear()
        return edit

    def describe(self, edit: Edit) -> Edit:
        """``edit`` with its model work done (its example and its object's
        similarity), on the plane it was made on; the pixels are not touched."""
        return self.lessons.describe(self.handles[edit.plane], edit)

    def record(self, edit: Edit) -> None:
        """What an applied edit changes in the table and teaches (no pixel work); an
        edit written before it was described is recorded again once described."""
        self._keep(edit)
        self.lessons.teach(edit)

    def _keep(self, edit: Edit) -> None:
        self.objects.rows.update(edit.rows)
        self._highest = max(self._highest, edit.label, *edit.rows)
        if edit.kind in ("add", "refine"):
            self.chosen.add(edit.label)
        if edit.kind == "remove":
            self.prompts.pop(edit.label, None)

    def undo(self) -> Edit | None:
        """Take back the last edit (None: nothing to undo); the labels are restored
        bit for bit."""
        if not self.done:
            return None
        edit = self.done.pop()
        edit.revert(self.labels)
        self.lessons.withdraw(edit)
        self.undone.append(edit)
        return edit

    def redo(self) -> Edit | None:
        if not self.undone:
            return None
        edit = self.undone.pop()
        edit.apply(self.labels)
        self._keep(edit)
        self.lessons.retake(edit)
        self.done.append(edit)
        return edit

    def add_at(self, y: float, x: float, plane: tuple[int, ...] | None = None) -> Edit:
        return self.apply(self.propose_add(y, x, plane))

    def remove_at(self, y: float, x: float, plane: tuple[int, ...] | None = None) -> Edit:
        return self.apply(self.propose_remove(y, x, plane))

    def refine(self, label: int, points=(), box=None, plane=None) -> Edit:
        return self.apply(self.propose_refine(label, points, box, plane))

    def merge(self, keep: int, other: int) -> Edit:
        return self.apply(self.propose_merge(keep, other))

    def split(self, first, second, plane: tuple[int, ...] | None = None) -> Edit:
        return self.apply(self.propose_split(first, second, plane))

    # -- the table ------------------------------------------------------------------
    def table(self, plane: np.ndarray | None = None, rows: dict | None = None) -> pd.DataFrame:
        """One row per object of the plane (or of ``plane``, labels of its shape; with a
        run's finish step, of the whole result), with the measurements a run gives;
        ``rows``: those of an edit not applied yet (its new objects' scores)."""
        if plane is None:
            plane = self.labels if self.finish is not None else self.plane_labels
        return self.objects.table(np.asarray(plane), rows)

    # -- edits of masks ---------------------------------------------------------------
    def edit_of(self, kind, label, mask, value, message, rows=None) -> Edit:
        """An edit setting ``value`` on the current plane's ``mask``."""
        masks = {self.plane: mask}
        return Edit.setting(self.labels, masks, value, self.plane, kind, label, message, rows)

    def edit_to(self, plane: np.ndarray, kind: str, message: str, rows=None) -> Edit:
        """The edit that turns the plane into ``plane`` (labels of its shape): every
        changed pixel in one step."""
        made = Edit.turning(self.labels, self.plane, plane, kind, 0, message, rows)
        return replace(made, described=True)


__all__ = ["Edit", "LabelEditor", "NothingToDo"]
