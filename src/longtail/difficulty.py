r"""Per-class accuracy for the class-wise difficulty-balanced (CDB) weights: counted, estimated, or smoothed.

CDB (Sinha et al., ACCV 2020) weighs class :math:`c` by its difficulty :math:`d_c = 1 - A_c`, with :math:`A_c` its
top-1 accuracy on a held-out validation split (:func:`longtail.weights.cdb_weights`). This module measures
:math:`A_c`:

- :class:`ClassDifficulty`: per-class correct/total counts from validation batches, summed over processes under
  data parallelism: a :class:`longtail.confusion.ConfusionMeter`, the metrics' one counter;
- :class:`TrainingDifficultyEMA`, an extension that is **not in the paper**: the accuracy from the training batches,
  smoothed, counted by the same kernel (:func:`longtail.confusion.confusion_counts`);
- :func:`posterior_accuracy` and :func:`estimated_accuracy` (**extensions beyond the paper**, used by
  :class:`longtail.losses.StableCDBLoss`; ``docs/cdb_stable.md``): a Beta-Binomial posterior mean of each class's
  accuracy, ``A_c = (correct_c + a) / (n_c + a + b)``, so that 25 validation images never give a difficulty of
  exactly 0 or 1; optionally from the confidence (the mean probability of the true class) instead of the top-1
  hits.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import nn

from .checks import as_real_vector, check_choice, check_ignore_index, check_num_classes, check_real
from .confusion import ConfusionMeter, all_reduce_sum, confusion_counts

# What a class's accuracy is measured by: its top-1 hits, or the probability the model gives its true class.
DIFFICULTIES = ("accuracy", "confidence")

__all__ = [
    "DIFFICULTIES",
    "ClassDifficulty",
    "DifficultySource",
    "TrainingDifficultyEMA",
    "estimated_accuracy",
    "posterior_accuracy",
]


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
    r"""Per-class accuracy of ``source`` (a :class:`ClassDifficulty` / :class:`longtail.confusion.ConfusionMeter`)
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

    A :class:`longtail.confusion.ConfusionMeter` (the library's one per-class counter) without
    top-k, plus :meth:`difficulty`. The counts are the exact int64 buffer ``confusion`` ``(C, C)``:
    it follows ``.to(device)`` (keep it on the model's device to avoid a copy per batch) and
    ``state_dict``. ``correct`` (its diagonal) and ``total`` (its row sums) are ``(C,)`` int64, and
    the difficulty of the CDB loss is ``1 - A_c``.

    With ``confidence=True`` (for the stable loss's ``difficulty="confidence"``, an extension beyond
    the paper) it also sums the softmax probability of each sample's true class per class
    (:attr:`~longtail.confusion.ConfusionMeter.true_prob_sum`); :meth:`update` then needs logits.

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
