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
parallelism), and :class:`TrainingDifficultyEMA`, an extension that is **not in the paper**.

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
import numbers
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import nn

from .checks import as_real_vector, check_label_values, check_real

DYNAMIC = "dynamic"
# The paper's (and the ImageNet code's) constant in b = max A / (min A + 0.01) - 1.
_DYNAMIC_EPS = 0.01

__all__ = [
    "ClassDifficulty",
    "DifficultySource",
    "TrainingDifficultyEMA",
    "cdb_weights",
    "check_tau",
    "dynamic_tau",
]


# --- argument checks -----------------------------------------------------------------------------


def _as_accuracy(class_accuracy: Any, *, allow_missing: bool, num_classes: int | None = None) -> torch.Tensor:
    """Per-class accuracies in [0, 1] as float64 (C,); NaN marks a class with no validation sample."""
    acc = as_real_vector(class_accuracy, "class_accuracy")
    if num_classes is not None and acc.numel() != num_classes:
        raise ValueError(
            f"class_accuracy must have {num_classes} values, one per class; got {acc.numel()}"
        )
    measured = ~torch.isnan(acc)
    out_of_range = measured & ((acc < 0) | (acc > 1))
    if bool(out_of_range.any()):
        index = int(torch.nonzero(out_of_range)[0])
        raise ValueError(
            f"class_accuracy must be in [0, 1] for every class; got {float(acc[index])!r} for class {index}"
        )
    if not bool(measured.any()):
        raise ValueError(
            "class_accuracy must have at least one measured class; got NaN for every class "
            "(was the ClassDifficulty updated with any validation batch?)"
        )
    if not allow_missing and not bool(measured.all()):
        missing = torch.nonzero(~measured).flatten().tolist()
        raise ValueError(
            f"class_accuracy must be a number for every class; got NaN for classes {missing} (a class "
            "absent from the validation data has no accuracy: pass previous=<current weights> to keep "
            "its weight)"
        )
    return acc


def check_tau(tau: Any) -> float | str:
    """``tau`` as a positive finite float, or the string ``"dynamic"``."""
    if isinstance(tau, str):
        if tau == DYNAMIC:
            return tau
        raise ValueError(f"tau must be a positive number or 'dynamic'; got {tau!r}")
    try:
        value = check_real("tau", tau)
    except TypeError as exc:
        raise TypeError(f"tau must be a positive number or 'dynamic'; got {type(tau).__name__} {tau!r}") from exc
    except ValueError as exc:  # NaN
        raise ValueError(f"tau must be a positive number or 'dynamic'; got {tau!r}") from exc
    if not (0.0 < value < math.inf):
        raise ValueError(f"tau must be a positive finite number or 'dynamic'; got {value!r}")
    return value


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int; got {type(num_classes).__name__} {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes}")
    return int(num_classes)


def _check_ignore_index(ignore_index: Any) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int; got {type(ignore_index).__name__} {ignore_index!r}")
    return int(ignore_index)


def _check_momentum(momentum: Any) -> float:
    value = check_real("momentum", momentum, low=0.0, high=1.0)
    if value == 1.0:
        raise ValueError("momentum must be in [0, 1) (1 would never take in a new batch); got 1.0")
    return value


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
    acc = _as_accuracy(class_accuracy, allow_missing=True)
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
    acc = _as_accuracy(class_accuracy, allow_missing=previous is not None)
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
    total = float(raw.sum())
    if total > 0.0:
        spread = raw * (share / total)
    else:
        # Every measured class is perfect: no difficulty to compare, share the weight equally.
        spread = measured.to(torch.float64) * (share / int(measured.sum()))
    return torch.where(measured, spread, kept).to(dtype)


# --- per-class accuracy --------------------------------------------------------------------------


