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
    check_ignore_index,
    check_num_classes,
    check_real,
    check_tau,
)
from .confusion import all_reduce_sum, confusion_counts
from .metrics import ConfusionMeter

# The paper's (and the ImageNet code's) constant in b = max A / (min A + 0.01) - 1.
_DYNAMIC_EPS = 0.01

__all__ = [
    "ClassDifficulty",
    "DifficultySource",
    "TrainingDifficultyEMA",
    "cdb_weights",
    "dynamic_tau",
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


def _check_previous(previous: Any, num_classes: int) -> torch.Tensor:
    prev = as_real_vector(previous, "previous")
    if prev.numel() != num_classes:
        raise ValueError(f"previous must have {num_classes} weights, one per class; got {prev.numel()}")
    if not bool(torch.isfinite(prev).all()) or bool((prev < 0).any()):
        raise ValueError(f"previous must hold finite, non-negative weights; got {prev.tolist()}")
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


# --- per-class accuracy --------------------------------------------------------------------------


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

    Args:
        num_classes: ``C``.
        ignore_index: target value that is skipped (not counted at all).

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

    def __init__(self, num_classes: int, ignore_index: int = -100) -> None:
        super().__init__(num_classes, ignore_index=ignore_index)

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
