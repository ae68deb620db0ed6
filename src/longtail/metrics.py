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

The streaming counter :class:`ConfusionMeter` (batch by batch, summed over processes with ``all_reduce``; it lives
beside the counting kernels in :mod:`longtail.confusion` and is importable from here) is the library's one per-class
counter: the trainer evaluates with it and CDB takes its weights from it. It also takes
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
from typing import Any, Union

import numpy as np
import torch

from .checks import (
    as_confusion_matrix,
    as_tensor,
    as_train_counts,
    check_k,
    check_num_classes,
    check_shot_thresholds,
    check_top_k,
)
# ConfusionMeter, the one per-class counter, lives beside the counting kernels; importable from here as always.
from .confusion import CONFIDENCE_SCALE, ConfusionMeter, confusion_counts, top_k_counts
from .confusion_metrics import (
    _accuracy_from_cm,
    _balanced_from_cm,
    _group_masks,
    _macro_f1_from_cm,
    _per_class_from_cm,
    _shot_from_per_class,
    nan_to_none,
    report_from_confusion,
)

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
