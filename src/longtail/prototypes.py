"""Prototypes estimated from data: covering numbers of each class's features, and the per-class betas they give.

**An extension beyond the paper**, which no public implementation that we know of does. Cui et al. (CVPR 2019)
define ``beta = (N - 1) / N`` with ``N`` the number of "unique prototypes" of a class, then treat beta as one
hyperparameter for every class, tuned by hand. Here ``N_c`` is estimated for each class as a covering number:
the size of a greedy radius-``r`` cover (an epsilon-net) of the class's L2-normalised features, so that

- :func:`estimate_prototypes` gives ``N_c`` (``(C,)``);
- :func:`per_class_betas` gives ``beta_c = (N_c - 1) / N_c``;
- :func:`longtail.weights.per_class_weights` turns them into ``w_c = (1 - beta_c) / (1 - beta_c ** n_c) =
  1 / E_{n_c}(beta_c)``, normalised to sum to ``C``, the class-balanced weights with one beta per class;
- :func:`radius_grid` proposes radii (quantiles of the within-class nearest-neighbour distances), and
  :func:`longtail.tune_beta` chooses one on the validation split (see ``docs/beta_from_data.md`` for whether it
  helps).

The greedy cover visits the points in their given order: a point becomes a centre when no earlier centre lies
within ``r`` of it (closed ball), so the result is deterministic. Distances are computed in float64 in chunks (the
matrix of one chunk against the centres so far), so 6000 x 128 features of one class take well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .checks import as_real_vector, check_int, check_num_classes, check_real

#: Chunk of points whose distances to the centres (or to each other) are computed at once.
CHUNK = 1024
#: Squared distances within this fraction of the points' largest squared norm count as equal (float64 round-off of
#: ``|a|^2 + |b|^2 - 2 a.b``): duplicates are one point at any radius, including 0.
_TOLERANCE = 1e-12

__all__ = [
    "covering_number",
    "estimate_prototypes",
    "nearest_neighbour_distances",
    "per_class_betas",
    "radius_grid",
]


def _as_points(features: Any, name: str = "features") -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D); got shape {tuple(features.shape)}")
    if not (features.is_floating_point() or features.dtype in (torch.int32, torch.int64, torch.int16, torch.int8,
                                                               torch.uint8)):
        raise TypeError(f"{name} must hold real numbers; got dtype {features.dtype}")
    points = features.detach().to(torch.float64)
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} must be finite; got NaN or inf")
    return points


def _normalized(points: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows; a zero row stays zero."""
    return points / torch.linalg.vector_norm(points, dim=1, keepdim=True).clamp_min(torch.finfo(points.dtype).tiny)


def _squared_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _check_radius(radius: Any) -> float:
    return check_real("radius", radius, low=0.0, finite=True)


def covering_number(points: Any, radius: float, *, normalize: bool = True, chunk_size: int = CHUNK) -> int:
    """The size of the greedy radius-``radius`` cover of ``points`` ``(n, d)`` (an epsilon-net), in their order.

    A point becomes a centre when no earlier centre is within ``radius`` of it (Euclidean, closed ball); every
    point is then within ``radius`` of a centre, and the centres are more than ``radius`` apart. Duplicates count
    once at any radius; ``radius = 0`` gives the number of distinct points and a radius at least the diameter gives
    1 (0 for no points). With ``normalize`` (the default) the rows are L2-normalised first (distances in [0, 2]).

    Example:
        >>> covering_number([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], 1.5, normalize=False)
        2
    """
    x = _as_points(points, "points")
    r = _check_radius(radius)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    return _cover(_normalized(x) if normalize else x, r, chunk_size)


def _cover(x: torch.Tensor, radius: float, chunk_size: int) -> int:
    n = x.shape[0]
    if n == 0:
        return 0
    sq = (x * x).sum(1)
    threshold = radius * radius + _TOLERANCE * max(1.0, float(sq.max()))
    centres = x.new_zeros((0, x.shape[1]))
    centres_sq = sq.new_zeros(0)
    for start in range(0, n, chunk_size):
        block, block_sq = x[start : start + chunk_size], sq[start : start + chunk_size]
        covered = torch.zeros(block.shape[0], dtype=torch.bool)
        for c0 in range(0, centres.shape[0], chunk_size):  # the centres of earlier chunks
            d = _squared_distances(block, centres[c0 : c0 + chunk_size], block_sq, centres_sq[c0 : c0 + chunk_size])
            covered |= (d <= threshold).any(1)
        rest, rest_sq = block[~covered], block_sq[~covered]
        m = rest.shape[0]
        if m == 0:
            continue
        near = (_squared_distances(rest, rest, rest_sq, rest_sq) <= threshold).numpy()
        alive = np.ones(m, dtype=bool)
        chosen = np.zeros(m, dtype=bool)
        for i in range(m):  # the greedy pass within the chunk, in order: m <= chunk_size boolean row operations
            if alive[i]:
                chosen[i] = True
                alive[i + 1 :] &= ~near[i, i + 1 :]
        keep = torch.from_numpy(chosen)
        centres = torch.cat([centres, rest[keep]])
        centres_sq = torch.cat([centres_sq, rest_sq[keep]])
    return int(centres.shape[0])


