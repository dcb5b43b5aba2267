"""SAM tile by tile: large images at full resolution, objects merged across tile borders.

Without tiles an image longer than ``max_side`` is shrunk before SAM (whose encoder
then sees it at 1,024 px), so objects of a few pixels vanish. :class:`TiledSamSource`
cuts the image into overlapping tiles of SAM's own input size, runs SAM's automatic
masks on each at full resolution, and merges the masks across tiles:

- Every tile is read on its own (:meth:`~.images.LazyImage.read`), so a dask or zarr
  image is never held whole; memory is bounded by a tile plus the masks found.
- Two masks from neighbouring tiles are one object when they agree inside the band
  the two tiles share: their IoU *restricted to that band* is above ``merge_iou``.
  This one rule merges both duplicates (an object whole in both tiles) and pieces
  (an object cut by a tile border: each tile sees the part on its side, and both see
  the same part inside the band); the merged mask is the union. With an overlap wider
  than the largest object, every object is whole in at least one tile.
- Selection then runs once over all merged candidates: ``best`` and ``topk`` are
  decisions over the whole image, not per tile.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from ..params import SamProposalParams, TileParams
from ..runtime.progress import Progress
from .proposals import Proposals, sam_proposals

Box = tuple[int, int, int, int]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride ``tile - overlap``, the last tile flush."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return sorted({*starts, length - tile})


def tile_grid(shape: tuple[int, int], tile: int, overlap: int) -> list[Box]:
    """Tiles ``(y0, x0, y1, x1)`` (exclusive ends) covering an image of ``shape``.

    Raises
    ------
    InputError
        If the overlap is not less than the tile: the tiles would not advance (all but
        one corner tile would stay unseen).
    """
    if overlap >= tile:
        raise InputError(
            f"overlap ({overlap} px) must be less than the tile ({tile} px): lower the "
            "overlap or raise the tile size."
        )
    h, w = shape
    return [
        (y, x, min(h, y + tile), min(w, x + tile))
        for y in tile_starts(h, tile, overlap)
        for x in tile_starts(w, tile, overlap)
    ]


def _intersection(a, b) -> Box | None:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    return (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


def _window(box, mask, region) -> np.ndarray:
    """``mask`` (cropped to ``box``) as a boolean array over ``region``."""
    out = np.zeros((region[2] - region[0], region[3] - region[1]), dtype=bool)
    inter = _intersection(box, region)
    if inter is not None:
        y0, x0, y1, x1 = inter
        out[y0 - region[0] : y1 - region[0], x0 - region[1] : x1 - region[1]] = mask[
            y0 - box[0] : y1 - box[0], x0 - box[1] : x1 - box[1]
        ]
    return out


def _neighbours(tiles: list[Box]) -> list[tuple[int, int]]:
    """Pairs ``a < b`` of tiles that overlap (a tile's 8 neighbours, not all pairs)."""
    t = np.asarray(tiles, dtype=np.int64).reshape(-1, 4)
    pairs = []
    for a in range(len(t) - 1):
        rest = t[a + 1 :]
        lo = np.maximum(t[a, :2], rest[:, :2])
        hi = np.minimum(t[a, 2:], rest[:, 2:])
        pairs += [(a, a + 1 + int(k)) for k in np.flatnonzero((lo < hi).all(1))]
    return pairs


def shift(props: Proposals, tile: Box, shape: tuple[int, int]) -> Proposals:
    """Proposals of a tile in the coordinates of the whole image."""
    offset = np.array([tile[0], tile[1], tile[0], tile[1]], dtype=np.int64)
    return Proposals(
        tuple(shape),
        props.boxes.reshape(-1, 4) + offset,
        props.masks,
        props.quality,
        props.source_ids,
        props.decoded_points,
    )


def merge_tiles(
    tile_props: list[Proposals],
    tiles: list[Box],
    shape: tuple[int, int],
    merge_iou: float = 0.7,
    nms_thresh: float | None = None,
) -> Proposals:
    """Merge proposals of overlapping tiles (already in image coordinates) into one set.

    Masks of two different tiles whose IoU inside the tiles' shared band is above
    ``merge_iou`` are one object (transitively, one partner per mask and tile pair).
    Its mask is the surest copy that no tile edge cut off, or, when every copy
    touches a tile edge inside the image, the union of the pieces; its quality is the
    best of its copies. ``source_ids`` of the result counts the copies merged.

    With ``nms_thresh``, box non-maximum suppression then runs over the whole image
    (as SAM does across its crops), uncut copies first: near-duplicates of two tiles
    that the band rule left apart are dropped.
    """
    owner = np.concatenate(
        [np.full(len(p), t, dtype=np.int64) for t, p in enumerate(tile_props)] or [np.zeros(0)]
    ).astype(np.int64)
    boxes = np.concatenate([p.boxes.reshape(-1, 4) for p in tile_props] or [np.zeros((0, 4))])
    boxes = boxes.astype(np.int64)
    masks = [m for p in tile_props for m in p.masks]
    quality = np.concatenate([p.quality for p in tile_props] or [np.zeros(0)]).astype(np.float32)
    n = len(masks)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    starts = np.concatenate([[0], np.cumsum([len(p) for p in tile_props])]).astype(np.int64)
    by_tile = [np.arange(starts[t], starts[t + 1]) for t in range(len(tiles))]
    for a, b in _neighbours(tiles):
        band = _intersection(tiles[a], tiles[b])
        if band is None or not len(by_tile[a]) or not len(by_tile[b]):
            continue
        ia = [i for i in by_tile[a] if _intersection(boxes[i], band)]
        ib = [j for j in by_tile[b] if _intersection(boxes[j], band)]
        if not ia or not ib:
            continue
        ba, bb = boxes[ia], boxes[ib]
        lo = np.maximum(ba[:, None, :2], bb[None, :, :2])
        hi = np.minimum(ba[:, None, 2:], bb[None, :, 2:])
        touching = (lo < hi).all(-1)
        pairs = []
        for ka, kb in zip(*np.nonzero(touching), strict=True):
            i, j = ia[ka], ib[kb]
            region = _intersection(
                band,
                (
                    min(boxes[i][0], boxes[j][0]),
                    min(boxes[i][1], boxes[j][1]),
                    max(boxes[i][2], boxes[j][2]),
                    max(boxes[i][3], boxes[j][3]),
                ),
            )
            mi, mj = _window(boxes[i], masks[i], region), _window(boxes[j], masks[j], region)
            union = int(np.count_nonzero(mi | mj))
            score = np.count_nonzero(mi & mj) / union if union else 0.0
            if score > merge_iou:
                pairs.append((score, i, j))
        # One partner per mask and tile pair, best agreement first: a mask of two
        # touching objects cannot swallow both of their single masks.
        used: set[int] = set()
        for _score, i, j in sorted(pairs, reverse=True):
            if i in used or j in used:
                continue
            used.update((i, j))
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)

    # A mask that reaches a tile edge inside the image may be cut off there.
    h, w = shape
    cut = np.zeros(n, dtype=bool)
    for i in range(n):
        ty0, tx0, ty1, tx1 = tiles[owner[i]]
        y0, x0, y1, x1 = boxes[i]
        cut[i] = (
            (y0 <= ty0 and ty0 > 0)
            or (x0 <= tx0 and tx0 > 0)
            or (y1 >= ty1 and ty1 < h)
            or (x1 >= tx1 and tx1 < w)
        )
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out_boxes, out_masks, out_quality, pieces, uncut = [], [], [], [], []
    for members in groups.values():
        whole = [i for i in members if not cut[i]]
        uncut.append(bool(whole))
        if len(members) == 1 or whole:
            # A copy that no tile edge cut is the object: keep the surest one as it is.
            i = max(whole or members, key=lambda k: quality[k])
            out_boxes.append(tuple(boxes[i]))
            out_masks.append(masks[i])
        else:  # only pieces: the object is their union
            mb = boxes[members]
            box = (mb[:, 0].min(), mb[:, 1].min(), mb[:, 2].max(), mb[:, 3].max())
            mask = np.zeros((box[2] - box[0], box[3] - box[1]), dtype=bool)
            for i in members:
                y0, x0, y1, x1 = boxes[i]
                mask[y0 - box[0] : y1 - box[0], x0 - box[1] : x1 - box[1]] |= masks[i]
            out_boxes.append(box)
            out_masks.append(mask)
        out_quality.append(float(quality[members].max()))
        pieces.append(len(members))
    keep = list(range(len(out_masks)))
    if nms_thresh is not None and len(out_masks) > 1:
        import torch
        from torchvision.ops import nms

        b = torch.as_tensor(np.asarray(out_boxes, dtype=np.float32))[:, [1, 0, 3, 2]]
        score = torch.as_tensor(
            np.asarray(out_quality, dtype=np.float32) + np.asarray(uncut, dtype=np.float32)
        )
        keep = sorted(nms(b, score, nms_thresh).tolist())
    return Proposals(
        tuple(shape),
        np.asarray([out_boxes[k] for k in keep], dtype=np.int64).reshape(-1, 4),
        [out_masks[k] for k in keep],
        np.asarray([out_quality[k] for k in keep], dtype=np.float32),
        np.asarray([pieces[k] for k in keep], dtype=np.int64),
        sum(p.decoded_points for p in tile_props),
    )


