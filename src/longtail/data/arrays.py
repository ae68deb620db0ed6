"""Your data as arrays: a ``.npz`` file as a dataset (``longtail train --dataset arrays --data-dir FILE.npz``), and
the stratified, seeded test split carved from a dataset that comes without one (here and in
:mod:`longtail.data.folder`).

The file holds ``x`` (uint8 ``(N, H, W)`` or ``(N, C, H, W)``, or floats in ``[0, 1]``) and ``y`` (integer labels in
``[0, C)``), optionally ``x_test`` / ``y_test`` (the test split, used as it is) and ``classes`` (``C`` names; default
``"0"``..``"C-1"``). It is read with ``numpy.load(allow_pickle=False)``: no code in it runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import LabelledImages

__all__ = ["carve_test_split", "load_arrays", "split_of"]


def carve_test_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_indices, test_indices)``, both sorted: ``round(fraction * n_c)`` images of each class ``c`` (never
    all of them) drawn at random as the test split, seeded by ``seed`` alone, so the test set is the same for every
    run seed.

    >>> train, test = carve_test_split(torch.tensor([0] * 10 + [1] * 4 + [2]), 0.2, seed=0)
    >>> torch.bincount(torch.tensor([0] * 10 + [1] * 4 + [2])[test], minlength=3).tolist()
    [2, 1, 0]
    >>> len(train) + len(test)
    15
    """
    generator = torch.Generator().manual_seed(seed)
    test = []
    for c in range(int(labels.max()) + 1 if labels.numel() else 0):
        members = (labels == c).nonzero().flatten()
        n = len(members)
        take = min(math.floor(fraction * n + 0.5), n - 1) if n else 0  # half up; one image a class kept to train on
        test.append(members[torch.randperm(n, generator=generator)[:take]])
    test_indices = torch.cat(test).sort().values if test else torch.empty(0, dtype=torch.int64)
    kept = torch.ones(len(labels), dtype=torch.bool)
    kept[test_indices] = False
    return kept.nonzero().flatten(), test_indices


def split_of(train: LabelledImages, test: LabelledImages | None, want_train: bool, fraction: float, seed: int,
             source: str) -> LabelledImages:
    """The training (``want_train``) or the test split of a source that gives ``train`` and, maybe, ``test``: the
    given test split as it is, else one carved from ``train`` (:func:`carve_test_split`). A class without a training
    image is refused by name (``source`` names the file or folder in the message)."""
    counts = train.class_counts()
    empty = [train.classes[c] for c in (counts == 0).nonzero().flatten().tolist()]
    if empty:
        raise ValueError(f"{source}: every class must have training images; got none for class "
                         f"{', '.join(map(repr, empty))}")
    if test is None:
        train_indices, test_indices = carve_test_split(train.labels, fraction, seed)
        return train.subset(train_indices if want_train else test_indices)
    return train if want_train else test


def _images(array: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` from the array ``key`` of ``path``."""
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{path}: {key} must be images (N, H, W) or (N, C, H, W); got shape {array.shape}")
    if array.shape[1] > 4 and array.shape[-1] in (1, 3, 4):
        raise ValueError(f"{path}: {key} must be channel-first (N, C, H, W); got shape {array.shape}, which looks "
                         f"channel-last (numpy: {key}.transpose(0, 3, 1, 2))")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if array.dtype.kind == "f":
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not (0.0 <= low and high <= 1.0):  # NaN fails both
            raise ValueError(f"{path}: {key} must be uint8 pixels or floats in [0, 1]; got floats in [{low:g}, {high:g}]")
        return torch.from_numpy(np.ascontiguousarray(np.floor(array * 255 + 0.5).astype(np.uint8)))
    raise ValueError(f"{path}: {key} must be uint8 pixels or floats in [0, 1]; got dtype {array.dtype}")


def _labels(array: np.ndarray, key: str, path: Path, n: int, num_classes: int | None) -> torch.Tensor:
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise ValueError(f"{path}: {key} must be 1-D integer labels; got dtype {array.dtype} with shape {array.shape}")
    if len(array) != n:
        raise ValueError(f"{path}: {key} must hold one label per image ({n}); got {len(array)}")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise ValueError(f"{path}: {key} must be labels in {bound}; got values in [{low}, {high}]")
    return torch.from_numpy(array.astype(np.int64))


def load_arrays(data_dir: str | os.PathLike[str] | None, train: bool, download: bool = False, *,
                test_fraction: float = 0.2, test_seed: int = 0) -> LabelledImages:
    """The training or test split of a ``.npz`` file (see the module docstring); without ``x_test``, the test split
    is ``test_fraction`` of each class, carved with ``test_seed`` (:func:`carve_test_split`).

    Raises:
        ValueError: no file given, or a file that is not the format above (the message names the file and the key).
    """
    if data_dir is None:
        raise ValueError("dataset 'arrays' reads a .npz file: pass data_dir (--data-dir FILE.npz)")
    path = Path(data_dir).expanduser()
    if not path.is_file():
        raise ValueError(f"{path}: expected a .npz file with arrays x and y; got "
                         + ("a folder" if path.is_dir() else "nothing there"))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays: dict[str, Any] = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError) as exc:  # not an npz, a truncated one, or object (pickled) arrays
        raise ValueError(f"{path}: expected a .npz file of numeric arrays (numpy.savez); got "
                         f"{' '.join(str(exc).split())}") from None
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise ValueError(f"{path}: expected arrays x and y; got no {' or '.join(missing)} (keys: "
                         f"{', '.join(sorted(arrays)) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: expected x_test and y_test together; got only "
                         f"{'x_test' if 'x_test' in arrays else 'y_test'}")
    classes = None
    if "classes" in arrays:
        names = arrays["classes"]
        if names.dtype.kind != "U" or names.ndim != 1:
            raise ValueError(f"{path}: classes must be a 1-D array of strings; got dtype {names.dtype}, shape "
                             f"{names.shape}")
        classes = tuple(str(name) for name in names)
    x = _images(arrays["x"], "x", path)
    y = _labels(arrays["y"], "y", path, len(x), None if classes is None else len(classes))
    if not len(y):
        raise ValueError(f"{path}: x must hold at least one image; got none")
    test = None
    if "x_test" in arrays:
        x_test = _images(arrays["x_test"], "x_test", path)
        y_test = _labels(arrays["y_test"], "y_test", path, len(x_test), None if classes is None else len(classes))
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"{path}: x_test must have the images' shape {tuple(x.shape[1:])}; got "
                             f"{tuple(x_test.shape[1:])}")
    if classes is None:
        top = max(int(y.max()), int(y_test.max()) if "x_test" in arrays and len(y_test) else 0)
        classes = tuple(str(c) for c in range(top + 1))
    if "x_test" in arrays:
        seen = set(y.tolist())
        absent = sorted(set(y_test.tolist()) - seen)
        if absent:
            raise ValueError(f"{path}: every class in y_test must be in y; got test images of class "
                             f"{', '.join(repr(classes[c]) for c in absent)} and no training image of it")
        test = LabelledImages(x_test, y_test, classes)
    return split_of(LabelledImages(x, y, classes), test, train, test_fraction, test_seed, str(path))
