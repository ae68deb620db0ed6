r"""Class-wise Difficulty-Balanced (CDB) weights (Sinha, Ohashi, Nakamura, ACCV 2020).

A class's weight follows how hard the model currently finds it, not how many training samples it
has. After every epoch the model is evaluated (eval mode) on a held-out, labelled validation split
the loss never trains on, and with :math:`A_c` the top-1 accuracy of class :math:`c`:

.. math::
    d_c = 1 - A_c, \qquad w_c = C \, \frac{d_c^{\tau}}{\sum_k d_k^{\tau}}

The weights are constants for the next epoch; they start at 1 (the first epoch is plain
cross-entropy). The loss itself is :func:`longtail.functional.class_balanced_loss` with these
weights: ``loss="softmax"`` (CDB-CE) or ``loss="softmax_focal"`` (CDB-Focal, softmax focal loss with
``alpha = w``); :class:`longtail.losses.CDBLoss` keeps the weights in a buffer.

This module holds the pieces: :func:`dynamic_tau`, :func:`cdb_weights`, :class:`ClassDifficulty`
(per-class correct/total counts from validation batches, summed over processes under data
parallelism: a :class:`longtail.metrics.ConfusionMeter`, so the metrics' counter), and
:class:`TrainingDifficultyEMA`, an extension that is **not in the paper**. ``tau`` and the
accuracies are checked by :func:`longtail.checks.check_tau` and
:func:`longtail.checks.as_class_accuracy`.

The stable CDB weights (**extensions beyond the paper**, used by
:class:`longtail.losses.StableCDBLoss`; ``docs/cdb_stable.md`` says why and what they measure):

- :func:`posterior_accuracy` and :func:`estimated_accuracy`: a Beta-Binomial posterior mean of each
  class's accuracy, ``A_c = (correct_c + a) / (n_c + a + b)``, so that 25 validation images never
  give a difficulty of exactly 0 or 1; optionally from the confidence (the mean probability of the
  true class) instead of the top-1 hits;
- :func:`damped_weights` and :func:`bound_ratio`: an exponential moving average of the weights
  towards each new target and a bound on the largest / smallest weight, so one epoch cannot flip
  the whole vector (the paper's weights oscillate with period 2 on Fashion-MNIST-LT).

A typical epoch loop::

    difficulty = ClassDifficulty(num_classes).to(device)
    criterion = CDBLoss(num_classes, tau="dynamic").to(device)
    for epoch in range(epochs):
        train_one_epoch(model, criterion)
        model.eval()
        difficulty.reset()
        with torch.no_grad():
            for x, y in val_loader:
                difficulty.update(model(x), y)
        difficulty.all_reduce()  # sums the counts over processes; a no-op without torch.distributed
        criterion.update_from(difficulty)
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import nn

from .checks import (
    DYNAMIC,
    as_class_accuracy,
    as_real_vector,
    check_choice,
    check_ignore_index,
    check_max_ratio,
    check_momentum,
    check_num_classes,
    check_real,
    check_tau,
)
from .confusion import all_reduce_sum, confusion_counts
from .metrics import ConfusionMeter

# The paper's (and the ImageNet code's) constant in b = max A / (min A + 0.01) - 1.
_DYNAMIC_EPS = 0.01

# What a class's accuracy is measured by: its top-1 hits, or the probability the model gives its true class.
DIFFICULTIES = ("accuracy", "confidence")

# The defaults of the stable CDB loss (an extension beyond the paper), chosen by the final validation balanced
# accuracy of a 12-run sweep on Fashion-MNIST-LT (docs/cdb_stable.md; the test set was not used): Laplace's prior,
# the confidence difficulty, an EMA step of 0.25 and a largest / smallest weight ratio of 16.
STABLE_PRIOR = 1.0
STABLE_DIFFICULTY = "confidence"
STABLE_MOMENTUM = 0.25
STABLE_MAX_RATIO = 16.0

__all__ = [
    "DIFFICULTIES",
    "ClassDifficulty",
    "DifficultySource",
    "STABLE_DIFFICULTY",
    "STABLE_MAX_RATIO",
    "STABLE_MOMENTUM",
    "STABLE_PRIOR",
    "TrainingDifficultyEMA",
    "bound_ratio",
    "cdb_weights",
    "damped_weights",
    "dynamic_tau",
    "estimated_accuracy",
    "posterior_accuracy",
]


# --- tau and weights -----------------------------------------------------------------------------


def dynamic_tau(class_accuracy: Any) -> float:
    r"""The paper's dynamic exponent: :math:`\tau = 2\,\sigma(b)`, :math:`b = \max_c A_c / (\min_c A_c + 0.01) - 1`.

    ``tau`` grows with the spread between the best and the worst class: equal accuracies give
    ``b`` in ``[-1, 0)`` and ``tau`` in ``[2 sigma(-1), 1) = [0.538, 1)``; a perfect class next to a
    hopeless one gives ``b = 99`` and ``tau`` -> 2 (exactly 2.0 in float64). So ``tau`` lies in
    ``[0.538, 2]``, the paper's (0.54, 2).

    This is the form of the paper and of the authors' ImageNet code. The authors' CIFAR loss class
    computes a second, inconsistent "dynamic" tau, ``sigmoid(max / (min + 0.01))``, whose range is
    [0.5, 1): it can never reach the exponents above 1 that the paper reports and that sharpen the
    weights when the classes are far apart, and it disagrees with the paper's equation. We follow
    the paper and the ImageNet code.

    Args:
        class_accuracy: per-class accuracies in ``[0, 1]``, shape ``(C,)`` (list, array or tensor).
            NaN entries (classes absent from the validation data) are left out of the max and min;
            at least one class must be measured.

    Returns:
        ``tau`` as a Python float.

    Example:
        >>> round(dynamic_tau([0.9, 0.6, 0.3]), 6)
        1.740512
        >>> round(dynamic_tau([0.5, 0.5]), 6)
        0.990196
    """
    acc = as_class_accuracy(class_accuracy, allow_missing=True)
    measured = acc[~torch.isnan(acc)]
    high, low = float(measured.max()), float(measured.min())
    b = high / (low + _DYNAMIC_EPS) - 1.0
    # b >= -1, so exp(-b) <= e: no overflow in this form of the sigmoid.
    return 2.0 / (1.0 + math.exp(-b))


def _check_previous(previous: Any, num_classes: int, name: str = "previous") -> torch.Tensor:
    prev = as_real_vector(previous, name)
    if prev.numel() != num_classes:
        raise ValueError(f"{name} must have {num_classes} weights, one per class; got {prev.numel()}")
    if not bool(torch.isfinite(prev).all()) or bool((prev < 0).any()):
        raise ValueError(f"{name} must hold finite, non-negative weights; got {prev.tolist()}")
    return prev


def cdb_weights(
    class_accuracy: Any,
    tau: float | str = 1.5,
    *,
    floor: float = 0.0,
    previous: Any = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""CDB class weights :math:`w_c = C\, d_c^{\tau} / \sum_k d_k^{\tau}` with difficulty :math:`d_c = 1 - A_c`.

    Computed in float64 and rescaled so that ``sum(w) == C`` (the unweighted loss's scale).

    Defined outcomes where the paper's formula breaks down:

    - a class with accuracy 1 has difficulty 0 and gets **weight 0** (the formula, kept: the class
      is then not trained on for an epoch). ``floor`` avoids it: difficulties are clamped to
      ``d_c = max(1 - A_c, floor)``, so every class keeps at least ``floor**tau`` before rescaling;
    - every class perfect (all difficulties 0): **uniform weights**, all 1, instead of 0/0. A model
      that gets everything right has nothing to rebalance, and it is the limit of equal difficulties;
    - a large ``tau`` (where ``d**tau`` underflows) gives **the limit** rather than 0/0: the weights
      are computed in log space, so as ``tau`` grows all the weight goes to the hardest class(es),
      shared equally among ties (``tau=1e6`` on accuracies ``[0.9, 0.5, 0.1]`` gives ``[0, 0, 3]``);
    - a class absent from the validation data has accuracy NaN (see
      :meth:`ClassDifficulty.accuracy`). With ``previous`` (the weights in use) it **keeps its
      previous weight**, and the measured classes share the rest, ``C - sum(previous[absent])``
      (clamped at 0), in proportion to ``d^tau``; so the sum stays ``C`` whenever ``previous`` sums
      to ``C``, as CDB weights do. Without ``previous`` a NaN is a ValueError.

    Args:
        class_accuracy: top-1 accuracy per class on the validation split, ``(C,)``, values in
            ``[0, 1]`` (NaN only with ``previous``). Out-of-range values raise ValueError.
        tau: exponent ``> 0`` (the paper's grid is {0.5, 1, 1.5, 2, 5}; the authors' commands use
            1.5), or ``"dynamic"`` for :func:`dynamic_tau` of the measured classes.
        floor: minimum difficulty in ``[0, 1]``; 0 is the paper; 1 gives uniform weights.
        previous: the current weights ``(C,)``, finite and non-negative, for classes whose
            accuracy is NaN.
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(C,)``.

    Example:
        >>> cdb_weights([0.9, 0.6, 0.3], tau=1.5)
        tensor([0.1090, 0.8721, 2.0189])
        >>> cdb_weights([1.0, 0.5, 0.5], tau=1.0)
        tensor([0.0000, 1.5000, 1.5000])
        >>> cdb_weights([1.0, 1.0, 1.0])
        tensor([1., 1., 1.])
        >>> cdb_weights([float("nan"), 0.5, 0.0], tau=1.0, previous=[0.6, 1.2, 1.2])
        tensor([0.6000, 0.8000, 1.6000])
    """
    tau = check_tau(tau)
    floor = check_real("floor", floor, low=0.0, high=1.0)
    acc = as_class_accuracy(class_accuracy, allow_missing=previous is not None)
    num_classes = acc.numel()
    measured = ~torch.isnan(acc)
    if tau == DYNAMIC:
        tau = dynamic_tau(acc)
    zeros = torch.zeros_like(acc)
    difficulty = torch.where(measured, (1.0 - acc).clamp(min=floor), zeros)
    raw = torch.where(measured, difficulty.pow(tau), zeros)
    if previous is None:
        kept = zeros
        share = float(num_classes)
    else:
        prev = _check_previous(previous, num_classes)
        kept = torch.where(measured, zeros, prev)
        share = max(float(num_classes) - float(kept.sum()), 0.0)
    positive = measured & (difficulty > 0)
    if bool((positive & (raw < torch.finfo(torch.float64).tiny)).any()):
        # d**tau underflows (a large tau: 0.9**1e6 == 0), so every weight would become 0 and the
        # fallback below would make them uniform, the opposite of the limit. The weights are ratios,
        # so take them in log space, tau * log(d) shifted by its largest value: the limit tau -> inf
        # puts all the weight on the hardest class(es), shared equally by ties. The shift comes before
        # the product, so even tau near the float64 maximum cannot make it inf - inf. (Ordinary tau
        # keeps the direct form above, bit for bit.)
        log_d = torch.where(positive, torch.log(torch.where(positive, difficulty, 1.0)), -math.inf)
        raw = torch.exp(tau * (log_d - log_d.max()))
    total = float(raw.sum())
    if total > 0.0:
        spread = raw * (share / total)
    else:
        # Every measured class is perfect: no difficulty to compare, share the weight equally.
        spread = measured.to(torch.float64) * (share / int(measured.sum()))
    return torch.where(measured, spread, kept).to(dtype)


