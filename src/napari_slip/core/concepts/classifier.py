"""The few-shot classifier of a concept: pure numpy over feature arrays.

Method (chosen because it works from one example per class and needs no iterations):

1. **A feature space fixed by the pool.** Each measurement is standardised with the
   mean and spread of the *pool* (every candidate of the images the examples were given
   on, examples or not), and the CLIP embedding is projected onto the pool's first
   :data:`CLIP_DIMS` principal directions and whitened, so 512 embedding dimensions do
   not drown 22 measurements. The pool's moments are kept (never its objects).
2. **Prototypes with a shared, shrunk variance** (diagonal shrinkage LDA): a class is
   the mean of its examples; all classes share one per-dimension variance, the
   examples' within-class spread shrunk towards a prior of half the pool's spread
   (:data:`PRIOR_VARIANCE`, worth :data:`PRIOR_STRENGTH` examples); a new member's
   spread also counts the uncertainty of a mean of few examples (x (1 + 1/n)). Each
   dimension costs as in Student's t (:data:`DOF`), so one odd measurement cannot
   outvote the rest. From one example per class this is nearest-prototype; with more,
   a regularised discriminant.
3. **"None of them" is possible.** Negative examples are a class of their own (a
   mixture, one component per example: what is not the target need not be one thing);
   and an object less likely under every class than the ``reject`` quantile of the
   class's own members (drawn from the model) is "none" too.
4. **The text as a prior.** Where a class has text, ``logit_scale`` x the cosine of the
   object's embedding to the text (centred over the classes) is added with weight
   1 / (1 + examples of the class): text decides when there are no examples and fades as
   they come.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

#: Principal directions of the CLIP embedding kept (whitened) in the feature space.
CLIP_DIMS = 16
#: The prior within-class variance, as a fraction of the pool's (standardised) variance.
PRIOR_VARIANCE = 0.5
#: How many examples' worth the prior variance counts.
PRIOR_STRENGTH = 4.0
#: Degrees of freedom of the per-dimension Student's t.
DOF = 4.0
#: Standardised features are clipped to this (a feature that never varied in the pool).
CLIP_Z = 10.0


@dataclass
class Pool:
    """Running moments of the objects examples were chosen among."""

    n: int = 0
    m_sum: np.ndarray | None = None
    m_sq: np.ndarray | None = None
    c_sum: np.ndarray | None = None
    c_outer: np.ndarray | None = None

    def add(self, measurements: np.ndarray, clip: np.ndarray) -> None:
        m = np.asarray(measurements, dtype=np.float64)
        c = np.asarray(clip, dtype=np.float64)
        if not len(m):
            return
        if self.m_sum is None:
            self.m_sum, self.m_sq = np.zeros(m.shape[1]), np.zeros(m.shape[1])
            self.c_sum, self.c_outer = np.zeros(c.shape[1]), np.zeros((c.shape[1], c.shape[1]))
        self.n += len(m)
        self.m_sum += m.sum(0)
        self.m_sq += (m**2).sum(0)
        self.c_sum += c.sum(0)
        self.c_outer += c.T @ c
        self.__dict__.pop("_pca", None)

    def clip_pca(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The embeddings' mean, and their covariance's eigenvalues and vectors (largest
        first); computed once per pool state (a correction refits in milliseconds)."""
        cached = self.__dict__.get("_pca")
        if cached is None:
            n = max(self.n, 1)
            mean = self.c_sum / n
            values, vectors = np.linalg.eigh(self.c_outer / n - np.outer(mean, mean))
            order = np.argsort(values)[::-1]
            cached = (mean, values[order], vectors[:, order])
            self.__dict__["_pca"] = cached
        return cached


@dataclass
class Space:
    """The standardised feature space (see the module's method, step 1)."""

    columns: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    clip_mean: np.ndarray | None = None
    basis: np.ndarray | None = None
    clip_scale: np.ndarray | None = None

    @classmethod
    def from_pool(cls, pool: Pool, columns: np.ndarray, use_clip: bool) -> Space:
        n = max(pool.n, 1)
        mean = pool.m_sum[columns] / n
        var = np.maximum(pool.m_sq[columns] / n - mean**2, 0.0)
        scale = np.sqrt(var)
        live = scale >= 1e-6  # a measurement that never varied carries no information
        columns, mean, scale = np.asarray(columns, dtype=np.int64)[live], mean[live], scale[live]
        space = cls(columns, mean, scale)
        if use_clip and pool.n >= 2:
            c_mean, values, vectors = pool.clip_pca()
            k = int(min(CLIP_DIMS, pool.n - 1, len(values)))
            lead = np.maximum(values[:k], 1e-4 * max(values.max(), 1e-12))
            space.clip_mean, space.basis, space.clip_scale = c_mean, vectors[:, :k], np.sqrt(lead)
        return space

    @property
    def dims(self) -> int:
        return len(self.columns) + (0 if self.basis is None else self.basis.shape[1])

    def __call__(self, measurements: np.ndarray, clip: np.ndarray) -> np.ndarray:
        m = np.asarray(measurements, dtype=np.float64)[:, self.columns]
        parts = [(m - self.mean) / self.scale]
        if self.basis is not None:
            c = np.asarray(clip, dtype=np.float64)
            parts.append(((c - self.clip_mean) @ self.basis) / self.clip_scale)
        return np.clip(np.concatenate(parts, axis=1), -CLIP_Z, CLIP_Z)


