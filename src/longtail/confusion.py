r"""Per-class counting: the confusion matrix of a batch, top-k hits, the one collective, and the streaming counter.

:func:`confusion_counts` turns a batch into a ``(C, C)`` int64 confusion matrix (rows = true class,
columns = predicted class); :func:`top_k_counts` counts top-k hits; :func:`all_reduce_sum` sums
counts over processes under data parallelism. The streaming counter built on them,
:class:`ConfusionMeter` (also importable from :mod:`longtail.metrics`), is the one counter of the
metrics, the trainer and the CDB loss (:class:`longtail.difficulty.ClassDifficulty` is a ``ConfusionMeter``);
:func:`longtail.tune.balanced_accuracy` counts each head with :func:`confusion_counts`.

Shapes:
    ``targets``: integer class indices ``(N,)`` or ``(N, d1, ...)`` (e.g. one label per pixel);
    positions whose target equals ``ignore_index`` are not counted at all.

    ``preds``: either scores (logits or probabilities) ``(N, C)`` / ``(N, C, d1, ...)``, whose
    argmax over dim 1 is the predicted class (ties go to whatever :func:`torch.argmax` picks), or
    integer predicted labels with the targets' shape. The number of dimensions tells them apart.
    Top-k hits need scores.

    NumPy arrays and lists are converted with :func:`torch.as_tensor`. ``preds`` may be on another
    device than ``targets``; the counts are made on the targets' device, without boolean indexing
    and with one host sync per batch: the check that the labels are in range (skipped while
    ``torch.compile`` traces).

Example:
    >>> confusion_counts(torch.tensor([[1, 1], [0, 0]]), torch.tensor([[0, 1], [1, 255]]), 2, ignore_index=255)
    tensor([[0, 1],
            [1, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .checks import (
    as_tensor,
    check_ignore_index,
    check_label_range,
    check_num_classes,
    check_top_k,
)
from .confusion_metrics import report_from_confusion

__all__ = ["CONFIDENCE_SCALE", "ConfusionMeter", "all_reduce_sum", "confusion_counts", "top_k_counts"]

# ConfusionMeter(confidence=True) sums the true class's probability in int64 units of 2**-32 (fixed point).
CONFIDENCE_SCALE = 2**32

_Meter = TypeVar("_Meter", bound="ConfusionMeter")


# --- the per-batch kernels -----------------------------------------------------------------------


def _as_targets(targets: Any) -> torch.Tensor:
    t = as_tensor(targets, "targets")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class indices; got dtype {t.dtype}")
    if t.dim() < 1:
        raise ValueError("targets must have shape (N,) or (N, d1, ...); got a 0-d tensor")
    return t


def _as_preds(preds: Any, targets: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, bool]:
    """``preds`` as a tensor, and True for scores (one more dimension than the targets), False for labels."""
    p = as_tensor(preds, "preds")
    if p.is_complex() or p.dtype == torch.bool:
        raise TypeError(f"preds must be real scores or integer predicted labels; got dtype {p.dtype}")
    scores_shape = (targets.shape[0], num_classes) + tuple(targets.shape[1:])
    if p.dim() == targets.dim() + 1:
        if tuple(p.shape) != scores_shape:
            raise ValueError(
                f"scores for targets of shape {tuple(targets.shape)} must have shape {scores_shape}; "
                f"got {tuple(p.shape)}"
            )
        return p, True
    if tuple(p.shape) != tuple(targets.shape):
        raise ValueError(
            f"preds must be scores of shape {scores_shape} or predicted labels of the targets' shape "
            f"{tuple(targets.shape)}; got {tuple(p.shape)}"
        )
    if p.is_floating_point():
        raise TypeError(
            f"predicted labels must be integers; got dtype {p.dtype} (scores must have shape {scores_shape})"
        )
    return p, False


def _check_ignore(ignore_index: Any) -> int | None:
    return None if ignore_index is None else check_ignore_index(ignore_index)


def confusion_counts(preds: Any, targets: Any, num_classes: int, ignore_index: int | None = -100) -> torch.Tensor:
    """The confusion matrix of one batch.

    Args:
        preds: scores ``(N, C)`` / ``(N, C, d1, ...)`` (argmax over dim 1) or integer predicted
            labels with the targets' shape, values in ``[0, C)``.
        targets: integer class indices ``(N,)`` / ``(N, d1, ...)`` in ``[0, C)`` or equal to
            ``ignore_index``.
        num_classes: ``C``.
        ignore_index: target value whose positions are not counted; ``None`` counts every position
            (then every target must be a class index).

    Returns:
        ``(C, C)`` int64 tensor on the targets' device; ``[i, j]`` = number of positions of true
        class ``i`` predicted as ``j``.
    """
    c = check_num_classes(num_classes)
    ignore = _check_ignore(ignore_index)
    t = _as_targets(targets)
    p, is_scores = _as_preds(preds, t, c)
    t = t.long()
    if is_scores:
        labels = p.argmax(1).to(t.device)
        check_label_range(t, c, ignore)
    else:
        labels = p.to(device=t.device, dtype=torch.int64)
        check_label_range(t, c, ignore, preds=labels)
    return _confusion(labels, t, c, ignore)


def _confusion(labels: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore: int | None) -> torch.Tensor:
    target = targets.reshape(-1)
    cell = target * num_classes + labels.reshape(-1)
    if ignore is None:
        index, count = cell, torch.ones_like(cell)
    else:
        # Ignored positions go to cell 0 with a count of 0: no boolean indexing, so no host sync.
        valid = target != ignore
        index, count = torch.where(valid, cell, torch.zeros_like(cell)), valid.long()
    zeros = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=target.device)
    return zeros.index_add_(0, index, count).view(num_classes, num_classes)


def top_k_counts(scores: Any, targets: Any, top_k: Sequence[int], ignore_index: int | None = -100) -> torch.Tensor:
    """Top-k hits of one batch: for each ``k`` in ``top_k``, the number of counted positions whose
    target is among the ``k`` highest scores (ties at the k-th score broken by :func:`torch.topk`).

    Args:
        scores: ``(N, C)`` / ``(N, C, d1, ...)``; labels are refused (top-k needs a ranking).
        targets: integer class indices ``(N,)`` / ``(N, d1, ...)``.
        top_k: values of ``k`` in ``[1, C]``.
        ignore_index: as in :func:`confusion_counts`.

    Returns:
        ``(len(top_k),)`` int64 tensor on the targets' device.
    """
    ignore = _check_ignore(ignore_index)
    t = _as_targets(targets)
    s = as_tensor(scores, "scores")
    if s.dim() != t.dim() + 1:
        raise ValueError(
            f"scores must have shape (N, C) or (N, C, d1, ...), a class dimension more than the targets of "
            f"shape {tuple(t.shape)}; got {tuple(s.shape)}"
        )
    if s.shape[1] < 1:
        raise ValueError(f"scores must have at least one class (C >= 1); got shape {tuple(s.shape)}")
    c = s.shape[1]
    s, _ = _as_preds(s, t, c)
    ks = check_top_k(top_k, c)
    t = t.long()
    check_label_range(t, c, ignore)
    return _top_k_hits(s, t, ks, ignore)


def _top_k_hits(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...], ignore: int | None) -> torch.Tensor:
    if not ks:
        return torch.zeros(0, dtype=torch.int64, device=targets.device)
    top = scores.topk(max(ks), dim=1).indices  # (N, kmax, d1, ...), best first
    target = targets.to(top.device)
    within = (top == target.unsqueeze(1)).cumsum(1)  # within[:, k - 1] = 1 iff the target is in the top k
    if ignore is not None:
        within = within * (target != ignore).unsqueeze(1)
    return torch.stack([within[:, k - 1].sum() for k in ks]).to(targets.device)


# --- the collective ------------------------------------------------------------------------------


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Sums ``tensor`` in place over the processes of ``group`` and returns it.

    A collective: every process of ``group`` must call it. NCCL reduces only CUDA tensors, so a
    CPU tensor under the NCCL backend travels through ``torch.cuda.current_device()`` and back.
    Without ``torch.distributed`` (not available, or no process group initialised) it is a no-op
    returning ``tensor``.
    """
    if not _distributed():
        return tensor
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    if work.device.type == "cpu" and dist.get_backend(group) == "nccl":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