# --- stable weights: damping and a bounded ratio (extension beyond the paper) ---------------------


def bound_ratio(weights: Any, max_ratio: float | None, total: float | None = None) -> torch.Tensor:
    r"""Extension beyond the paper: weights whose largest / smallest ratio is at most ``max_ratio``, summing to ``total``.

    Every weight below ``max(w) / max_ratio`` is raised to it (the largest weight, that of the
    hardest class, stays where it is), then all are rescaled to sum to ``total`` (default ``C``).
    Rescaling multiplies every weight by the same factor, so it keeps the ratio: the bound holds
    after the renormalisation, to float64 rounding (a relative ``1e-15``). Raising the small weights
    rather than cutting the large ones keeps it defined when the smallest weight is 0 (the paper's
    weight of a perfect class). ``max_ratio=1`` gives uniform weights; ``None`` (or ``inf``) only
    rescales. All-zero weights become uniform.

    Args:
        weights: ``(C,)`` finite, non-negative.
        max_ratio: ``R >= 1``, or None for no bound.
        total: the sum of the result, ``> 0``; default ``C``.

    Returns:
        ``(C,)`` float64.

    Example:
        >>> bound_ratio([0.0, 1.0, 2.0], 4.0)   # 0 -> 2 / 4 = 0.5, then x 3 / 3.5
        tensor([0.4286, 0.8571, 1.7143], dtype=torch.float64)
    """
    w = _check_previous(weights, as_real_vector(weights, "weights").numel(), "weights").to(torch.float64)
    bound = check_max_ratio(max_ratio)
    total = float(w.numel()) if total is None else check_real("total", total, low=0.0, low_open=True, finite=True)
    if bound is not None and math.isfinite(bound):
        w = torch.maximum(w, w.max() / bound)
    mass = float(w.sum())
    if mass <= 0.0:
        return torch.full_like(w, total / w.numel())
    return w * (total / mass)


