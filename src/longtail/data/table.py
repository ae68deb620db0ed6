"""Your table as a dataset: a CSV, TSV or Parquet file with a label column (``longtail train --dataset table
--data-dir FILE --target COLUMN --model mlp --no-augment``).

Every column but the target is a feature and must hold a finite number in every row; a column that does not is
refused by name, or one-hot encoded where asked (``encode_categorical``: one 0/1 feature per distinct value,
sorted, named ``column=value``). Labels follow :func:`longtail.data.table_counts`: integers are class indices
(classes ``"0"`` .. the largest; a class without a training row is refused by name), anything else are class
names (classes: the sorted names). A missing value anywhere is refused, naming the column and its first row
(rows counted from 1, the header not counted): nothing is dropped.

A table is a :class:`LabelledImages` of float32 ``(N, F, 1, 1)`` "images", one channel a feature, so the trainer's
per-channel normalisation with the training split's statistics is the standardisation of each feature (mean 0,
std 1 on the training rows). The test split is carved from the file (``test_fraction`` of each class, seeded by
``test_seed``: :func:`longtail.data.carve_test_split`). CSV and TSV are read with the standard library; Parquet
needs pyarrow.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arrays import split_of
from .counting import TABLE_EXTENSIONS, _parquet_column
from .datasets import LabelledImages

__all__ = ["load_table", "read_table"]

_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_MISSING = {"", "nan", "na", "n/a", "null", "none"}  # what pandas writes for a missing value, and the usual others


def _parquet_columns(path: Path) -> dict[str, list[str]]:
    try:
        header, _ = _parquet_column(path, None)
        columns = {name: _parquet_column(path, name)[1] for name in header}  # Parquet is read a column at a time
    except ImportError as exc:
        raise ValueError(f"{exc}; or save the table as CSV") from None  # one line from the command line
    # As text, as a CSV's cells: str() of a float64 reads back as the same float; None (a missing value) is empty.
    return {name: ["" if v is None else str(v) for v in values] for name, values in columns.items()}


def _columns(path: Path) -> dict[str, list[str]]:
    """Column name -> its cells as text, in file order."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _parquet_columns(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",") if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: expected a text table (CSV or TSV) with a header row; got {exc}") from None
    if not rows:
        raise ValueError(f"{path}: expected a header row of column names; got an empty file")
    header = rows[0]
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise ValueError(f"{path}: column names must be distinct; got {', '.join(map(repr, twice))} more than once")
    for i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise ValueError(f"{path}: every row must have the header's {len(header)} cells; got {len(row)} in row {i}")
    return {name: [row[j] for row in rows[1:]] for j, name in enumerate(header)}


def _first(cells: list[str], bad: Any) -> tuple[int, str]:
    """The first (row, cell) for which ``bad(cell)``, rows counted from 1."""
    return next((i, cell) for i, cell in enumerate(cells, start=1) if bad(cell))


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in _MISSING


def _numbers(cells: list[str]) -> np.ndarray | None:
    """The cells as float64, or None when one is not a number (missing values, NaN included, are refused first)."""
    try:
        return np.array(cells, dtype=str).astype(np.float64)
    except ValueError:
        return None


def _labels(cells: list[str], target: str, path: Path) -> tuple[torch.Tensor, tuple[str, ...]]:
    if any(map(_is_missing, cells)):
        row, cell = _first(cells, _is_missing)
        raise ValueError(f"{path}: target column {target!r} must hold a label in every row; got {cell!r} in row {row}")
    names = [cell.strip() for cell in cells]
    if all(_INTEGER.fullmatch(name) for name in names):
        values = np.array([int(name) for name in names], dtype=np.int64)
        if values.min() < 0:
            row, cell = _first(cells, lambda c: int(c) < 0)
            raise ValueError(f"{path}: target column {target!r} must hold class indices >= 0 or class names; got "
                             f"{cell.strip()} in row {row}")
        return torch.from_numpy(values), tuple(str(c) for c in range(int(values.max()) + 1))
    numbers = _numbers(names)
    if numbers is not None:  # numbers, not all integers: neither class indices nor names
        row, cell = _first(names, lambda c: not _INTEGER.fullmatch(c))
        raise ValueError(f"{path}: target column {target!r} must hold integer class indices or class names; got the "
                         f"number {cell} in row {row}")
    classes = tuple(sorted(set(names)))
    index = {name: k for k, name in enumerate(classes)}
    return torch.tensor([index[name] for name in names], dtype=torch.int64), classes