def one_bar(gen, t: int, n: int, what: str):
    """Forward a step's events as progress of tile ``t`` of ``n`` (one bar for all)."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        # Cancelling still stops between the decoder's batches.
        yield Progress("tiles", t, n, f"{what}: {event.message}", heavy=event.heavy)


def tiled_key(sam: SamProposalParams, tiles: TileParams) -> tuple[tuple, tuple]:
    """The parts of SAM's and tiling options that change a tiled run's proposals
    (tiles are never shrunk, so not ``max_side``; not whether tiles are on)."""
    params = sam.as_dict()
    params.pop("max_side")
    tiling = tiles.as_dict()
    tiling.pop("tiles")
    return tuple(sorted(params.items())), tuple(sorted(tiling.items()))


@dataclass(frozen=True)
class TiledSamSource:
    """SAM's automatic masks tile by tile, merged across tiles (see the module doc)."""

    params: SamProposalParams = field(default_factory=SamProposalParams)
    tiles: TileParams = field(default_factory=TileParams)
    name: str = "sam-tiles"
    needs_sam: bool = True

    def key(self) -> tuple:
        return ("sam-tiles", *tiled_key(self.params, self.tiles))

    def describe(self) -> dict:
        return {**self.params.as_dict(), **self.tiles.as_dict()}

    def generate(self, session, context) -> Generator[Progress, None, Proposals]:
        sam = yield from context.iter_load("sam")
        shape = session.image.shape
        size = self.tiles.checked_size(sam.promptable.input_size)
        tiles = tile_grid(shape, size, self.tiles.overlap_for(size))
        n = len(tiles)
        found: list[Proposals] = []
        funnels: list = []
        count = 0
        for t, box in enumerate(tiles):
            what = f"tile {t + 1}/{n}"
            yield Progress("tiles", t, n, f"{what}: SAM image encoder", heavy=True)
            embedding = yield from one_bar(
                context.iter_embedding(session, self.params, region=box), t, n, what
            )
            props = yield from one_bar(
                sam_proposals(sam.promptable, embedding, self.params, context.precision),
                t,
                n,
                what,
            )
            found.append(shift(props, box, shape))
            funnels.append(props.funnel)
            count += len(props)
            yield Progress("tiles", t + 1, n, f"{what}: {count} masks so far")
        yield Progress("tiles", n, n, f"merging {count} masks across tile borders")
        merged = merge_tiles(
            found, tiles, shape, self.tiles.merge_iou, nms_thresh=self.params.box_nms_thresh
        )
        funnels = [f for f in funnels if f]
        if not funnels:
            return merged
        funnel = {**funnels[0]}  # every tile's filter counts, summed (thresholds shared)
        for key in ("points", "masks", "below_iou", "unstable", "too_small", "overlapping"):
            funnel[key] = sum(f.get(key, 0) for f in funnels)
        return replace(merged, funnel={**funnel, "kept": len(merged)})


__all__ = ["TiledSamSource", "merge_tiles", "one_bar", "shift", "tile_grid"]