def damped_weights(
    previous: Any, target: Any, *, momentum: float = STABLE_MOMENTUM, max_ratio: float | None = STABLE_MAX_RATIO
) -> torch.Tensor:
    r"""Extension beyond the paper: one damped CDB update, ``bound_ratio((1 - m) previous + m target, max_ratio)``.

    An exponential moving average over the updates with step ``m = momentum`` (the weight of the new
    target, PyTorch's ``BatchNorm`` convention; :class:`TrainingDifficultyEMA`'s ``momentum`` is the
    weight of the old value instead). ``m = 1`` takes the target in full (the paper). The result is
    then bounded (:func:`bound_ratio`) and, with a bound, rescaled to sum to ``C``; without one it is
    left as the average is (it sums to ``C`` when both inputs do, as CDB weights do). A class moves
    by at most ``m |target_c - previous_c|`` before the bound: one epoch cannot flip the vector.

    Args:
        previous: the weights in use ``(C,)``, finite and non-negative.
        target: the new CDB weights ``(C,)`` (e.g. :func:`cdb_weights`).
        momentum: ``m`` in ``(0, 1]``.
        max_ratio: ``R >= 1`` or None (no bound).

    Returns:
        ``(C,)`` float64.

    Example:
        >>> damped_weights([1.0, 1.0, 1.0], [0.0, 0.0, 3.0], momentum=0.5, max_ratio=None)
        tensor([0.5000, 0.5000, 2.0000], dtype=torch.float64)
        >>> damped_weights([1.0, 1.0, 1.0], [0.0, 0.0, 3.0], momentum=0.5, max_ratio=2.0)
        tensor([0.7500, 0.7500, 1.5000], dtype=torch.float64)
    """
    m = check_momentum(momentum)
    prev = _check_previous(previous, as_real_vector(previous, "previous").numel()).to(torch.float64)
    new = _check_previous(target, prev.numel(), "target")
    w = (1.0 - m) * prev + m * new
    bound = check_max_ratio(max_ratio)
    return w if bound is None else bound_ratio(w, bound)


