"""One image's caches, and the candidates that selection works on.

An :class:`ImageSession` holds what was computed for one prepared image: SAM
embeddings (per SAM, precision and working size), proposals (per source) and CLIP
embeddings of their crops (per proposals, crop options and CLIP). The
:class:`Segmenter` keeps a few sessions, least recently used dropped first.
:class:`Candidates` are the output of candidate collection: proposals with their
CLIP embeddings, everything selection needs, so tiles or guided points can feed one
global selection.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..measure import Measuring
from .images import PreparedImage
from .proposals import Proposals


class LRU(OrderedDict):
    """A small least-recently-used mapping."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = max(1, int(maxsize))

    def get_fresh(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


def digest(*arrays: np.ndarray) -> str:
    """A content hash of arrays (shape and dtype included)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.data)
    return h.hexdigest()


class ImageSession:
    """The caches of one prepared image.

    Parameters
    ----------
    image
        The image as the models see it.
    key
        Its content hash.
    """

    def __init__(self, image: PreparedImage, key: str) -> None:
        self.image = image
        self.key = key
        self.embeddings: LRU = LRU(4)
        self.proposals: LRU = LRU(8)
        self.crop_embeddings: LRU = LRU(8)
        #: CLIP patch features for relevance maps (see :mod:`.relevance`).
        self.dense: LRU = LRU(2)
        #: SAM's masks per decoded point, per SAM and decoding options (guided mode).
        self.point_masks: LRU = LRU(2)


@dataclass
class Candidates:
    """Candidate objects of one image, ready for selection.

    Attributes
    ----------
    proposals
        The candidate masks.
    embeddings
        (N, D) L2-normalised CLIP embeddings of their crops.
    clip
        ``(clip spec, precision)`` the embeddings were made with.
    source
        Provenance of the proposals (source name, count, options).
    normalisation
        How the image's intensities were mapped.
    image_key
        Content hash of the prepared image.
    measurements
        (N, M) object measurements for concepts (:mod:`~..concepts.features`), made
        when a concept first needs them and kept for re-selection and corrections.
    measuring
        How the run that made them measures a result's objects (its image, pixel
        sizes, unit): a selection from them adds those columns. None: no measurement.
    """

    proposals: Proposals
    embeddings: np.ndarray
    clip: tuple[str, str]
    source: dict = field(default_factory=dict)
    normalisation: dict = field(default_factory=dict)
    image_key: str = ""
    measurements: np.ndarray | None = field(default=None, repr=False)
    measuring: Measuring | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.proposals)


def open_session(sessions: LRU, image, normalisation: dict, lazy: bool) -> ImageSession:
    """The session of ``image`` (prepared with ``normalisation``), from ``sessions`` or
    new. With ``lazy``, a dask/zarr array stays lazy (a :class:`~.images.LazyImage`)."""
    from .images import LazyImage, is_lazy, prepare_image

    if isinstance(image, LazyImage) or (lazy and is_lazy(image)):
        prepared = LazyImage(image, **normalisation)
        key = prepared.key
    else:
        prepared = prepare_image(image, **normalisation)
        key = digest(prepared.rgb)
    session = sessions.get_fresh(key)
    if session is None:
        session = ImageSession(prepared, key)
        sessions.put(key, session)
    else:
        session.image = prepared  # same pixels; keep the latest provenance
    return session
