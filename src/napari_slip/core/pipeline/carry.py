"""A stack's planes between full grids: SAM decodes where the previous plane's objects
were, not its whole grid (``StackParams(grid_every=k)``).

Consecutive planes of a z-stack or a time series mostly hold the same objects a little
changed, and SAM's grid spends most of its points on them again and on background
that stays background. So on every k-th plane along the stack's last leading axis (Z,
else T) SAM decodes its full grid, as on a single image; on the planes between, it
decodes:

1. one point inside each object of the previous plane (its proposals, before
   selection: the pixel farthest inside the mask), always;
2. then the grid points that lay inside any of those objects, skipping those inside
   a mask this plane has already kept (``skip_covered``).

Grid points that were background on the previous plane are not decoded: an object
that appears there is found by the next full grid (and linked back to the planes
before it as far as SAM's masks reach). The trade is measured in docs/stacks.md:
time against the share of 3D nuclei recovered with the dense fixture SAM.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from ..params import SamProposalParams
from ..runtime.progress import Progress
from .proposals import Proposals, grid_points, point_list_proposals, upscale_proposals
from .session import digest


@dataclass(frozen=True)
class Carried:
    """What a plane hands the next: a point inside each of its objects, ``(N, 2)``
    pixels (x, y) of the plane's image, and where its objects lie (``(H, W)`` bool)."""

    seeds: np.ndarray
    inside: np.ndarray
    key: str = field(default="", compare=False)


def carried_from(proposals: Proposals) -> Carried:
    """The seeds and footprint of a plane's proposals (see :class:`Carried`)."""
    from scipy import ndimage

    h, w = proposals.shape
    inside = np.zeros((h, w), dtype=bool)
    seeds = np.zeros((len(proposals), 2), dtype=np.float64)
    for i in range(len(proposals)):
        y0, x0, y1, x1 = proposals.boxes[i]
        crop = np.asarray(proposals.masks[i], dtype=bool)
        inside[y0:y1, x0:x1] |= crop
        # The pixel farthest from the border: inside the object even where it is not
        # convex (a centroid can fall outside a crescent).
        depth = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        seeds[i] = (x0 + x + 0.5, y0 + y + 0.5)
    return Carried(seeds, inside, digest(seeds, inside))


def carried_points(carried: Carried, points_per_side: int, shape: tuple[int, int]) -> np.ndarray:
    """The points a plane between full grids decodes, in the image's pixels: the seeds,
    then the grid points (of ``points_per_side``) inside the previous plane's objects."""
    h, w = shape
    grid = grid_points(points_per_side, w, h, coarse_first=False)
    ys = np.clip(grid[:, 1].astype(int), 0, h - 1)
    xs = np.clip(grid[:, 0].astype(int), 0, w - 1)
    return np.concatenate([carried.seeds, grid[carried.inside[ys, xs]]])


@dataclass(frozen=True)
class CarriedSamSource:
    """SAM's masks of the points :func:`carried_points` gives (a proposal source, see
    :mod:`.sources`): the seeds always decoded, the grid points skipped where covered."""

    params: SamProposalParams
    carried: Carried
    name: str = "sam-carried"
    needs_sam: bool = True

    def key(self) -> tuple:
        return ("sam-carried", tuple(sorted(self.params.as_dict().items())), self.carried.key)

    def describe(self) -> dict:
        return {**self.params.as_dict(), "carried_objects": len(self.carried.seeds)}

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        embedding = yield from context.iter_embedding(session, self.params)
        sam = yield from context.iter_load("sam")
        h, w = session.image.shape
        points = carried_points(self.carried, self.params.points_per_side, (h, w))
        sh, sw = embedding.original_size  # SAM's image (smaller with max_side)
        points = points * np.array([[sw / w, sh / h]])
        proposals = yield from point_list_proposals(
            sam.promptable,
            embedding,
            points,
            self.params,
            context.precision,
            skip_covered=True,
            always=len(self.carried.seeds),
        )
        return upscale_proposals(proposals, session.image.shape)


__all__ = ["Carried", "CarriedSamSource", "carried_from", "carried_points"]