# --- per-class accuracy --------------------------------------------------------------------------


def _as_prior(prior: Any) -> tuple[float, float] | None:
    """``None`` / 0 (no prior), a number ``a`` (Beta(a, a)) or a pair ``(a, b)`` of pseudo-counts ``>= 0``."""
    if prior is None:
        return None
    if isinstance(prior, (tuple, list)):
        if len(prior) != 2:
            raise ValueError(f"prior must be a number or a pair (a, b) of pseudo-counts; got {len(prior)} values")
        a, b = (check_real(f"prior[{i}]", v, low=0.0, finite=True) for i, v in enumerate(prior))
    else:
        a = b = check_real("prior", prior, low=0.0, finite=True)
    return None if a == b == 0.0 else (a, b)


def posterior_accuracy(successes: Any, total: Any, prior: Any = (1.0, 1.0)) -> torch.Tensor:
    r"""Extension beyond the paper: the Beta-Binomial posterior mean of each class's accuracy.

    .. math::
        A_c = \frac{s_c + a}{n_c + a + b}

    with :math:`s_c` the class's successes (its correct validation predictions, or the sum of its
    true-class probabilities for :func:`estimated_accuracy`'s ``"confidence"``), :math:`n_c` its
    validation samples and a Beta(a, b) prior on the accuracy. With any positive pseudo-count the
    accuracy stays strictly inside (0, 1), so a small validation split never gives a difficulty of
    exactly 0 (weight 0, the class dropped from the loss) or 1. Laplace's ``a = b = 1`` gives
    25 / 25 correct ``26/27 = 0.963`` (difficulty ``1/27``) and 0 / 25 ``1/27``; Jeffreys'
    ``a = b = 0.5`` gives ``51/52 = 0.981`` and ``1/52``. A class with ``n_c = 0`` is NaN (not
    measured: the CDB loss keeps its weight), not the prior mean.

    Args:
        successes: ``(C,)`` in ``[0, n_c]``.
        total: ``(C,)`` sample counts ``>= 0``.
        prior: pseudo-counts ``(a, b)``, a number ``a`` for ``(a, a)``, or None / 0 for the plain ratio.

    Returns:
        ``(C,)`` float64 on the CPU.

    Example:
        >>> posterior_accuracy([25, 0, 0], [25, 25, 0])
        tensor([0.9630, 0.0370,    nan], dtype=torch.float64)
        >>> posterior_accuracy([25], [25], prior=0.5)
        tensor([0.9808], dtype=torch.float64)
    """
    s = as_real_vector(successes, "successes").detach().cpu().to(torch.float64)
    n = as_real_vector(total, "total").detach().cpu().to(torch.float64)
    if s.numel() != n.numel():
        raise ValueError(f"total must have {s.numel()} values, one per class; got {n.numel()}")
    if bool((n < 0).any()) or bool((s < 0).any()) or bool((s > n * (1 + 1e-12)).any()):
        raise ValueError(f"successes must be in [0, total] per class; got successes {s.tolist()}, total {n.tolist()}")
    a, b = _as_prior(prior) or (0.0, 0.0)
    acc = ((s + a) / (n + a + b)).clamp(0.0, 1.0)  # the clamp: a probability sum a rounding above n
    return torch.where(n > 0, acc, torch.full_like(acc, math.nan))


