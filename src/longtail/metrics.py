"""Evaluation metrics that expose the tail of a long-tailed classifier.

Every metric takes predictions in either of two forms:

* scores of shape ``(N, C)`` -- logits or probabilities; the predicted label is the argmax over ``C``
  (ties go to whatever :func:`torch.argmax` picks);
* predicted labels of shape ``(N,)`` with an integer dtype.

and integer ``targets`` of shape ``(N,)`` with values in ``[0, num_classes)``.  Inputs may live on any device:
the only per-sample work (arg-max, top-k, a :func:`torch.bincount` over ``target * C + pred``) runs on the input's
device, after which everything is derived from the small ``(C, C)`` confusion matrix on the CPU in float64 (so the
results do not depend on the device and work where float64 is unsupported, e.g. MPS).  NumPy arrays and lists are
accepted too and converted with :func:`torch.as_tensor`.

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
    "shot_groups",
    "top_k_accuracy",
]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[int], Sequence[float], Sequence[Sequence[float]]]


# --------------------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------------------


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"{name}: expected a tensor, array or list of numbers; could not convert it ({exc})"
            ) from exc
    raise TypeError(f"{name}: expected a torch.Tensor, numpy.ndarray or list, got {type(x).__name__}")


def _check_num_classes(num_classes: Any) -> int:
    # bool is an int subclass; True as a class count is always a bug.
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes: expected a positive int, got {num_classes!r} ({type(num_classes).__name__})")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes}")
    return int(num_classes)


def _is_integer_dtype(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _check_range(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.numel() == 0:
        return
    # One device->host sync for the common (valid) case; min/max only computed when reporting an error.
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(
            f"{name}: expected labels in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values in [{lo}, {hi}]"
        )


def _check_targets(targets: Any, num_classes: int) -> torch.Tensor:
    t = _as_tensor(targets, "targets")
    if t.ndim != 1:
        raise ValueError(f"targets: expected shape (N,), got {tuple(t.shape)}")
    if not _is_integer_dtype(t):
        raise TypeError(f"targets: expected an integer dtype, got {t.dtype}")
    _check_range(t, num_classes, "targets")
    return t.long()


def _to_labels(preds: Any, num_classes: int, name: str = "preds") -> torch.Tensor:
    """Predicted labels ``(N,)`` int64 from scores ``(N, C)`` or labels ``(N,)``, validated."""
    p = _as_tensor(preds, name)
    if p.ndim == 2:
        if p.shape[1] != num_classes:
            raise ValueError(
                f"{name}: scores of shape (N, C) need C == num_classes={num_classes}, got shape {tuple(p.shape)}"
            )
        return p.argmax(dim=1)
    if p.ndim == 1:
        if not _is_integer_dtype(p):
            raise TypeError(
                f"{name}: a 1-D input is read as predicted labels and needs an integer dtype, got {p.dtype} "
                "(pass scores as shape (N, C))"
            )
        _check_range(p, num_classes, name)
        return p.long()
    raise ValueError(f"{name}: expected scores of shape (N, C) or labels of shape (N,), got {tuple(p.shape)}")


def _check_same_length(preds: torch.Tensor, targets: torch.Tensor, what: str = "preds") -> None:
    if preds.shape[0] != targets.shape[0]:
        raise ValueError(
            f"{what} and targets must have the same number of samples N: "
            f"got {preds.shape[0]} {what} and {targets.shape[0]} targets"
        )


def _check_confusion(cm: Any) -> torch.Tensor:
    m = _as_tensor(cm, "confusion")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"confusion: expected a square (C, C) matrix with C >= 1, got shape {tuple(m.shape)}")
    if not _is_integer_dtype(m):
        raise TypeError(f"confusion: expected an integer dtype (counts), got {m.dtype}")
    if bool((m < 0).any()):
        raise ValueError(f"confusion: counts must be non-negative, got minimum {int(m.min())}")
    return m.to(device="cpu", dtype=torch.int64)


def _check_train_counts(train_counts: Any, num_classes: int) -> torch.Tensor:
    c = _as_tensor(train_counts, "train_counts")
    if c.ndim != 1 or c.shape[0] != num_classes:
        raise ValueError(f"train_counts: expected shape ({num_classes},) (one count per class), got {tuple(c.shape)}")
    if c.is_floating_point():
        if bool((c != c.round()).any()):
            raise TypeError(f"train_counts: expected integer counts, got non-integral values of dtype {c.dtype}")
    elif not _is_integer_dtype(c):
        raise TypeError(f"train_counts: expected integer counts, got dtype {c.dtype}")
    c = c.to(device="cpu", dtype=torch.int64)
    if bool((c < 0).any()):
        raise ValueError(f"train_counts: counts must be non-negative, got minimum {int(c.min())}")
    return c


def _check_thresholds(many_threshold: float, few_threshold: float) -> None:
    if not (few_threshold <= many_threshold):
        raise ValueError(
            f"shot thresholds: expected few_threshold <= many_threshold, "
            f"got few_threshold={few_threshold}, many_threshold={many_threshold}"
        )


# --------------------------------------------------------------------------------------------------------------
# Metrics from a confusion matrix (CPU, float64)
# --------------------------------------------------------------------------------------------------------------


def _confusion_on_device(pred_labels: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts on the inputs' device; rows = true class, columns = predicted class."""
    pred_labels = pred_labels.to(targets.device)
    flat = targets * num_classes + pred_labels
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _per_class_from_cm(cm: torch.Tensor) -> torch.Tensor:
    support = cm.sum(dim=1).to(torch.float64)
    # 0/0 -> NaN is exactly the "no test samples" marker we want; torch does not warn on it.
    return cm.diagonal().to(torch.float64) / support


