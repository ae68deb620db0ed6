r"""Class-wise Difficulty-Balanced (CDB) weights (Sinha, Ohashi, Nakamura, ACCV 2020), and their stable form.

A class's weight follows how hard the model currently finds it, not how many training samples it has. With
:math:`A_c` the top-1 accuracy of class :math:`c` on a held-out validation split:

.. math::
    d_c = 1 - A_c, \qquad w_c = C \, \frac{d_c^{\tau}}{\sum_k d_k^{\tau}}

:func:`cdb_weights` computes them, with the paper's :func:`dynamic_tau`; ``tau`` and the accuracies are checked by
:func:`longtail.checks.check_tau` and :func:`longtail.checks.as_class_accuracy`. The accuracies come from
:mod:`longtail.difficulty`, the loss that uses the weights is :class:`longtail.losses.CDBLoss`.

The stable CDB weights (**extensions beyond the paper**, used by :class:`longtail.losses.StableCDBLoss`;
``docs/cdb_stable.md`` says why and what they measure): :func:`damped_weights` and :func:`bound_ratio`, an
exponential moving average of the weights towards each new target and a bound on the largest / smallest weight,
so one epoch cannot flip the whole vector (the paper's weights oscillate with period 2 on Fashion-MNIST-LT).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..checks import (
    DYNAMIC,
    as_class_accuracy,
    as_real_vector,
    check_max_ratio,
    check_momentum,
    check_real,
    check_tau,
)

# The paper's (and the ImageNet code's) constant in b = max A / (min A + 0.01) - 1.
_DYNAMIC_EPS = 0.01

# The defaults of the stable CDB loss (an extension beyond the paper), chosen by the final validation balanced
# accuracy of a 12-run sweep on Fashion-MNIST-LT (docs/cdb_stable.md; the test set was not used): Laplace's prior,
# the confidence difficulty, an EMA step of 0.25 and a largest / smallest weight ratio of 16.
STABLE_PRIOR = 1.0
STABLE_DIFFICULTY = "confidence"
STABLE_MOMENTUM = 0.25
STABLE_MAX_RATIO = 16.0


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
      :meth:`longtail.difficulty.ClassDifficulty.accuracy`). With ``previous`` (the weights in use) it
      **keeps its previous weight**, and the measured classes share the rest, ``C - sum(previous[absent])``
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
    target, PyTorch's ``BatchNorm`` convention; :class:`longtail.difficulty.TrainingDifficultyEMA`'s ``momentum``
    is the weight of the old value instead). ``m = 1`` takes the target in full (the paper). The result is
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
