"""Metrics of a ``(C, C)`` confusion matrix (rows = true class), on the CPU in float64: per-class accuracy,
balanced accuracy, macro F1, shot groups and the JSON-ready report.

The one place that turns counts into numbers: :mod:`longtail.metrics` computes its metrics from the confusion
matrix of predictions, and :meth:`longtail.confusion.ConfusionMeter.report` from what it counted. The conventions
(scikit-learn's, tested against it) are in :mod:`longtail.metrics`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .checks import as_confusion_matrix, as_train_counts, check_shot_thresholds

__all__ = ["nan_to_none", "report_from_confusion"]

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


def nan_to_none(x: float) -> float | None:
    """``None`` for NaN (JSON has no NaN), else the float: how reports write an undefined value."""
    return None if math.isnan(x) else float(x)


def report_from_confusion(
    confusion: Any,
    train_counts: Any = None,
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