def _accuracy_from_cm(cm: torch.Tensor) -> float:
    n = int(cm.sum())
    if n == 0:
        raise ValueError("accuracy: undefined for zero samples (got N=0)")
    return int(cm.diagonal().sum()) / n


def _balanced_from_cm(cm: torch.Tensor) -> float:
    if int(cm.sum()) == 0:
        raise ValueError("balanced_accuracy: undefined for zero samples (got N=0)")
    recall = _per_class_from_cm(cm)
    return float(recall[cm.sum(dim=1) > 0].mean())


def _macro_f1_from_cm(cm: torch.Tensor) -> float:
    if int(cm.sum()) == 0:
        raise ValueError("macro_f1: undefined for zero samples (got N=0)")
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
    c = _check_num_classes(num_classes)
    t = _check_targets(targets, c)
    p = _to_labels(preds, c)
    _check_same_length(p, t)
    return _confusion_on_device(p, t, c).cpu()


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
    s = _as_tensor(logits, "logits")
    if s.ndim != 2:
        raise ValueError(f"logits: top_k_accuracy needs scores of shape (N, C), got {tuple(s.shape)}")
    c = s.shape[1]
    if c == 0:
        raise ValueError(f"logits: expected at least one class, got shape {tuple(s.shape)}")
    if num_classes is not None and _check_num_classes(num_classes) != c:
        raise ValueError(f"logits: expected C == num_classes={num_classes}, got shape {tuple(s.shape)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= c:
        raise ValueError(f"k: expected an int in [1, {c}] (C={c}), got {k!r}")
    t = _check_targets(targets, c)
    _check_same_length(s, t, "logits")
    if s.shape[0] == 0:
        raise ValueError("top_k_accuracy: undefined for zero samples (got N=0)")
    return int(_top_k_correct(s, t, (int(k),))[0]) / s.shape[0]


def _top_k_correct(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Number of hits for each k in ``ks`` (one topk call for all of them), as an int64 tensor on scores' device."""
    kmax = max(ks)
    top = scores.topk(kmax, dim=1).indices  # (N, kmax), sorted by score
    hit = top == targets.to(scores.device).unsqueeze(1)
    cum = hit.cumsum(dim=1)  # cum[:, k-1] = 1 iff target within the top k
    return torch.stack([cum[:, k - 1].sum() for k in ks])


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
    _check_thresholds(many_threshold, few_threshold)
    c = _as_tensor(train_counts, "train_counts")
    if c.ndim != 1:
        raise ValueError(f"train_counts: expected shape (C,), got {tuple(c.shape)}")
    counts = _check_train_counts(c, c.shape[0])
    return {
        name: torch.nonzero(mask).flatten().tolist()
        for name, mask in _group_masks(counts, many_threshold, few_threshold).items()
    }


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
    _check_thresholds(many_threshold, few_threshold)
    tc = _as_tensor(train_counts, "train_counts")
    if tc.ndim != 1:
        raise ValueError(f"train_counts: expected shape (C,), got {tuple(tc.shape)}")
    if targets is not None:
        c = _check_num_classes(num_classes if num_classes is not None else tc.shape[0])
        acc = per_class_accuracy(per_class_acc_or_preds, targets, c)
    else:
        if num_classes is not None:
            raise ValueError("num_classes is only used with targets= (the preds form); got targets=None")
        acc = _as_tensor(per_class_acc_or_preds, "per_class_acc")
        if acc.ndim != 1:
            raise ValueError(
                f"per_class_acc: expected shape (C,) (or pass targets= to give predictions), got {tuple(acc.shape)}"
            )
        if not acc.is_floating_point():
            raise TypeError(
                f"per_class_acc: expected floats in [0, 1], got dtype {acc.dtype} "
                "(to pass predicted labels, also pass targets=)"
            )
        acc = acc.to(device="cpu", dtype=torch.float64)
    counts = _check_train_counts(tc, acc.shape[0])
    return _shot_from_per_class(acc, counts, many_threshold, few_threshold)


def _nan_to_none(x: float) -> float | None:
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
    cm = _check_confusion(confusion)
    c = cm.shape[0]
    if int(cm.sum()) == 0:
        raise ValueError(f"report: undefined for zero samples (confusion matrix of shape {tuple(cm.shape)} is all 0)")
    acc = _per_class_from_cm(cm)
    report: dict[str, Any] = {
        "num_samples": int(cm.sum()),
        "num_classes": c,
        "accuracy": _accuracy_from_cm(cm),
        "balanced_accuracy": _balanced_from_cm(cm),
        "macro_f1": _macro_f1_from_cm(cm),
        "per_class_accuracy": [_nan_to_none(v) for v in acc.tolist()],
        "per_class_support": cm.sum(dim=1).tolist(),
    }
    if train_counts is not None:
        _check_thresholds(many_threshold, few_threshold)
        counts = _check_train_counts(train_counts, c)
        shots = _shot_from_per_class(acc, counts, many_threshold, few_threshold)
        report["shot_accuracy"] = {k: _nan_to_none(v) for k, v in shots.items()}
        report["shot_num_classes"] = {
            k: int(m.sum()) for k, m in _group_masks(counts, many_threshold, few_threshold).items()
        }
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
    c = _check_num_classes(num_classes)
    t = _check_targets(targets, c)
    p = _as_tensor(preds, "preds")
    labels = _to_labels(p, c)
    _check_same_length(labels, t)
    report = report_from_confusion(
        _confusion_on_device(labels, t, c).cpu(),
        train_counts,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        include_confusion=include_confusion,
    )
    if top_k:
        ks = _check_top_k(top_k, c)
        if p.ndim != 2:
            raise ValueError(f"top_k={list(top_k)} needs scores of shape (N, C), got labels of shape {tuple(p.shape)}")
        hits = _top_k_correct(p, t, ks).tolist()
        report["top_k_accuracy"] = {str(k): h / t.shape[0] for k, h in zip(ks, hits)}
    return report


def _check_top_k(top_k: Sequence[int], num_classes: int) -> tuple[int, ...]:
    ks = tuple(top_k)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_classes:
            raise ValueError(f"top_k: expected ints in [1, {num_classes}] (num_classes={num_classes}), got {list(ks)}")
    return tuple(int(k) for k in ks)


# --------------------------------------------------------------------------------------------------------------
# Streaming accumulator
# --------------------------------------------------------------------------------------------------------------


class ConfusionMeter:
    """Accumulates a confusion matrix (and optional top-k hit counts) batch by batch.

    The counts stay on the device of the first batch, so ``update`` never forces a host sync beyond the label range
    check; :meth:`compute` copies them to the CPU.

    Example::

        meter = ConfusionMeter(num_classes=10, top_k=(5,))
        for x, y in loader:
            meter.update(model(x), y)
        report = meter.report(train_counts=counts)   # same keys as classification_report

    Args:
        num_classes: ``C``.
        top_k: values of k to count top-k hits for; then every ``update`` must pass scores ``(B, C)``.
    """

    def __init__(self, num_classes: int, top_k: Sequence[int] = ()) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.top_k = _check_top_k(top_k, self.num_classes)
        self._cm: torch.Tensor | None = None
        self._topk_hits: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._cm = None
        self._topk_hits = None

    @torch.no_grad()
    def update(self, preds: ArrayLike, targets: ArrayLike) -> None:
        """Add a batch: ``preds`` scores ``(B, C)`` or labels ``(B,)``, ``targets`` ``(B,)``."""
        c = self.num_classes
        t = _check_targets(targets, c)
        p = _as_tensor(preds, "preds")
        labels = _to_labels(p, c)
        _check_same_length(labels, t)
        if self.top_k and p.ndim != 2:
            raise ValueError(
                f"ConfusionMeter(top_k={list(self.top_k)}) needs scores of shape (B, C), got shape {tuple(p.shape)}"
            )
        cm = _confusion_on_device(labels, t, c)
        if self._cm is None:
            self._cm = cm
        else:
            self._cm += cm.to(self._cm.device)
        if self.top_k:
            hits = _top_k_correct(p, t, self.top_k)
            self._topk_hits = hits if self._topk_hits is None else self._topk_hits + hits.to(self._topk_hits.device)

    @property
    def num_samples(self) -> int:
        """Number of samples accumulated so far."""
        return 0 if self._cm is None else int(self._cm.sum())

    def compute(self) -> torch.Tensor:
        """The accumulated confusion matrix: CPU ``(C, C)`` int64 (all zeros before any update)."""
        if self._cm is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._cm.detach().cpu().clone()

    def merge(self, other: ConfusionMeter) -> None:
        """Add another meter's counts into this one (e.g. gathered from another worker)."""
        if other.num_classes != self.num_classes or other.top_k != self.top_k:
            raise ValueError(
                f"merge: expected a meter with num_classes={self.num_classes}, top_k={list(self.top_k)}; "
                f"got num_classes={other.num_classes}, top_k={list(other.top_k)}"
            )
        if other._cm is None:
            return
        if self._cm is None:
            self._cm = other._cm.clone()
            self._topk_hits = None if other._topk_hits is None else other._topk_hits.clone()
            return
        self._cm += other._cm.to(self._cm.device)
        if self._topk_hits is not None and other._topk_hits is not None:
            self._topk_hits += other._topk_hits.to(self._topk_hits.device)

    def all_reduce(self, group: Any = None) -> None:
        """Sum the counts over all processes of ``torch.distributed`` (call on every rank before computing).

        A rank that saw no batch contributes zeros.  The tensor must be on a device the backend supports
        (CPU for gloo, CUDA for NCCL) -- it is on the device of the updates.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("all_reduce: torch.distributed is not initialised (call init_process_group first)")
        c, k = self.num_classes, len(self.top_k)
        device = self._cm.device if self._cm is not None else torch.device("cpu")
        # One collective for both counters: the flattened matrix followed by the top-k hits.
        buf = torch.zeros(c * c + k, dtype=torch.int64, device=device)
        if self._cm is not None:
            buf[: c * c] = self._cm.flatten()
            if self._topk_hits is not None:
                buf[c * c :] = self._topk_hits.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
        self._cm = buf[: c * c].reshape(c, c)
        self._topk_hits = buf[c * c :] if k else None

    def report(
        self,
        train_counts: ArrayLike | None = None,
        *,
        many_threshold: float = 100,
        few_threshold: float = 20,
        include_confusion: bool = True,
    ) -> dict[str, Any]:
        """Same dict as :func:`classification_report` for everything accumulated so far."""
        report = report_from_confusion(
            self.compute(),
            train_counts,
            many_threshold=many_threshold,
            few_threshold=few_threshold,
            include_confusion=include_confusion,
        )
        if self.top_k and self._topk_hits is not None:
            n = self.num_samples
            report["top_k_accuracy"] = {str(k): int(h) / n for k, h in zip(self.top_k, self._topk_hits.tolist())}
        return report

    def __repr__(self) -> str:
        return (
            f"ConfusionMeter(num_classes={self.num_classes}, top_k={list(self.top_k)}, "
            f"num_samples={self.num_samples})"
        )