@dataclass
class Model:
    """A fitted classifier: class prototypes, negatives, the shared variance."""

    means: np.ndarray
    counts: np.ndarray
    var: np.ndarray
    negatives: np.ndarray
    reject: float
    text_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _cost(r2: np.ndarray) -> np.ndarray:
    """Per-dimension cost of a squared standardised residual: Student's t with
    :data:`DOF` degrees of freedom (measurements are heavy-tailed: one odd feature
    must not outvote all the others)."""
    return 0.5 * (DOF + 1) * np.log1p(r2 / DOF)


@functools.lru_cache(maxsize=256)
def member_quantile(q: float, dims: int, draws: int = 20000) -> float:
    """The ``q`` quantile of the summed cost of a class's own members under the model
    (drawn once, seeded: the same for every call)."""
    rng = np.random.default_rng(dims)
    r = rng.standard_t(DOF, size=(draws, max(dims, 1)))
    return float(np.quantile(_cost(r**2).sum(1), q))


def fit(z: np.ndarray, y: np.ndarray, n_classes: int, reject: float = 0.999) -> Model:
    """Fit from standardised features ``z`` (n, K) and labels ``y`` (0..C-1; -1 for a
    negative example)."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    dims = z.shape[1]
    means = np.zeros((n_classes, dims))
    counts = np.zeros(n_classes, dtype=np.int64)
    squares, n_within = np.zeros(dims), 0
    for c in range(n_classes):
        rows = z[y == c]
        counts[c] = len(rows)
        if len(rows):
            means[c] = rows.mean(0)
            squares += ((rows - means[c]) ** 2).sum(0)
            n_within += len(rows) - 1
    var = (squares + PRIOR_STRENGTH * PRIOR_VARIANCE) / (n_within + PRIOR_STRENGTH)
    return Model(
        means=means,
        counts=counts,
        var=var,
        negatives=z[y == -1],
        reject=-member_quantile(reject, dims),
        text_weight=1.0 / (1.0 + counts),
    )


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def logits(model: Model, z: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
    """(N, C + 1) log-odds of each class, and of "none" in the last column.

    ``text``: (N, C) ``logit_scale`` x cosine of each object to each class's text (NaN
    where a class has none), or None.
    """
    z = np.asarray(z, dtype=np.float64)
    n, dims = len(z), z.shape[1] if z.ndim == 2 else 0
    n_classes = len(model.means)
    out = np.zeros((n, n_classes + 1))
    typical = -member_quantile(0.5, dims)  # no example: as likely as a typical member
    has_text = np.zeros(n_classes, dtype=bool)
    if text is not None and n:
        has_text = ~np.isnan(np.asarray(text, dtype=np.float64)[0])
    for c in range(n_classes):
        if not model.counts[c] and not has_text[c]:
            out[:, c] = -1e9  # neither examples nor text (e.g. after an undo): never chosen
        elif model.counts[c]:
            # The predictive spread of a new member: the class's and its mean's.
            var = model.var * (1 + 1 / model.counts[c])
            out[:, c] = -_cost(((z - model.means[c]) ** 2) / var).sum(1)
        else:
            out[:, c] = typical
    none = [np.full(n, model.reject)]
    if len(model.negatives):
        d = _cost(((z[:, None, :] - model.negatives[None]) ** 2) / (2 * model.var)).sum(2)
        none.append(_logsumexp(-d, axis=1) - np.log(len(model.negatives)))
    out[:, -1] = _logsumexp(np.stack(none, axis=1), axis=1)
    if text is not None and n_classes:
        text = np.asarray(text, dtype=np.float64)
        has = ~np.isnan(text[0]) if n else np.zeros(n_classes, dtype=bool)
        if has.sum() >= 1 and n:
            centred = text[:, has] - text[:, has].mean(axis=1, keepdims=True)
            out[:, :n_classes][:, has] += centred * model.text_weight[has]
    return out


#: The most examples held out one at a time to score a feature choice: beyond it, an
#: even spread of this many (the choice's cost stops growing with the examples).
LOO_MAX = 256
#: Held-out examples scored together (bounds the memory of the negatives' distances).
LOO_BLOCK = 32


def loo_loss(z: np.ndarray, y: np.ndarray, n_classes: int, reject: float) -> float | None:
    """Leave-one-out log-loss of :func:`fit` on its own examples (None: too few, i.e.
    fewer than two labels with two examples each): the mean over the examples (at most
    :data:`LOO_MAX` of them, evenly spread) of the log-loss of each under the model fitted
    to all the others. Computed in closed form (the class means, counts, the shared
    variance and the negatives without that example), as :func:`fit` would give."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    _, counts = np.unique(y, return_counts=True)
    if (counts >= 2).sum() < 2:
        return None
    model = fit(z, y, n_classes, reject)
    dims = z.shape[1]
    squares = np.zeros(dims)
    for c in range(n_classes):
        if model.counts[c]:
            squares += ((z[y == c] - model.means[c]) ** 2).sum(0)
    n_within = int(sum(max(int(n) - 1, 0) for n in model.counts))
    held = np.arange(len(y))
    if len(held) > LOO_MAX:
        held = np.unique(np.linspace(0, len(y) - 1, LOO_MAX).round().astype(np.int64))
    negatives = np.flatnonzero(y == -1)
    loss = 0.0
    for start in range(0, len(held), LOO_BLOCK):
        rows = held[start : start + LOO_BLOCK]
        loss += _held_out_loss(z, y, rows, model, squares, n_within, negatives)
    return loss / len(held)


