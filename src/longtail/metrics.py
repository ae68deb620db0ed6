"""Evaluation metrics that expose the tail of a long-tailed classifier.

Every metric takes predictions in either of two forms:

* scores of shape ``(N, C)`` -- logits or probabilities; the predicted label is the argmax over ``C``
  (ties go to whatever :func:`torch.argmax` picks);
* predicted labels of shape ``(N,)`` with an integer dtype.

and integer ``targets`` of shape ``(N,)`` with values in ``[0, num_classes)``.  Inputs may live on any device:
the only per-sample work (arg-max, top-k, and the confusion-matrix kernel :func:`longtail.confusion.confusion_counts`)
runs on the input's device, after which everything is derived from the small ``(C, C)`` confusion matrix on the CPU
in float64 (so the results do not depend on the device and work where float64 is unsupported, e.g. MPS).  NumPy
arrays and lists are accepted too and converted with :func:`torch.as_tensor`.

The streaming counter :class:`ConfusionMeter` (batch by batch, summed over processes with ``all_reduce``) is the
library's one per-class counter: the trainer evaluates with it and CDB takes its weights from it. It also takes
dense inputs ``(N, C, d1, ...)`` and an ``ignore_index``, and its :meth:`~ConfusionMeter.report` is
:func:`report_from_confusion` of what it counted.

Conventions (chosen to match scikit-learn, and tested against it):

* **Per-class accuracy** is the recall of each class, ``cm[c, c] / cm[c, :].sum()``; a class with no test samples
  has no recall and gets ``NaN``.
* **Balanced accuracy** is the mean per-class accuracy over the classes present in ``targets``
  (= ``sklearn.metrics.balanced_accuracy_score``).  On a balanced test set it equals top-1 accuracy.
* **Macro F1** averages the per-class F1 ``2 TP / (2 TP + FP + FN)`` over the classes that occur in ``targets`` or
  in the predictions; a class that occurs in only one of the two has F1 = 0 (the ``0/0`` precision or recall is
  taken as 0).  This is ``sklearn.metrics.f1_score(y, p, average="macro", zero_division=0)``.
* **Shot groups** (METHODS.md section 3): *many* = classes with more than ``many_threshold`` (100) training images,
  *medium* = ``few_threshold..many_threshold`` inclusive (20..100), *few* = fewer than ``few_threshold`` (20).
  A group's accuracy is the mean per-class accuracy over its classes that have test samples; a group with no such
  class is ``NaN`` from :func:`shot_accuracy` and ``None`` in :func:`classification_report` (whose output must
  survive ``json.dumps(..., allow_nan=False)``).

Scalar metrics of zero samples are undefined and raise :class:`ValueError` rather than returning a silent NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar, Union

import numpy as np
import torch
from torch import nn

from .checks import (
    as_confusion_matrix,
    as_tensor,
    as_train_counts,
    check_k,
    check_ignore_index,
    check_num_classes,
    check_shot_thresholds,
    check_top_k,
)
from .confusion import all_reduce_sum, confusion_counts, top_k_counts

# ConfusionMeter(confidence=True) sums the true class's probability in int64 units of 2**-32 (fixed point).
CONFIDENCE_SCALE = 2**32

__all__ = [
    "ConfusionMeter",
    "accuracy",
    "balanced_accuracy",
    "classification_report",
    "confusion_matrix",
    "macro_f1",
    "per_class_accuracy",
    "report_from_confusion",
    "shot_accuracy",
    "relative_shot_thresholds",
    "shot_groups",
    "top_k_accuracy",
]

_Meter = TypeVar("_Meter", bound="ConfusionMeter")
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[int], Sequence[float], Sequence[Sequence[float]]]


# --------------------------------------------------------------------------------------------------------------
# Inputs: one sample per row. The checks are those of longtail.checks, the counting is longtail.confusion's kernel.
# --------------------------------------------------------------------------------------------------------------


def _inputs(preds: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``preds`` ``(N, C)`` / ``(N,)`` and ``targets`` ``(N,)`` as tensors (dtypes and values: the kernel's checks)."""
    t = as_tensor(targets, "targets")
    if t.ndim != 1:
        raise ValueError(f"targets must have shape (N,); got {tuple(t.shape)}")
    p = as_tensor(preds, "preds")
    if p.ndim not in (1, 2):
        raise ValueError(f"preds must be scores of shape (N, C) or labels of shape (N,); got {tuple(p.shape)}")
    return p, t