def _predicted_labels(preds: Any, targets: Any, num_classes: int) -> torch.Tensor:
    """Predicted labels with the targets' shape, from logits (argmax over dim 1) or labels."""
    if not isinstance(preds, torch.Tensor):
        raise TypeError(f"preds must be a tensor of logits or predicted labels; got {type(preds).__name__}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a tensor of class indices; got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class indices; got dtype {targets.dtype}")
    if targets.dim() < 1:
        raise ValueError("targets must have shape (N,) or (N, d1, ...); got a 0-d tensor")
    if preds.device != targets.device:
        raise ValueError(f"targets must be on the device of preds {preds.device}; got {targets.device}")
    logits_shape = (targets.shape[0], num_classes) + tuple(targets.shape[1:])
    if preds.is_floating_point() and preds.dim() == targets.dim() + 1:
        if tuple(preds.shape) != logits_shape:
            raise ValueError(
                f"logits for targets of shape {tuple(targets.shape)} must have shape {logits_shape}; "
                f"got {tuple(preds.shape)}"
            )
        return preds.detach().argmax(1)
    if tuple(preds.shape) != tuple(targets.shape):
        raise ValueError(
            f"preds must be logits of shape {logits_shape} or predicted labels of the targets' shape "
            f"{tuple(targets.shape)}; got {tuple(preds.shape)}"
        )
    if preds.is_floating_point() or preds.is_complex() or preds.dtype == torch.bool:
        raise TypeError(f"predicted labels must be integers; got dtype {preds.dtype}")
    if preds.numel() and bool(((preds < 0) | (preds >= num_classes)).any()):
        bad = preds[(preds < 0) | (preds >= num_classes)]
        raise ValueError(f"predicted labels must be in [0, {num_classes - 1}]; got label {int(bad[0])}")
    return preds.detach()