def _held_out_loss(z, y, rows, model: Model, squares, n_within: int, negatives) -> float:
    """The summed log-loss of examples ``rows``, each under the model without it."""
    n_classes = len(model.means)
    zi, yi = z[rows], y[rows]
    n = len(rows)
    counts = np.broadcast_to(model.counts, (n, n_classes)).copy()
    means = np.broadcast_to(model.means, (n, *model.means.shape)).copy()
    ss = np.broadcast_to(squares, zi.shape).copy()
    within = np.full(n, n_within, dtype=np.float64)
    member = yi >= 0
    idx = np.flatnonzero(member)
    c = yi[idx]
    nc = model.counts[c].astype(np.float64)
    alone = nc <= 1  # its class's only example: left out of the loss, as fit would see
    ok = idx[~alone]
    c_ok, nc_ok = c[~alone], nc[~alone]
    diff = zi[ok] - model.means[c_ok]
    means[ok, c_ok] = (nc_ok[:, None] * model.means[c_ok] - zi[ok]) / (nc_ok[:, None] - 1)
    counts[ok, c_ok] -= 1
    ss[ok] -= (nc_ok / (nc_ok - 1))[:, None] * diff**2
    within[ok] -= 1
    var = (np.maximum(ss, 0.0) + PRIOR_STRENGTH * PRIOR_VARIANCE) / (
        within[:, None] + PRIOR_STRENGTH
    )
    out = np.empty((n, n_classes + 1))
    for k in range(n_classes):
        spread = var * (1 + 1 / np.maximum(counts[:, k], 1))[:, None]
        cost = -_cost(((zi - means[:, k]) ** 2) / spread).sum(1)
        out[:, k] = np.where(counts[:, k] > 0, cost, -1e9)
    none = np.full(n, model.reject)
    if len(negatives):
        d = _cost(((zi[:, None, :] - z[negatives][None]) ** 2) / (2 * var[:, None, :])).sum(2)
        itself = rows[:, None] == negatives[None, :]  # a negative is not its own neighbour
        d = np.where(itself, 1e300, d)  # (finite: exp gives 0, and no inf - inf)
        others = np.maximum(len(negatives) - itself.sum(1), 1)
        none = np.logaddexp(none, _logsumexp(-d, axis=1) - np.log(others))
    out[:, -1] = none
    probs = probabilities(out)
    target = np.where(yi >= 0, yi, n_classes)
    p = probs[np.arange(n), target]
    # Skipped as the exact loss skips them: the only example of its class (or the
    # only negative), which no model without it can predict.
    lone_negative = (yi == -1) & (len(negatives) <= 1)
    skip = np.zeros(n, dtype=bool)
    skip[idx[alone]] = True
    skip |= lone_negative
    return float(-np.log(np.maximum(p[~skip], 1e-9)).sum())


def probabilities(logit: np.ndarray) -> np.ndarray:
    """Softmax over the classes and "none"."""
    logit = np.asarray(logit, dtype=np.float64)
    e = np.exp(logit - logit.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


__all__ = [
    "CLIP_DIMS",
    "LOO_MAX",
    "Model",
    "Pool",
    "Space",
    "fit",
    "logits",
    "loo_loss",
    "probabilities",
]