# --- the streaming counter: one for the metrics, the trainer and CDB ------------------------------------------


def _confidence_units(scores: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Per true class, the sum of ``softmax(scores)[target]`` of one batch in int64 units of ``2**-32``, ``(C,)`` on the
    targets' device. ``scores`` and ``targets`` have passed :func:`confusion_counts`'s checks.
    Ignored positions go to class 0 with 0 units: no boolean indexing, no host sync."""
    t = targets.long()
    s = scores.to(t.device)
    if s.dtype not in (torch.float32, torch.float64):
        s = s.float()  # half-precision and integer scores: the softmax in float32
    valid = t != ignore_index
    index = torch.where(valid, t, torch.zeros_like(t))
    prob = s.softmax(dim=1).gather(1, index.unsqueeze(1)).squeeze(1)
    # prob * 2**32 is exact (a power of two); from 2**24 (float32) or 2**53 (float64) on every value is an integer.
    units = torch.where(valid, (prob * CONFIDENCE_SCALE).round().to(torch.int64), torch.zeros_like(t))
    zeros = torch.zeros(num_classes, dtype=torch.int64, device=t.device)
    return zeros.index_add_(0, index.reshape(-1), units.reshape(-1))


class ConfusionMeter(nn.Module):
    """Accumulates a confusion matrix (and optional top-k hit counts) batch by batch.

    The counts are exact int64 buffers: ``confusion`` ``(C, C)`` (rows = true class, columns =
    predicted class) and, when ``top_k`` is given, ``top_k_hits`` ``(len(top_k),)``. They follow
    ``.to(device)`` (put the meter on the model's device, so that :meth:`update` needs no copy)
    and ``state_dict``; ``.to(dtype)`` / ``.double()`` leave them int64.

    Example::

        meter = ConfusionMeter(num_classes, top_k=(5,)).to(device)
        for x, y in loader:
            meter.update(model(x), y)
        meter.all_reduce()                           # a no-op without torch.distributed
        report = meter.report(train_counts=counts)   # the keys of metrics.classification_report

    With ``confidence=True`` it also sums, per true class, the softmax probability the scores give
    that class (the scores are taken as logits): the int64 buffer ``confidence_units`` ``(C,)`` in
    fixed-point units of ``2**-32`` (each sample's probability, a float32 or float64 number, is
    rounded to a multiple of ``2**-32``: an error below ``1.2e-10`` per sample). Integers keep the
    sum exact and independent of the batch order and of the process split, travel in the same
    collective as the counts, survive ``.to(dtype)`` and work on devices without float64 (MPS);
    ``2**31`` samples of one class fit. :attr:`true_prob_sum` and :meth:`confidence` read it.
    CDB's difficulty from confidence (:func:`longtail.difficulty.estimated_accuracy`) uses it.

    Args:
        num_classes: ``C``.
        top_k: values of k to count top-k hits for (each in ``[1, C]``); then every
            :meth:`update` must pass scores.
        ignore_index: target value whose positions are not counted (in the matrix nor in the top-k
            hits, nor in the confidence sums).
        confidence: also sum the true class's softmax probability per class; then every
            :meth:`update` must pass scores (logits).

    Shapes:
        :meth:`update` takes the inputs of :func:`longtail.confusion.confusion_counts`: dense
        ``(N, C, d1, ...)`` scores or labels, and ``ignore_index``.

    Example:
        >>> meter = ConfusionMeter(3, top_k=(2,))
        >>> logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
        >>> meter.update(logits, torch.tensor([0, 1, 2, -100]))  # the last sample is ignored
        >>> meter.confusion
        tensor([[1, 0, 0],
                [0, 1, 0],
                [1, 0, 0]])
        >>> meter.top_k_hits  # class 2 has the second-highest score of the third sample
        tensor([3])
        >>> meter.total, meter.accuracy()
        (tensor([1, 1, 1]), tensor([1., 1., 0.], dtype=torch.float64))
        >>> report = meter.report(include_confusion=False)
        >>> round(report["balanced_accuracy"], 4), report["top_k_accuracy"]
        (0.6667, {'2': 1.0})
    """

    confusion: torch.Tensor
    top_k_hits: torch.Tensor
    confidence_units: torch.Tensor

    def __init__(
        self, num_classes: int, top_k: Sequence[int] = (), ignore_index: int = -100, *, confidence: bool = False
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.top_k = check_top_k(top_k, self.num_classes)
        self.ignore_index = check_ignore_index(ignore_index)
        if not isinstance(confidence, bool):
            raise TypeError(f"confidence must be True or False; got {type(confidence).__name__} {confidence!r}")
        self.tracks_confidence = confidence
        self.register_buffer("confusion", torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64))
        if self.top_k:
            self.register_buffer("top_k_hits", torch.zeros(len(self.top_k), dtype=torch.int64))
        if self.tracks_confidence:
            self.register_buffer("confidence_units", torch.zeros(self.num_classes, dtype=torch.int64))

    @torch.no_grad()
    def update(self, preds: Any, targets: Any) -> None:
        """Adds one batch: scores or predicted labels ``preds`` and class indices ``targets``.

        A batch that fails a check changes nothing.
        """
        p, t = as_tensor(preds, "preds"), as_tensor(targets, "targets")
        counts = confusion_counts(p, t, self.num_classes, self.ignore_index)
        hits = units = None
        if self.top_k:
            if p.dim() != t.dim() + 1:
                raise ValueError(
                    f"preds must be scores of shape (N, C) or (N, C, d1, ...) for top_k={list(self.top_k)}; "
                    f"got predicted labels of shape {tuple(p.shape)}"
                )
            hits = top_k_counts(p, t, self.top_k, self.ignore_index)
        if self.tracks_confidence:
            if p.dim() != t.dim() + 1:
                raise ValueError(
                    "preds must be scores (logits) of shape (N, C) or (N, C, d1, ...) for confidence=True; "
                    f"got predicted labels of shape {tuple(p.shape)}"
                )
            units = _confidence_units(p, t, self.num_classes, self.ignore_index)
        self.confusion += counts.to(self.confusion.device)
        if hits is not None:
            self.top_k_hits += hits.to(self.top_k_hits.device)
        if units is not None:
            self.confidence_units += units.to(self.confidence_units.device)

    def forward(self, preds: Any, targets: Any) -> None:
        """Same as :meth:`update` (so the meter can be called like a metric)."""
        self.update(preds, targets)

    def reset(self) -> None:
        """Zeroes the counts."""
        self.confusion.zero_()
        if self.top_k:
            self.top_k_hits.zero_()
        if self.tracks_confidence:
            self.confidence_units.zero_()

    @torch.no_grad()
    def all_reduce(self: _Meter, group: Any = None) -> _Meter:
        """Sums the counts over the processes of ``group`` when ``torch.distributed`` is initialised.

        A no-op in a single process. A collective (the matrix and the top-k hits travel in one
        call): every process must call it, once per evaluation pass after its last :meth:`update`;
        calling it twice would count the other processes' samples twice. A process that saw no
        batch contributes zeros. Afterwards every process holds the pooled counts.

        Returns:
            ``self``, to chain ``criterion.update_from(meter.all_reduce())``.
        """
        if not _distributed():
            return self
        c = self.num_classes
        parts = [self.confusion.reshape(-1)]
        if self.top_k:
            parts.append(self.top_k_hits.to(self.confusion.device))
        if self.tracks_confidence:
            parts.append(self.confidence_units.to(self.confusion.device))
        summed = all_reduce_sum(torch.cat(parts), group)
        self.confusion.copy_(summed[: c * c].view(c, c))
        k = len(self.top_k)
        if self.top_k:
            self.top_k_hits.copy_(summed[c * c : c * c + k])
        if self.tracks_confidence:
            self.confidence_units.copy_(summed[c * c + k :])
        return self

    def compute(self) -> torch.Tensor:
        """A copy of the accumulated confusion matrix: CPU ``(C, C)`` int64."""
        return self.confusion.detach().to("cpu", copy=True)

    @torch.no_grad()
    def merge(self: _Meter, other: ConfusionMeter) -> _Meter:
        """Adds another meter's counts into this one (e.g. gathered from another worker); returns ``self``."""
        if not isinstance(other, ConfusionMeter):
            raise TypeError(f"other must be a ConfusionMeter; got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.top_k != self.top_k:
            raise ValueError(
                f"other must be a ConfusionMeter with num_classes={self.num_classes}, top_k={list(self.top_k)}; "
                f"got num_classes={other.num_classes}, top_k={list(other.top_k)}"
            )
        if self.tracks_confidence and not other.tracks_confidence:
            raise ValueError("other must be a ConfusionMeter with confidence=True, as this one; got confidence=False")
        self.confusion += other.confusion.to(self.confusion.device)
        if self.top_k:
            self.top_k_hits += other.top_k_hits.to(self.top_k_hits.device)
        if self.tracks_confidence:
            self.confidence_units += other.confidence_units.to(self.confidence_units.device)
        return self

    @property
    def num_samples(self) -> int:
        """Number of (non-ignored) positions counted so far."""
        return int(self.confusion.sum())

    @property
    def correct(self) -> torch.Tensor:
        """Correctly predicted positions per true class, ``(C,)`` int64: the diagonal (a view)."""
        return self.confusion.diagonal()

    @property
    def total(self) -> torch.Tensor:
        """Counted positions per true class, ``(C,)`` int64: the row sums."""
        return self.confusion.sum(dim=1)

    def accuracy(self) -> torch.Tensor:
        """Per-class accuracy (recall) ``correct / total``, ``(C,)`` float64 on the CPU; NaN for a
        class with no counted sample."""
        confusion = self.confusion.detach().cpu()
        # 0 / 0 gives NaN, the "no sample" marker, without a warning.
        return confusion.diagonal().to(torch.float64) / confusion.sum(dim=1).to(torch.float64)

    @property
    def true_prob_sum(self) -> torch.Tensor:
        """Per true class, the sum of the softmax probability of the true class, ``(C,)`` float64 on
        the CPU (only with ``confidence=True``)."""
        if not self.tracks_confidence:
            raise AttributeError("true_prob_sum needs a ConfusionMeter built with confidence=True")
        return self.confidence_units.detach().cpu().to(torch.float64) / CONFIDENCE_SCALE

    def confidence(self) -> torch.Tensor:
        """Per-class mean probability of the true class, ``true_prob_sum / total``, ``(C,)`` float64
        on the CPU; NaN for a class with no counted sample (only with ``confidence=True``)."""
        return self.true_prob_sum / self.confusion.detach().cpu().sum(dim=1).to(torch.float64)

    def report(
        self,
        train_counts: Any = None,
        *,
        many_threshold: float = 100,
        few_threshold: float = 20,
        include_confusion: bool = True,
    ) -> dict[str, Any]:
        """The dict of :func:`longtail.metrics.classification_report` for everything counted so far
        (``top_k_accuracy`` included when the meter counts top-k hits)."""
        report = report_from_confusion(
            self.compute(),
            train_counts,
            many_threshold=many_threshold,
            few_threshold=few_threshold,
            include_confusion=include_confusion,
        )
        if self.top_k:
            n = report["num_samples"]
            report["top_k_accuracy"] = {str(k): int(h) / n for k, h in zip(self.top_k, self.top_k_hits.tolist())}
        return report

    def extra_repr(self) -> str:
        top_k = f", top_k={list(self.top_k)}" if self.top_k else ""
        confidence = ", confidence=True" if self.tracks_confidence else ""
        return f"num_classes={self.num_classes}{top_k}, ignore_index={self.ignore_index}{confidence}"