def estimated_accuracy(source: Any, *, prior: Any = None, difficulty: str = "accuracy") -> torch.Tensor:
    r"""Per-class accuracy of ``source`` (a :class:`ClassDifficulty` / :class:`longtail.metrics.ConfusionMeter`)
    for the CDB weights: the paper's ratio, or (extensions beyond the paper) a posterior mean or a confidence.

    - ``difficulty="accuracy"``, ``prior=None``: ``source.accuracy()``, the paper (any object with
      ``accuracy()`` will do);
    - ``difficulty="accuracy"`` with a prior: :func:`posterior_accuracy` of ``source.correct`` and
      ``source.total`` (a meter, or :class:`TrainingDifficultyEMA`'s discounted sums);
    - ``difficulty="confidence"``: the mean probability of the true class over the class's samples,
      ``(true_prob_sum_c + a) / (n_c + a + b)``: a meter built with ``confidence=True``. It moves
      smoothly where the top-1 accuracy of 25 images jumps in steps of 4 % and saturates at 100 %.

    Returns:
        ``(C,)`` float64 on the CPU, NaN for a class without samples.
    """
    pseudo = _as_prior(prior)
    kind = check_choice("difficulty", difficulty, DIFFICULTIES)
    if kind == "accuracy" and pseudo is None:
        if not isinstance(source, DifficultySource):
            raise TypeError(f"source must be a ClassDifficulty or an object with an accuracy() method; "
                            f"got {type(source).__name__}")
        return source.accuracy()
    if kind == "confidence":
        if not getattr(source, "tracks_confidence", False):
            raise TypeError("source must be a ClassDifficulty or ConfusionMeter built with confidence=True for "
                            f"difficulty='confidence'; got {type(source).__name__}"
                            + (" without it" if isinstance(source, ConfusionMeter) else ""))
        successes = source.true_prob_sum
    else:
        if not (hasattr(source, "correct") and hasattr(source, "total")):
            raise TypeError(f"source must have per-class correct and total counts (a ClassDifficulty) for "
                            f"prior={prior!r}; got {type(source).__name__}")
        successes = source.correct
    return posterior_accuracy(successes, source.total, pseudo)