def _batch_counts(
    preds: Any, targets: Any, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (correct, total) int64 counts of one batch, on the batch's device."""
    predicted = _predicted_labels(preds, targets, num_classes)
    check_label_values(targets, num_classes, ignore_index)
    valid = (targets != ignore_index).reshape(-1)
    target = targets.reshape(-1).long()
    # Ignored positions are sent to class 0 with a count of 0, so no boolean indexing (no sync).
    index = torch.where(valid, target, torch.zeros_like(target))
    hit = valid & (predicted.reshape(-1).long() == target)
    zeros = torch.zeros(num_classes, dtype=torch.int64, device=targets.device)
    total = zeros.index_add(0, index, valid.long())
    correct = zeros.index_add(0, index, hit.long())
    return correct, total


def _ratio(correct: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """correct / total in float64, NaN where total is 0 (a class with nothing measured)."""
    correct, total = correct.to(torch.float64), total.to(torch.float64)
    has = total > 0
    return torch.where(has, correct / torch.where(has, total, torch.ones_like(total)), torch.full_like(total, math.nan))


def _distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """Sums ``tensor`` over the processes of ``group`` and returns the result on its device."""
    work = tensor
    # NCCL only reduces CUDA tensors; counts kept on the CPU travel through the current GPU.
    if work.device.type == "cpu" and dist.get_backend(group) == "nccl":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
    return work.to(tensor.device)


@runtime_checkable
class DifficultySource(Protocol):
    """Anything :meth:`longtail.losses.CDBLoss.update_from` accepts: an object with ``accuracy()``."""

    def accuracy(self) -> torch.Tensor: ...


class _PerClassCounts(nn.Module):
    """Per-class ``correct`` / ``total`` buffers and what follows from them (shared by the two counters)."""

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = _check_ignore_index(ignore_index)
        self.register_buffer("correct", torch.zeros(self.num_classes, dtype=dtype))
        self.register_buffer("total", torch.zeros(self.num_classes, dtype=dtype))

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError

    def forward(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Same as :meth:`update` (so the module can be called like a metric)."""
        self.update(preds, targets)

    def accuracy(self) -> torch.Tensor:
        """Per-class accuracy ``(C,)`` in float64; NaN for a class with no (non-ignored) sample."""
        return _ratio(self.correct, self.total)

    def difficulty(self) -> torch.Tensor:
        """``1 - accuracy()``, ``(C,)`` float64, NaN where a class has no sample."""
        return 1.0 - self.accuracy()

    def reset(self) -> None:
        """Zeroes the counts."""
        self.correct.zero_()
        self.total.zero_()


class ClassDifficulty(_PerClassCounts):
    r"""Per-class top-1 accuracy :math:`A_c = \mathrm{correct}_c / \mathrm{total}_c` over validation batches.

    Counts are exact int64 buffers ``correct`` and ``total`` of shape ``(C,)``: they follow
    ``.to(device)`` (keep them on the model's device to avoid a copy per batch) and ``state_dict``.
    The difficulty of the CDB loss is ``1 - A_c``.

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

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int = -100) -> None:
        super().__init__(num_classes, ignore_index, torch.int64)

    @torch.no_grad()
    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Adds one batch's per-class correct and total counts."""
        correct, total = _batch_counts(preds, targets, self.num_classes, self.ignore_index)
        self.correct += correct.to(self.correct.device)
        self.total += total.to(self.total.device)

    @torch.no_grad()
    def all_reduce(self, group: Any = None) -> ClassDifficulty:
        """Sums the counts over the processes of ``group`` when ``torch.distributed`` is initialised.

        A no-op in a single process. Every process must call it (it is a collective), once per
        evaluation pass, after its last :meth:`update`: calling it twice would count the other
        processes' samples twice. Afterwards every process holds the pooled counts, so every
        process computes the same accuracies and the same CDB weights.

        Returns:
            ``self``, to chain ``criterion.update_from(difficulty.all_reduce())``.
        """
        if _distributed_ready():
            summed = _all_reduce_sum(torch.stack([self.correct, self.total]), group)
            self.correct.copy_(summed[0])
            self.total.copy_(summed[1])
        return self

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


class TrainingDifficultyEMA(_PerClassCounts):
    r"""Extension, **not in the CDB paper**: per-class accuracy from the training batches, smoothed.

    For users without a validation split. After each batch ``k`` with per-class counts
    ``correct_k`` and ``total_k``:

    .. math::
        S^{\mathrm{correct}} \leftarrow m\,S^{\mathrm{correct}} + \mathrm{correct}_k, \quad
        S^{\mathrm{total}} \leftarrow m\,S^{\mathrm{total}} + \mathrm{total}_k, \quad
        A_c = S^{\mathrm{correct}}_c / S^{\mathrm{total}}_c

    an exponential moving average of each class's accuracy with momentum ``m``, weighted by how many
    samples of the class each batch held, and free of start-up bias (the ratio of two discounted
    sums needs no correction). A class never seen (or not seen for so long that its discounted count
    underflowed) has accuracy NaN, so :class:`longtail.losses.CDBLoss` keeps its weight.

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
        momentum = _check_momentum(momentum)
        super().__init__(num_classes, ignore_index, torch.float64)
        self.momentum = momentum

    @torch.no_grad()
    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Discounts the running sums by ``momentum`` and adds one batch's per-class counts."""
        correct, total = _batch_counts(preds, targets, self.num_classes, self.ignore_index)
        self.correct.mul_(self.momentum).add_(correct.to(self.correct))
        self.total.mul_(self.momentum).add_(total.to(self.total))

    @torch.no_grad()
    def all_reduce(self, group: Any = None) -> TrainingDifficultyEMA:
        """Replaces each process's running sums by their mean over the processes of ``group``.

        The sums are linear in the counts, so when every process calls :meth:`update` equally
        often (once per step, as under DDP), the mean over processes is the pooled running sum
        divided by the world size: the accuracies are those of the pooled batches, identical on
        every process. Taking the mean rather than the sum keeps the state at one process's scale,
        so later local updates and repeated calls stay consistent. A no-op without ``torch.distributed``.
        """
        if _distributed_ready():
            world = dist.get_world_size(group)
            summed = _all_reduce_sum(torch.stack([self.correct, self.total]), group) / world
            self.correct.copy_(summed[0])
            self.total.copy_(summed[1])
        return self

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, momentum={self.momentum}, ignore_index={self.ignore_index}"
