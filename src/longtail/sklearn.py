"""Class-balanced weights for scikit-learn (and Keras) users: ``class_weight`` dicts and ``sample_weight``.

Labels may be any hashable values scikit-learn accepts (ints, strings); classes are the sorted
unique labels, as in ``sklearn.utils.class_weight.compute_class_weight``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .weights import class_balanced_weights


def _labels_and_counts(y: Any, classes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample); got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y must hold at least one label; got an empty array")
    found, inverse, found_counts = np.unique(y, return_inverse=True, return_counts=True)
    if classes is None:
        return found, found_counts, inverse
    classes = np.asarray(classes)
    if classes.ndim != 1 or np.unique(classes).size != classes.size:
        raise ValueError(f"classes must be a 1-D array of distinct labels; got {classes!r}")
    unknown = np.setdiff1d(found, classes)
    if unknown.size:
        raise ValueError(f"y has labels that are not in classes: {unknown.tolist()}")
    order = np.argsort(classes)
    positions = order[np.searchsorted(classes[order], found)]
    counts = np.zeros(classes.size, dtype=np.int64)
    counts[positions] = found_counts
    return classes, counts, positions[inverse]


def class_weight(y: Any, beta: float = 0.9999, *, classes: Any = None, zero_counts: str = "error") -> dict[Any, float]:
    """Class-balanced weights as ``{label: weight}``, summing to the number of classes.

    Pass it as ``class_weight=`` to scikit-learn estimators (``LogisticRegression``, ``SVC``,
    ``RandomForestClassifier``...) or to Keras' ``Model.fit``.

    Args:
        y: training labels ``(n_samples,)``.
        beta: in ``[0, 1]``; 1 is inverse frequency (scikit-learn's ``"balanced"`` up to scale).
        classes: all labels, when some may be absent from ``y`` (then see ``zero_counts``).
        zero_counts: ``"error"`` or ``"ignore"`` (absent classes get weight 0).

    Example:
        >>> class_weight(["cat"] * 90 + ["dog"] * 10, beta=1.0)
        {'cat': 0.2, 'dog': 1.8}
    """
    labels, counts, _ = _labels_and_counts(y, classes)
    weights = class_balanced_weights(counts, beta, zero_counts=zero_counts, dtype=torch.float64).numpy()
    return {label.item() if hasattr(label, "item") else label: float(w) for label, w in zip(labels, weights)}


def sample_weight(y: Any, beta: float = 0.9999, *, classes: Any = None, zero_counts: str = "error") -> np.ndarray:
    """Per-sample class-balanced weights ``(n_samples,)``, for ``fit(X, y, sample_weight=...)``.

    Example:
        >>> sample_weight([0, 0, 0, 1], beta=1.0)
        array([0.5, 0.5, 0.5, 1.5])
    """
    labels, counts, index = _labels_and_counts(y, classes)
    weights = class_balanced_weights(counts, beta, zero_counts=zero_counts, dtype=torch.float64).numpy()
    return weights[index]
