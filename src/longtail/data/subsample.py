"""Long-tailed subsampling of a labelled dataset.

The protocol (Cui et al. 2019, Cao et al. 2019 "LDAM", and everyone since on CIFAR-LT):

* Exponential profile: class ``i`` keeps ``int(n_max * imbalance ** (-i / (C - 1)))`` images, so class 0 is the
  head (``n_max`` images) and class ``C - 1`` the tail (about ``n_max / imbalance``).
* Step profile: the head half of the classes keeps ``n_max``, the tail half ``int(n_max / imbalance)``.
* An optional balanced validation split (the CDB protocol holds out the last 25 images of every class) is carved
  out *before* the imbalance is applied, so it never depends on the imbalance factor or the seed.
* The training subset of each class is a seeded random draw from that class's remaining images.

Only index bookkeeping happens here; apply the indices to any dataset (e.g. ``LabelledImages.subset``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_choice, check_int, check_num_classes, check_real

__all__ = ["PROFILES", "LongTailedSplit", "long_tailed_counts", "long_tailed_indices"]

#: Accepted values of the ``profile`` argument.
PROFILES: tuple[str, ...] = ("exp", "step")


def long_tailed_counts(num_classes: int, n_max: int, imbalance: float, profile: str = "exp") -> list[int]:
    """Number of training images each class keeps under a long-tailed profile.

    Args:
        num_classes: ``C >= 1``.
        n_max: images kept by the head class (class 0), ``>= 1``.
        imbalance: ``rho = n_max / n_min >= 1``; ``1`` gives a balanced ``[n_max] * C``.
        profile: ``"exp"``: class ``i`` keeps ``int(n_max * rho ** (-i / (C - 1)))`` (the CIFAR-LT formula, which
            reproduces the published CIFAR-10-LT / CIFAR-100-LT sizes exactly). ``"step"``: the first
            ``C // 2`` classes keep ``n_max`` and the remaining ``C - C // 2`` keep ``int(n_max / rho)``; with an
            odd ``C`` the tail half is therefore the larger one.

    Returns:
        A list of ``C`` non-increasing ints. With ``C == 1`` both profiles return ``[n_max]`` (a lone class is the
        head).

    Raises:
        TypeError: for non-integer ``num_classes`` / ``n_max`` or a non-real ``imbalance``.
        ValueError: for ``num_classes < 1``, ``n_max < 1``, ``imbalance`` < 1 / NaN / inf, an unknown profile, or
            when a class would keep 0 images (``n_max`` too small for ``imbalance``): every class must keep at
            least one image, otherwise it silently disappears from the training set.
    """
    c = check_num_classes(num_classes)
    n = check_int("n_max", n_max, low=1)
    rho = check_real("imbalance", imbalance, low=1.0, finite=True)
    prof = check_choice("profile", profile, PROFILES)

    if c == 1:
        return [n]
    if prof == "exp":
        # Kept literally as published (float power, then truncation) so totals match the papers to the image.
        counts = [int(n * rho ** (-i / (c - 1))) for i in range(c)]
    else:
        head = c // 2
        counts = [n] * head + [int(n / rho)] * (c - head)
    empty = [i for i, k in enumerate(counts) if k < 1]
    if empty:
        raise ValueError(
            f"n_max must be at least about the imbalance factor (n_max >= {math.ceil(rho)}) so that every class "
            f"keeps an image; got n_max={n} with imbalance {rho} ({prof} profile), which leaves classes {empty} "
            "with 0 images"
        )
    return counts


@dataclass(frozen=True, eq=False)
class LongTailedSplit:
    """Indices of a long-tailed training subset and a balanced validation split.

    Attributes:
        train_indices: int64 ``(N_train,)``, indices into the original dataset, sorted ascending (dataset order).
        val_indices: int64 ``(N_val,)``, sorted ascending; empty when ``val_per_class == 0``. Disjoint from
            ``train_indices``.
        counts: int64 ``(C,)``, training images per class (``counts[c] == (labels[train_indices] == c).sum()``).
        val_counts: int64 ``(C,)``, validation images per class (all equal to ``val_per_class``).
    """

    train_indices: torch.Tensor
    val_indices: torch.Tensor
    counts: torch.Tensor
    val_counts: torch.Tensor

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.counts.numel())

    @property
    def imbalance(self) -> float:
        """Realised imbalance ``max(counts) / min(counts)`` (truncation makes it differ slightly from the input)."""
        return float(self.counts.max()) / float(self.counts.min())


def _labels_to_tensor(labels: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    """Return ``labels`` as a 1-D int64 CPU tensor, rejecting float/bool/complex labels and negative values."""
    if isinstance(labels, torch.Tensor):
        t = labels.detach()
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise TypeError(f"labels must have an integer dtype; got {t.dtype}")
        t = t.to(device="cpu", dtype=torch.int64)
    else:
        if isinstance(labels, (str, bytes)):
            raise TypeError(f"labels must be a tensor, ndarray or sequence of ints; got {type(labels).__name__}")
        arr = np.asarray(labels)
        if arr.size == 0 and arr.dtype.kind == "f":
            # np.asarray([]) is float64; an empty list is still a valid (empty) integer sequence.
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers; got an array of dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"labels must fit in int64; got a maximum of {int(arr.max())}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
    if t.dim() != 1:
        raise ValueError(f"labels must be 1-D (N,); got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("labels must hold at least one labelled example per class; got empty labels")
    lowest = int(t.min())
    if lowest < 0:
        raise ValueError(f"labels must be >= 0; got a minimum of {lowest}")
    return t


def long_tailed_indices(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    imbalance: float,
    profile: str = "exp",
    *,
    n_max: int | None = None,
    seed: int = 0,
    val_per_class: int = 0,
    num_classes: int | None = None,
) -> LongTailedSplit:
    """Draw a long-tailed training subset (and optionally a balanced validation split) from a labelled dataset.

    Steps:

    1. Validation: for every class, the **last** ``val_per_class`` images of that class *in dataset order* (the
       CDB CIFAR protocol: the last 25 images of every class) are held out. This happens before the imbalance is
       applied and is independent of ``seed``, so the validation split is balanced and identical across imbalance
       factors and seeds.
    2. Quotas: ``long_tailed_counts(C, n_max, imbalance, profile)``; class 0 is the head.
    3. Training: for every class, a uniformly random subset of its remaining images of size ``quota[c]``, drawn
       with a ``torch.Generator`` seeded with ``seed`` (same inputs, seed and torch version -> same indices).

    Args:
        labels: ``(N,)`` integer class labels (tensor, ndarray or sequence), values in ``[0, C)``.
        imbalance: ``rho = n_max / n_min >= 1``.
        profile: ``"exp"`` or ``"step"`` (see :func:`long_tailed_counts`).
        n_max: images kept by the head class. Default: the smallest per-class count left after the validation
            split, i.e. the largest ``n_max`` every class can supply (5000 for the CIFAR-10 train set without a
            validation split, 4975 with ``val_per_class=25``).
        seed: seed of the generator that draws the training subset.
        val_per_class: validation images held out per class, ``>= 0``.
        num_classes: ``C``. Default ``max(labels) + 1``. Every class in ``[0, C)`` must have images.

    Returns:
        A :class:`LongTailedSplit` with sorted ``train_indices`` / ``val_indices`` and per-class counts.

    Raises:
        TypeError: labels that are not integers, non-int ``seed`` / ``n_max`` / ``val_per_class`` /
            ``num_classes``.
        ValueError: labels not 1-D, empty or negative, a label ``>= num_classes``, ``imbalance`` < 1 or NaN, an
            unknown ``profile``, or a class with fewer images than its training quota plus ``val_per_class``.
    """
    y = _labels_to_tensor(labels)
    rho = check_real("imbalance", imbalance, low=1.0, finite=True)
    prof = check_choice("profile", profile, PROFILES)
    val = check_int("val_per_class", val_per_class, low=0)
    seed = check_int("seed", seed)
    top = int(y.max())
    if num_classes is None:
        c = top + 1
    else:
        c = check_num_classes(num_classes)
        if top >= c:
            raise ValueError(f"labels must be in [0, num_classes={c}); got a maximum label of {top}")

    totals = torch.bincount(y, minlength=c)
    # A stable sort keeps each class's indices in dataset order, which defines "the last images of a class".
    order = torch.argsort(y, stable=True)
    per_class = torch.split(order, totals.tolist())
    available = [int(k) - val for k in totals.tolist()]

    short = [(i, int(totals[i])) for i in range(c) if available[i] < 1]
    if short:
        raise ValueError(
            f"every class must have more than val_per_class={val} images so that at least one is left for "
            f"training; got (class, images) pairs that fall short: {short[:10]}{' ...' if len(short) > 10 else ''}"
        )

    head = min(available) if n_max is None else check_int("n_max", n_max, low=1)
    quotas = long_tailed_counts(c, head, rho, prof)
    for i, (quota, have) in enumerate(zip(quotas, available)):
        if quota > have:
            raise ValueError(
                f"class {i} must have {quota} training images + {val} validation images = {quota + val} "
                f"(n_max={head}, imbalance={rho}, profile={prof!r}); got only {int(totals[i])} in the dataset"
            )

    generator = torch.Generator().manual_seed(seed)
    train_parts: list[torch.Tensor] = []
    val_parts: list[torch.Tensor] = []
    for idx, quota, have in zip(per_class, quotas, available):
        pool, held_out = idx[:have], idx[have:]
        val_parts.append(held_out)
        # randperm over every candidate (not just the first `quota`) so the draw is uniform over subsets.
        train_parts.append(pool[torch.randperm(have, generator=generator)[:quota]])

    train_idx = torch.sort(torch.cat(train_parts)).values
    val_idx = torch.sort(torch.cat(val_parts)).values
    return LongTailedSplit(
        train_indices=train_idx,
        val_indices=val_idx,
        counts=torch.tensor(quotas, dtype=torch.int64),
        val_counts=torch.full((c,), val, dtype=torch.int64),
    )