def _confusion(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CPU ``(C, C)`` int64 counts. The metrics ignore no label: every target must be a class index."""
    return confusion_counts(preds, targets, num_classes, ignore_index=None).cpu()


# --------------------------------------------------------------------------------------------------------------
# Metrics from a confusion matrix (CPU, float64)
# --------------------------------------------------------------------------------------------------------------


def _per_class_from_cm(cm: torch.Tensor) -> torch.Tensor:
    support = cm.sum(dim=1).to(torch.float64)
    # 0/0 -> NaN is exactly the "no test samples" marker we want; torch does not warn on it.
    return cm.diagonal().to(torch.float64) / support


def _check_samples(cm: torch.Tensor, metric: str) -> int:
    n = int(cm.sum())
    if n == 0:
        raise ValueError(
            f"{metric} must be computed from at least one sample; got N=0 ({metric} of zero samples is undefined)"
        )
    return n


def _accuracy_from_cm(cm: torch.Tensor) -> float:
    return int(cm.diagonal().sum()) / _check_samples(cm, "accuracy")


def _balanced_from_cm(cm: torch.Tensor) -> float:
    _check_samples(cm, "balanced_accuracy")
    recall = _per_class_from_cm(cm)
    return float(recall[cm.sum(dim=1) > 0].mean())


def _macro_f1_from_cm(cm: torch.Tensor) -> float:
    _check_samples(cm, "macro_f1")
    tp = cm.diagonal().to(torch.float64)
    support = cm.sum(dim=1).to(torch.float64)  # TP + FN
    predicted = cm.sum(dim=0).to(torch.float64)  # TP + FP
    present = (support > 0) | (predicted > 0)
    # Among present classes 2TP + FP + FN > 0, so F1 is defined; a class present on one side only has TP = 0.
    f1 = 2.0 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


def _group_masks(counts: torch.Tensor, many_threshold: float, few_threshold: float) -> dict[str, torch.Tensor]:
    return {
        "many": counts > many_threshold,
        "medium": (counts >= few_threshold) & (counts <= many_threshold),
        "few": counts < few_threshold,
    }


def _shot_from_per_class(
    acc: torch.Tensor, counts: torch.Tensor, many_threshold: float, few_threshold: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, mask in _group_masks(counts, many_threshold, few_threshold).items():
        # Classes without test samples (NaN) carry no evidence about the group; skip them rather than poison it.
        vals = acc[mask & ~torch.isnan(acc)]
        out[name] = float(vals.mean()) if vals.numel() > 0 else math.nan
    return out


# --------------------------------------------------------------------------------------------------------------
# Public functional API
# --------------------------------------------------------------------------------------------------------------


def confusion_matrix(preds: ArrayLike, targets: ArrayLike, num_classes: int) -> torch.Tensor:
    """Confusion matrix of counts.

    Args:
        preds: scores ``(N, C)`` (argmax taken) or predicted labels ``(N,)`` (integer dtype).
        targets: true labels ``(N,)``, integer dtype, values in ``[0, num_classes)``.
        num_classes: ``C``.

    Returns:
        CPU tensor ``(C, C)`` int64; ``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``.
        ``N = 0`` gives all zeros.
    """
    c = check_num_classes(num_classes)
    p, t = _inputs(preds, targets)
    return _confusion(p, t, c)


def accuracy(preds: ArrayLike, targets: ArrayLike, num_classes: int) -> float:
    """Top-1 accuracy in ``[0, 1]`` over ``N`` samples (``preds`` ``(N, C)`` or ``(N,)``, ``targets`` ``(N,)``).

    Raises:
        ValueError: for ``N = 0``, mismatched shapes or labels outside ``[0, num_classes)``.
    """
    return _accuracy_from_cm(confusion_matrix(preds, targets, num_classes))


def top_k_accuracy(logits: ArrayLike, targets: ArrayLike, k: int, num_classes: int | None = None) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Args:
        logits: scores ``(N, C)``; labels are not accepted (top-k needs a ranking).
        targets: ``(N,)`` integer labels in ``[0, C)``.
        k: ``1 <= k <= C``.  Ties at the k-th score are broken by :func:`torch.topk`.
        num_classes: optional check that ``C`` equals it.

    Returns:
        float in ``[0, 1]``.
    """
    s = as_tensor(logits, "logits")
    if s.ndim != 2:
        raise ValueError(
            f"logits must be scores of shape (N, C) (top-k needs a ranking, not labels); got {tuple(s.shape)}"
        )
    c = s.shape[1]
    if c == 0:
        raise ValueError(f"logits must have at least one class (C >= 1); got shape {tuple(s.shape)}")
    if num_classes is not None and check_num_classes(num_classes) != c:
        raise ValueError(f"logits must have num_classes={num_classes} columns; got shape {tuple(s.shape)}")
    k = check_k(k, c)
    t = as_tensor(targets, "targets")
    if t.ndim != 1:
        raise ValueError(f"targets must have shape (N,); got {tuple(t.shape)}")
    hits = int(top_k_counts(s, t, (k,), ignore_index=None)[0])
    if t.shape[0] == 0:
        raise ValueError(
            "top_k_accuracy must be computed from at least one sample; got N=0 "
            "(top_k_accuracy of zero samples is undefined)"
        )
    return hits / t.shape[0]


def per_class_accuracy(preds: ArrayLike, targets: ArrayLike, num_classes: int) -> torch.Tensor:
    """Per-class recall.

    Returns:
        CPU tensor ``(C,)`` float64; entry ``c`` = fraction of the test samples of class ``c`` predicted as ``c``,
        **NaN** when class ``c`` has no test samples (use :func:`torch.nanmean` to average).
    """
    return _per_class_from_cm(confusion_matrix(preds, targets, num_classes))


def balanced_accuracy(preds: ArrayLike, targets: ArrayLike, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``targets`` (= sklearn ``balanced_accuracy_score``).

    Classes absent from ``targets`` are ignored even if they are predicted (their false positives still lower the
    recall of the classes they were taken from).
    """
    return _balanced_from_cm(confusion_matrix(preds, targets, num_classes))


def macro_f1(preds: ArrayLike, targets: ArrayLike, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes occurring in ``targets`` or in the predictions.

    A class that is never predicted (or predicted but never true) contributes F1 = 0, matching
    ``sklearn.metrics.f1_score(targets, preds, average="macro", zero_division=0)``.  Classes absent from both are
    left out, as sklearn does when no ``labels=`` argument is given.
    """
    return _macro_f1_from_cm(confusion_matrix(preds, targets, num_classes))


# Shot thresholds relative to the head class: 0.2 and 0.04 of its count give CIFAR-100-LT's 100 / 20 for its
# 500-image head, and 1000 / 200 for a 5000-image head (Fashion-MNIST-LT, CIFAR-10-LT), where 100 / 20 leaves the
# few-shot group empty.
RELATIVE_MANY, RELATIVE_FEW = 0.2, 0.04


def relative_shot_thresholds(train_counts: ArrayLike) -> tuple[float, float]:
    """``(many_threshold, few_threshold)`` = 0.2 and 0.04 times the largest training count (the trainer's default)."""
    head = float(as_train_counts(train_counts).max())
    return RELATIVE_MANY * head, RELATIVE_FEW * head


def shot_groups(
    train_counts: ArrayLike, many_threshold: float = 100, few_threshold: float = 20
) -> dict[str, list[int]]:
    """Class indices of the many / medium / few-shot groups.

    Args:
        train_counts: ``(C,)`` number of *training* images per class.
        many_threshold: classes with count ``> many_threshold`` are many-shot.
        few_threshold: classes with count ``< few_threshold`` are few-shot; the rest (inclusive range
            ``[few_threshold, many_threshold]``) are medium-shot.

    Returns:
        ``{"many": [...], "medium": [...], "few": [...]}`` (lists may be empty).
    """
    many, few = check_shot_thresholds(many_threshold, few_threshold)
    counts = as_train_counts(train_counts)
    return {name: torch.nonzero(mask).flatten().tolist() for name, mask in _group_masks(counts, many, few).items()}


def shot_accuracy(
    per_class_acc_or_preds: ArrayLike,
    train_counts: ArrayLike,
    *,
    targets: ArrayLike | None = None,
    num_classes: int | None = None,
    many_threshold: float = 100,
    few_threshold: float = 20,
) -> dict[str, float]:
    """Mean per-class accuracy of the many / medium / few-shot class groups.

    Two call forms:

    * ``shot_accuracy(per_class_acc, train_counts)`` with ``per_class_acc`` ``(C,)`` floats (e.g. from
      :func:`per_class_accuracy`; NaN marks a class without test samples);
    * ``shot_accuracy(preds, train_counts, targets=targets)`` with ``preds`` ``(N, C)`` or ``(N,)``;
      ``num_classes`` defaults to ``len(train_counts)``.

    Args:
        train_counts: ``(C,)`` training images per class (the whole training set, not the test set).
        many_threshold, few_threshold: many = count ``> many_threshold``, medium = ``few_threshold <= count <=
            many_threshold``, few = count ``< few_threshold``.  Defaults 100 / 20 are the CIFAR-LT convention; raise
            them for datasets whose tail is larger (e.g. Fashion-MNIST-LT with rho=100 keeps >= 60 per class).

    Returns:
        ``{"many": float, "medium": float, "few": float}``; each is the mean accuracy over the group's classes
        that have test samples, ``NaN`` for a group with no such class.
    """
    many, few = check_shot_thresholds(many_threshold, few_threshold)
    counts = as_train_counts(train_counts)
    if targets is not None:
        c = check_num_classes(num_classes if num_classes is not None else counts.numel())
        acc = per_class_accuracy(per_class_acc_or_preds, targets, c)
    else:
        if num_classes is not None:
            raise ValueError(
                f"num_classes must be None without targets= (it is only used with predictions); got {num_classes!r}"
            )
        acc = as_tensor(per_class_acc_or_preds, "per_class_acc")
        if acc.ndim != 1:
            raise ValueError(
                f"per_class_acc must have shape (C,) (or pass targets= to give predictions); got {tuple(acc.shape)}"
            )
        if not acc.is_floating_point():
            raise TypeError(
                f"per_class_acc must hold floats in [0, 1] (to pass predicted labels, also pass targets=); "
                f"got dtype {acc.dtype}"
            )
        acc = acc.to(device="cpu", dtype=torch.float64)
    counts = as_train_counts(counts, acc.shape[0])
    return _shot_from_per_class(acc, counts, many, few)


def nan_to_none(x: float) -> float | None:
    """``None`` for NaN (JSON has no NaN), else the float: how reports write an undefined value."""
    return None if math.isnan(x) else float(x)


def report_from_confusion(
    confusion: ArrayLike,
    train_counts: ArrayLike | None = None,
    *,
    many_threshold: float = 100,
    few_threshold: float = 20,
    include_confusion: bool = True,
) -> dict[str, Any]:
    """JSON-ready summary of a ``(C, C)`` confusion matrix (rows = true class).

    Returns a dict of plain Python values (NaN replaced by ``None``)::

        num_samples: int                  num_classes: int
        accuracy: float                   balanced_accuracy: float          macro_f1: float
        per_class_accuracy: list[float | None]   (None = class has no test samples)
        per_class_support: list[int]      (test samples per class)
        confusion_matrix: list[list[int]] (only if include_confusion)
        # only when train_counts is given:
        shot_accuracy: {"many": float | None, "medium": ..., "few": ...}
        shot_num_classes: {"many": int, "medium": int, "few": int}
        shot_thresholds: {"many": many_threshold, "few": few_threshold}

    Raises:
        ValueError: if the matrix holds no samples.
    """
    cm = as_confusion_matrix(confusion)
    c = cm.shape[0]
    if int(cm.sum()) == 0:
        raise ValueError(
            "confusion must hold at least one sample (a report of zero samples is undefined); "
            f"got an all-zero matrix of shape {tuple(cm.shape)}"
        )
    acc = _per_class_from_cm(cm)
    report: dict[str, Any] = {
        "num_samples": int(cm.sum()),
        "num_classes": c,
        "accuracy": _accuracy_from_cm(cm),
        "balanced_accuracy": _balanced_from_cm(cm),
        "macro_f1": _macro_f1_from_cm(cm),
        "per_class_accuracy": [nan_to_none(v) for v in acc.tolist()],
        "per_class_support": cm.sum(dim=1).tolist(),
    }
    if train_counts is not None:
        many, few = check_shot_thresholds(many_threshold, few_threshold)
        counts = as_train_counts(train_counts, c)
        shots = _shot_from_per_class(acc, counts, many, few)
        report["shot_accuracy"] = {k: nan_to_none(v) for k, v in shots.items()}
        report["shot_num_classes"] = {k: int(m.sum()) for k, m in _group_masks(counts, many, few).items()}
        report["shot_thresholds"] = {"many": many_threshold, "few": few_threshold}
    if include_confusion:
        report["confusion_matrix"] = cm.tolist()
    return report


def classification_report(
    preds: ArrayLike,
    targets: ArrayLike,
    num_classes: int,
    train_counts: ArrayLike | None = None,
    *,
    top_k: Sequence[int] = (),
    many_threshold: float = 100,
    few_threshold: float = 20,
    include_confusion: bool = True,
) -> dict[str, Any]:
    """All metrics of this module in one JSON-serialisable dict (see :func:`report_from_confusion` for the keys).

    Args:
        preds: scores ``(N, C)`` or labels ``(N,)``.
        targets: ``(N,)`` integer labels.
        num_classes: ``C``.
        train_counts: ``(C,)`` training images per class; enables the shot-group entries.
        top_k: values of k for top-k accuracy (needs scores ``(N, C)``); adds ``top_k_accuracy: {"k": float}``.
        many_threshold, few_threshold: shot-group thresholds, see :func:`shot_accuracy`.
        include_confusion: include the full confusion matrix as a nested list.
    """
    c = check_num_classes(num_classes)
    p, t = _inputs(preds, targets)
    ks = check_top_k(top_k, c)
    report = report_from_confusion(
        _confusion(p, t, c),
        train_counts,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        include_confusion=include_confusion,
    )
    if ks:
        if p.ndim != 2:
            raise ValueError(
                f"preds must be scores of shape (N, C) for top_k={list(ks)}; got labels of shape {tuple(p.shape)}"
            )
        hits = top_k_counts(p, t, ks, ignore_index=None).tolist()
        report["top_k_accuracy"] = {str(k): h / t.shape[0] for k, h in zip(ks, hits)}
    return report


# --------------------------------------------------------------------------------------------------------------
# The streaming counter: one for the metrics, the trainer and CDB
# --------------------------------------------------------------------------------------------------------------


def _confidence_units(scores: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Per true class, the sum of ``softmax(scores)[target]`` of one batch in int64 units of ``2**-32``, ``(C,)`` on the
    targets' device. ``scores`` and ``targets`` have passed :func:`longtail.confusion.confusion_counts`'s checks.
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
    CDB's difficulty from confidence (:func:`longtail.cdb.estimated_accuracy`) uses it.

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
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
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
