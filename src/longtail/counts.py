"""Per-class counts of a training set, from labels, multi-hot targets, a DataLoader, or a dataset on disk (an image
folder, a table, a ``.npz``: :mod:`longtail.data.counting`, nothing decoded)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .checks import check_ignore_index, check_num_classes

_TARGET_KEYS = ("label", "labels", "target", "targets", "y")


def _batch_targets(batch: Any) -> Any:
    """The targets of one DataLoader batch: ``(x, y, ...)`` -> y, ``{"label": y}`` -> y, else the batch."""
    if isinstance(batch, Mapping):
        for key in _TARGET_KEYS:
            if key in batch:
                return batch[key]
        raise ValueError(f"a dict batch must hold its targets under one of {_TARGET_KEYS}; got keys {list(batch)}")
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and not _is_number_sequence(batch):
        return batch[1]
    return batch


def _is_number_sequence(value: Any) -> bool:
    if not isinstance(value, (list, tuple)):
        return False
    return all(isinstance(v, numbers.Number) or _is_number_sequence(v) for v in value)


def _as_tensor(labels: Any) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels.detach()
    if isinstance(labels, np.ndarray):
        if labels.dtype == object or labels.dtype.kind not in "biuf":
            raise TypeError(f"labels must be numeric; got a numpy array of dtype {labels.dtype}")
        return torch.from_numpy(np.ascontiguousarray(labels))
    if isinstance(labels, numbers.Integral):
        return torch.tensor([int(labels)])
    return torch.as_tensor(np.asarray(labels))


def _counts_of_tensor(
    labels: torch.Tensor, num_classes: int, ignore_index: int, multi_label: bool | None
) -> torch.Tensor:
    as_multi_hot = multi_label if multi_label is not None else (labels.is_floating_point() or labels.dtype == torch.bool)
    if as_multi_hot:
        if labels.dim() < 1 or labels.shape[-1] != num_classes:
            raise ValueError(
                f"multi-hot targets must have shape (N, {num_classes}); got {tuple(labels.shape)}"
            )
        values = labels.to(torch.float64).reshape(-1, num_classes)
        if values.numel() and (bool((values < 0).any()) or bool((values > 1).any())):
            raise ValueError(
                f"multi-hot targets must hold values in [0, 1]; got values in [{float(values.min()):g}, "
                f"{float(values.max()):g}]"
            )
        counts = values.sum(0)
        rounded = counts.round()
        # Soft targets give fractional counts; keep them rather than silently rounding.
        return rounded.to(torch.int64) if bool((counts == rounded).all()) else counts
    if labels.is_complex() or labels.is_floating_point():
        raise TypeError(f"class labels must be integers; got dtype {labels.dtype}")
    flat = labels.reshape(-1).to(torch.int64)
    flat = flat[flat != ignore_index]
    if flat.numel() and (bool((flat < 0).any()) or bool((flat >= num_classes).any())):
        low, high = int(flat.min()), int(flat.max())
        raise ValueError(
            f"labels must be in [0, {num_classes - 1}] (or ignore_index={ignore_index}); "
            f"got values in [{low}, {high}]"
        )
    return torch.bincount(flat.cpu(), minlength=num_classes)


def _counts_of_path(path: str | os.PathLike[str], num_classes: int | None, target: str | None) -> torch.Tensor:
    from .data.counting import path_counts

    found = path_counts(path, target)
    if num_classes is not None and check_num_classes(num_classes) != len(found.classes):
        raise ValueError(f"num_classes must be the {len(found.classes)} classes of {found.source}; got {num_classes}")
    return torch.tensor(found.counts, dtype=torch.int64)


def class_counts(
    labels: Any,
    num_classes: int | None = None,
    *,
    ignore_index: int = -100,
    multi_label: bool | None = None,
    target: str | None = None,
) -> torch.Tensor:
    """Number of training samples of each class.

    Args:
        labels: one of
            - integer class labels of any shape (``(N,)``, or ``(N, H, W)`` for segmentation maps),
              as a tensor, numpy array or (nested) list; entries equal to ``ignore_index`` are skipped;
            - multi-hot (or soft) targets of shape ``(N, C)``, float or bool: the count of class ``c``
              is the number of samples labelled ``c`` (the column sum; fractional for soft targets);
            - an iterable of batches, such as a ``DataLoader``: each batch is either the targets,
              a tuple/list ``(inputs, targets, ...)`` or a dict with a ``"label(s)"``/``"target(s)"``
              key; the counts of all batches are summed;
            - a path (a ``pathlib.Path``, or a ``str`` naming one that exists) to a dataset on disk, counted
              without decoding it (:func:`longtail.data.counting.path_counts`): an image folder (its training
              split; classes are the sorted folder names), a ``.csv`` / ``.tsv`` / ``.parquet`` table (its
              ``target`` column) or a ``.npz`` (its ``y``). ``ignore_index`` and ``multi_label`` do not apply.
        num_classes: ``C``; optional for a path, whose classes are its own (if given, it must be their number).
        ignore_index: label value that is not counted.
        multi_label: force the interpretation: ``True`` reads an integer ``(N, C)`` 0/1 tensor as
            multi-hot, ``False`` reads any input as class labels. ``None`` decides by dtype.
        target: a table's label column (a path to a table only).

    Returns:
        Tensor of shape ``(C,)``, int64 (float64 for fractional soft-target counts), on the CPU.

    Raises:
        TypeError: a bool or non-integer ``num_classes`` / ``ignore_index``, no ``num_classes`` for labels that
            are not a path, non-integer class labels, or ``labels`` of an unsupported type (a ``str`` that names
            no existing path included).
        ValueError: ``num_classes < 1``, labels outside ``[0, C)``, multi-hot targets of the wrong shape or
            outside ``[0, 1]``, or an empty iterable of batches; for a path, what
            :mod:`longtail.data.counting` refuses (an empty class folder, a missing label column, not a table).
        FileNotFoundError: a ``pathlib.Path`` that does not exist.

    Example:
        >>> class_counts([0, 0, 1, 2, 2, 2, -100], num_classes=4)
        tensor([2, 1, 3, 0])
    """
    if isinstance(labels, os.PathLike) or (isinstance(labels, str) and os.path.exists(labels)):
        return _counts_of_path(labels, num_classes, target)
    if target is not None:
        raise TypeError(f"target names a table's label column; labels is not a path but {type(labels).__name__}")
    if num_classes is None:
        raise TypeError("class_counts() needs num_classes, except for a path (an image folder or a file names its "
                        "classes)")
    num_classes = check_num_classes(num_classes)
    ignore_index = check_ignore_index(ignore_index)
    if isinstance(labels, (torch.Tensor, np.ndarray, numbers.Integral)) or _is_number_sequence(labels):
        return _counts_of_tensor(_as_tensor(labels), num_classes, ignore_index, multi_label)
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise TypeError(
            "labels must be a tensor, numpy array, list of labels or an iterable of batches; "
            f"got {type(labels).__name__}"
        )
    total: torch.Tensor | None = None
    for batch in labels:
        counts = _counts_of_tensor(_as_tensor(_batch_targets(batch)), num_classes, ignore_index, multi_label)
        total = counts if total is None else total + counts
    if total is None:
        raise ValueError("labels must hold at least one batch; got an empty iterable")
    return total