@runtime_checkable
class DifficultySource(Protocol):
    """Anything :meth:`longtail.losses.CDBLoss.update_from` accepts: an object with ``accuracy()``."""

    def accuracy(self) -> torch.Tensor: ...


class ClassDifficulty(ConfusionMeter):
    r"""Per-class top-1 accuracy :math:`A_c = \mathrm{correct}_c / \mathrm{total}_c` over validation batches.

    A :class:`longtail.metrics.ConfusionMeter` (the library's one per-class counter) without
    top-k, plus :meth:`difficulty`. The counts are the exact int64 buffer ``confusion`` ``(C, C)``:
    it follows ``.to(device)`` (keep it on the model's device to avoid a copy per batch) and
    ``state_dict``. ``correct`` (its diagonal) and ``total`` (its row sums) are ``(C,)`` int64, and
    the difficulty of the CDB loss is ``1 - A_c``.

    With ``confidence=True`` (for the stable loss's ``difficulty="confidence"``, an extension beyond
    the paper) it also sums the softmax probability of each sample's true class per class
    (:attr:`~longtail.metrics.ConfusionMeter.true_prob_sum`); :meth:`update` then needs logits.

    Args:
        num_classes: ``C``.
        ignore_index: target value that is skipped (not counted at all).
        confidence: also sum the true class's probability per class.

    Shapes:
        ``update(preds, targets)``: ``targets`` ``(N,)`` or ``(N, d1, ...)`` integer class indices;
        ``preds`` either logits ``(N, C)`` / ``(N, C, d1, ...)`` (argmax over dim 1) or predicted
        labels with the targets' shape (integer).

    Example:
        >>> difficulty = ClassDifficulty(3)
        >>> difficulty.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 1.0]]),
        ...                   torch.tensor([0, 1, 1]))
        >>> difficulty.update(torch.tensor([0, 1]), torch.tensor([1, -100]))
        >>> difficulty.total
        tensor([1, 3, 0])
        >>> difficulty.accuracy()
        tensor([1.0000, 0.3333,    nan], dtype=torch.float64)
    """

    def __init__(self, num_classes: int, ignore_index: int = -100, *, confidence: bool = False) -> None:
        super().__init__(num_classes, ignore_index=ignore_index, confidence=confidence)

    def difficulty(self) -> torch.Tensor:
        """``1 - accuracy()``, ``(C,)`` float64 on the CPU, NaN where a class has no sample."""
        return 1.0 - self.accuracy()