def _class_rows(features: Any, labels: Any, num_classes: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    x = _as_points(features)
    num_classes = check_num_classes(num_classes)
    y = torch.as_tensor(labels).detach().to("cpu")
    if y.dim() != 1 or y.numel() != x.shape[0]:
        raise ValueError(f"labels must have shape ({x.shape[0]},), one per row of features; got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must hold class indices (integers); got dtype {y.dtype}")
    y = y.to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes - 1}]; got values in [{int(y.min())}, {int(y.max())}]")
    return x.cpu(), y, num_classes


def estimate_prototypes(
    features: Any,
    labels: Any,
    num_classes: int,
    radius: float,
    *,
    normalize: bool = True,
    chunk_size: int = CHUNK,
) -> torch.Tensor:
    """The number of unique prototypes ``N_c`` of every class: the greedy radius-``radius`` covering number of the
    class's (L2-normalised) features, in the order they are given (:func:`covering_number`).

    An extension beyond the paper, which leaves ``N`` undefined in practice. A class without samples gets 0.

    Args:
        features: ``(N, D)`` real features (e.g. a frozen backbone's embeddings of the training split).
        labels: ``(N,)`` class indices in ``[0, num_classes)``.
        num_classes: ``C``.
        radius: ``r >= 0``, in the units of the (normalised) features.
        normalize: L2-normalise each feature first (the default; distances then lie in [0, 2]).
        chunk_size: points per distance chunk (memory ``chunk_size**2`` float64s).

    Returns:
        int64 tensor ``(C,)``.

    Example:
        >>> points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
        >>> estimate_prototypes(points, torch.tensor([0, 0, 0, 1, 1]), 3, radius=1.5, normalize=False)
        tensor([2, 1, 0])
    """
    x, y, num_classes = _class_rows(features, labels, num_classes)
    r = _check_radius(radius)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    if normalize:
        x = _normalized(x)
    order = torch.argsort(y, stable=True)  # each class's rows in their given order
    x, y = x[order], y[order]
    bounds = torch.bincount(y, minlength=num_classes).cumsum(0).tolist()
    starts = [0, *bounds[:-1]]
    return torch.tensor([_cover(x[s:e], r, chunk_size) for s, e in zip(starts, bounds)], dtype=torch.int64)


def nearest_neighbour_distances(
    features: Any, labels: Any, num_classes: int, *, normalize: bool = True, chunk_size: int = CHUNK
) -> torch.Tensor:
    """Each sample's distance to its nearest other sample of the same class (float64 ``(N,)``, in the given order;
    ``inf`` for the only sample of its class). Duplicates have distance 0."""
    x, y, num_classes = _class_rows(features, labels, num_classes)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    if normalize:
        x = _normalized(x)
    out = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    for c in range(num_classes):
        index = torch.nonzero(y == c).flatten()
        if index.numel() < 2:
            continue
        points = x[index]
        sq = (points * points).sum(1)
        best = torch.full((points.shape[0],), math.inf, dtype=torch.float64)
        for start in range(0, points.shape[0], chunk_size):
            d = _squared_distances(points[start : start + chunk_size], points, sq[start : start + chunk_size], sq)
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = math.inf  # not its own neighbour
            best[start : start + chunk_size] = d.min(1).values
        out[index] = best.sqrt()
    return out


#: Default quantiles of the within-class nearest-neighbour distances that :func:`radius_grid` turns into radii.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: ... and multiples of the largest of those quantiles, for covers much coarser than the nearest neighbours.
MULTIPLES = (1.5, 2.0, 3.0)


def radius_grid(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    quantiles: Sequence[float] = QUANTILES,
    multiples: Sequence[float] = MULTIPLES,
    normalize: bool = True,
) -> list[float]:
    """Candidate radii: the ``quantiles`` of the within-class nearest-neighbour distances (pooled over classes;
    singletons left out), then ``multiples`` of the largest of them, sorted and distinct, each at most 2 (the
    diameter of the unit sphere; with ``normalize``). Small radii give ``N_c`` close to ``n_c`` (betas close to
    1, weights towards inverse frequency), large ones ``N_c`` close to 1 (betas close to 0, uniform weights)."""
    distances = nearest_neighbour_distances(features, labels, num_classes, normalize=normalize)
    finite = distances[torch.isfinite(distances)]
    if finite.numel() == 0:
        raise ValueError("features must have at least one class with two samples to propose radii; got none")
    qs = [check_real(f"quantiles[{i}]", q, low=0.0, high=1.0) for i, q in enumerate(quantiles)]
    ms = [check_real(f"multiples[{i}]", m, low=0.0, low_open=True, finite=True) for i, m in enumerate(multiples)]
    if not qs:
        raise ValueError("quantiles must hold at least one value in [0, 1]; got none")
    base = torch.quantile(finite, torch.tensor(qs, dtype=torch.float64)).tolist()
    radii = base + [max(base) * m for m in ms]
    if normalize:
        radii = [min(r, 2.0) for r in radii]
    return sorted({float(f"{r:.6g}") for r in radii})


def per_class_betas(prototypes: Any) -> torch.Tensor:
    """``beta_c = (N_c - 1) / N_c`` for ``N_c >= 1`` prototypes per class (float64 ``(C,)``); ``N_c = 1`` gives 0
    (every sample of the class is the same prototype: effective number 1). The paper's definition, per class."""
    n = as_real_vector(prototypes, "prototypes")
    if not bool(torch.isfinite(n).all()) or bool((n < 1).any()):
        raise ValueError(f"prototypes must be >= 1 for every class (a class without samples has no beta); got "
                         f"{n.tolist()}")
    return (n - 1.0) / n