def _features(columns: dict[str, list[str]], encode_categorical: bool, path: Path) -> tuple[np.ndarray, list[str]]:
    """float64 ``(N, F)`` and the feature names, in column order (a one-hot encoded column where it stood)."""
    blocks, names, refused = [], [], []
    for name, cells in columns.items():
        if any(map(_is_missing, cells)):
            row, cell = _first(cells, _is_missing)
            raise ValueError(f"{path}: feature column {name!r} must hold a value in every row; got {cell!r} in row "
                             f"{row} (nothing is dropped: fill or remove it)")
        numbers = _numbers(cells)
        if numbers is not None:
            if not np.isfinite(numbers).all():
                row = int(np.flatnonzero(~np.isfinite(numbers))[0]) + 1
                raise ValueError(f"{path}: feature column {name!r} must hold finite numbers; got {cells[row - 1]!r} "
                                 f"in row {row}")
            blocks.append(numbers[:, None])
            names.append(name)
        elif encode_categorical:
            values = sorted(set(cell.strip() for cell in cells))
            stripped = np.array([cell.strip() for cell in cells], dtype=object)
            blocks.append(np.stack([stripped == value for value in values], axis=1).astype(np.float64))
            names += [f"{name}={value}" for value in values]
        else:
            row, cell = _first(cells, lambda c: _numbers([c]) is None)
            refused.append(f"{name!r} ({cell!r} in row {row})")
    if refused:
        raise ValueError(f"{path}: feature columns must be numeric; got text in {', '.join(refused)} (pass "
                         "--encode-categorical to one-hot encode them, or remove them)")
    if not blocks:
        raise ValueError(f"{path}: expected at least one feature column besides the target; got none")
    return np.concatenate(blocks, axis=1), names


def read_table(path: str | os.PathLike[str], target: str | None, *,
               encode_categorical: bool = False) -> tuple[LabelledImages, list[str]]:
    """All rows of the table at ``path``: float32 features ``(N, F, 1, 1)`` with their labels and classes, and the
    ``F`` feature names (see the module docstring; unstandardised: the trainer standardises on the training split).

    Raises:
        ValueError: no such file or not a table, ``target`` missing or not a column, a missing or non-finite value,
            a text feature column without ``encode_categorical``, labels that are numbers but not integers or are
            negative (the message names the file, the column and the first row at fault).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "t.csv").write_text("size,colour,kind\\n1.5,red,cat\\n2,blue,dog\\n0.5,red,cat\\n")
    ...     table, names = read_table(Path(d) / "t.csv", "kind", encode_categorical=True)
    >>> names, table.classes, table.labels.tolist(), tuple(table.images.shape)
    (['size', 'colour=blue', 'colour=red'], ('cat', 'dog'), [0, 1, 0], (3, 3, 1, 1))
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{path}: expected a table file ({', '.join(TABLE_EXTENSIONS)}); got "
                         + ("a folder" if path.is_dir() else "nothing there"))
    if path.suffix.lower() not in TABLE_EXTENSIONS:
        raise ValueError(f"{path}: expected a table file ending in {', '.join(TABLE_EXTENSIONS)}; got "
                         f"{path.suffix or 'no extension'}")
    columns = _columns(path)
    if target is None or target not in columns:
        what = "a target (--target COLUMN), the label column" if target is None else f"target column {target!r}"
        raise ValueError(f"{path}: expected {what}; its columns: {', '.join(columns)}")
    if not columns[target]:  # checked before the labels: their class rule needs one row
        raise ValueError(f"{path}: expected at least one row under the header; got none")
    labels, classes = _labels(columns.pop(target), target, path)
    features, names = _features(columns, encode_categorical, path)
    images = torch.from_numpy(features.astype(np.float32)).reshape(len(labels), -1, 1, 1)
    return LabelledImages(images, labels, classes), names


def load_table(data_dir: str | os.PathLike[str] | None, train: bool, download: bool = False, *,
               target: str | None = None, encode_categorical: bool = False, test_fraction: float = 0.2,
               test_seed: int = 0) -> LabelledImages:
    """The training or test split of the table ``data_dir`` (:func:`read_table`): the test split is
    ``test_fraction`` of each class, carved with ``test_seed`` (:func:`longtail.data.carve_test_split`); a class
    without a training row (an integer label no row has) is refused by name."""
    if data_dir is None:
        raise ValueError("dataset 'table' reads a table file: pass data_dir (--data-dir FILE.csv)")
    table, _ = read_table(data_dir, target, encode_categorical=encode_categorical)
    return split_of(table, None, train, test_fraction, test_seed, str(Path(data_dir).expanduser()))