class TrainingDifficultyEMA(nn.Module):
    r"""Extension, **not in the CDB paper**: per-class accuracy from the training batches, smoothed.

    For users without a validation split. After each batch ``k`` with per-class counts
    ``correct_k`` and ``total_k`` (the diagonal and the row sums of the batch's
    :func:`longtail.confusion.confusion_counts`):

    .. math::
        S^{\mathrm{correct}} \leftarrow m\,S^{\mathrm{correct}} + \mathrm{correct}_k, \quad
        S^{\mathrm{total}} \leftarrow m\,S^{\mathrm{total}} + \mathrm{total}_k, \quad
        A_c = S^{\mathrm{correct}}_c / S^{\mathrm{total}}_c

    an exponential moving average of each class's accuracy with momentum ``m``, weighted by how many
    samples of the class each batch held, and free of start-up bias (the ratio of two discounted
    sums needs no correction). A class never seen (or not seen for so long that its discounted count
    underflowed) has accuracy NaN, so :class:`longtail.losses.CDBLoss` keeps its weight. The sums are
    float64 buffers ``correct`` and ``total`` ``(C,)``.

    Caveats, and why the paper uses a held-out split: training accuracy is measured on samples the
    model has already fit, usually in train mode with augmentation. Tail classes are memorised
    first, their training accuracy rises towards 1 and their weight towards 0, the opposite of the
    paper's intent. Use the logits of the forward pass (computed before the optimiser step), keep a
    ``floor`` on the difficulty in :class:`longtail.losses.CDBLoss`, and prefer
    :class:`ClassDifficulty` on a validation split when you have one.

    Args:
        num_classes: ``C``.
        momentum: ``m`` in ``[0, 1)``, applied per :meth:`update` call (per batch): the newest batch
            has weight 1 against ``m`` for the one before; the memory spans about ``1 / (1 - m)``
            batches. 0 keeps only the last batch.
        ignore_index: target value that is skipped.

    Example:
        >>> ema = TrainingDifficultyEMA(2, momentum=0.5)
        >>> ema.update(torch.tensor([0, 0]), torch.tensor([0, 1]))   # class 0 right, class 1 wrong
        >>> ema.update(torch.tensor([1, 1]), torch.tensor([0, 1]))   # class 0 wrong, class 1 right
        >>> ema.accuracy()  # (0.5 * 1 + 0) / (0.5 + 1), (0.5 * 0 + 1) / (0.5 + 1)
        tensor([0.3333, 0.6667], dtype=torch.float64)
    """

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, num_classes: int, momentum: float = 0.99, ignore_index: int = -100) -> None:
        super().__init__()
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index)
        self.register_buffer("correct", torch.zeros(self.num_classes, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(self.num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, preds: Any, targets: Any) -> None:
        """Discounts the running sums by ``momentum`` and adds one batch's per-class counts."""
        counts = confusion_counts(preds, targets, self.num_classes, self.ignore_index)
        self.correct.mul_(self.momentum).add_(counts.diagonal().to(self.correct))
        self.total.mul_(self.momentum).add_(counts.sum(dim=1).to(self.total))

    def forward(self, preds: Any, targets: Any) -> None:
        """Same as :meth:`update` (so the module can be called like a metric)."""
        self.update(preds, targets)

    def accuracy(self) -> torch.Tensor:
        """Smoothed per-class accuracy ``(C,)`` float64 on the CPU; NaN for a class with no sample."""
        # 0 / 0 gives NaN, the "no sample" marker, without a warning.
        return self.correct.detach().cpu() / self.total.detach().cpu()

    def difficulty(self) -> torch.Tensor:
        """``1 - accuracy()``, ``(C,)`` float64 on the CPU, NaN where a class has no sample."""
        return 1.0 - self.accuracy()

    def reset(self) -> None:
        """Zeroes the running sums."""
        self.correct.zero_()
        self.total.zero_()

    @torch.no_grad()
    def all_reduce(self, group: Any = None) -> TrainingDifficultyEMA:
        """Replaces each process's running sums by their mean over the processes of ``group``.

        The sums are linear in the counts, so when every process calls :meth:`update` equally
        often (once per step, as under DDP), the mean over processes is the pooled running sum
        divided by the world size: the accuracies are those of the pooled batches, identical on
        every process. Taking the mean rather than the sum keeps the state at one process's scale,
        so later local updates and repeated calls stay consistent. A no-op without ``torch.distributed``.
        """
        if dist.is_available() and dist.is_initialized():
            summed = all_reduce_sum(torch.stack([self.correct, self.total]), group) / dist.get_world_size(group)
            self.correct.copy_(summed[0])
            self.total.copy_(summed[1])
        return self

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, momentum={self.momentum}, ignore_index={self.ignore_index}"
