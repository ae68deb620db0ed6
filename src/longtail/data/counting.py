"""Per-class counts of a dataset on disk without decoding it: an image folder from its file names, a table from
its label column, a ``.npz`` from its label arrays.

What the class-balanced weights need is the count of each class; reading it must not cost a pass over the images
(timm's ``class_weights.py`` counts the same way). :func:`folder_counts`, :func:`table_counts` and
:func:`npz_counts` each return a :class:`ClassCounts`; :func:`path_counts` picks one by what the path is, for
:func:`longtail.class_counts` and ``longtail counts``. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The image files counted, by extension (case-insensitive): those Pillow reads, torchvision's ``IMG_EXTENSIONS``
#: and ``.gif``.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
#: The split folders of the split layout (``<root>/train/<class>/...``); the training split is the one counted
#: for weights.
SPLITS = ("train", "val", "test")
#: The table formats, by extension: CSV (comma), TSV (tab), Parquet (needs pyarrow).
TABLE_EXTENSIONS = (".csv", ".tsv", ".parquet", ".pq")


@dataclass(frozen=True)
class ClassCounts:
    """Per-class counts of one dataset.

    Attributes:
        classes: class names; ``classes[k]`` names class index ``k`` (sorted folder names, sorted string labels,
            ``"0"`` ... ``"max"`` for integer labels, or the ``.npz``'s ``classes``).
        counts: the training split's count of each class (what class-balanced weights use).
        source: what was read, in words (for the command's first line).
        splits: the count of each class in every split counted, ``"train"`` included, in reading order.
        notes: what was skipped or ignored, one sentence each.
    """

    classes: tuple[str, ...]
    counts: tuple[int, ...]
    source: str
    splits: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def imbalance_ratio(self) -> float:
        """Largest / smallest count over the classes that have any (``inf`` if none has).

        >>> ClassCounts(("cat", "dog", "emu"), (10, 2, 0), "an example").imbalance_ratio
        5.0
        """
        present = [c for c in self.counts if c > 0]
        return max(present) / min(present) if present else float("inf")


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _entries(path: Path) -> tuple[list[str], list[str], list[str]]:
    """The folders, files and hidden entries (names starting with '.') directly in ``path``, sorted."""
    dirs, files, hidden = [], [], []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                hidden.append(entry.name)
            elif entry.is_dir():
                dirs.append(entry.name)
            else:
                files.append(entry.name)
    return sorted(dirs), sorted(files), sorted(hidden)


def _count_images(folder: Path, skipped: Counter[str], hidden: list[str]) -> int:
    """Image files anywhere under ``folder`` (symbolic links followed, as torchvision's ImageFolder does); other
    files are tallied in ``skipped`` by extension, hidden files and folders (not descended) in ``hidden``."""
    images = 0
    for parent, dirs, files in os.walk(folder, followlinks=True):
        hidden.extend(d for d in dirs if d.startswith("."))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                hidden.append(name)
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_EXTENSIONS:
                images += 1
            else:
                skipped[suffix or "no extension"] += 1
    return images


def folder_counts(path: str | os.PathLike[str]) -> ClassCounts:
    """The image count of each class of an image folder, from file names only (no image is opened).

    Two layouts: ImageFolder's (``<path>/<class>/<image>``, images at any depth under their class folder), or a
    split layout (``<path>/train/<class>/...`` with optional ``val/`` and ``test/`` the same way: a folder named
    ``train`` means this layout). Classes are the sorted names of the (training) class folders. A file counts when
    its extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive); other files are counted and said in
    :attr:`ClassCounts.notes`, and so are hidden files and folders (names starting with ``.``), which are ignored.

    Raises:
        FileNotFoundError / NotADirectoryError: ``path`` is not a folder.
        ValueError: no class folders; a training class folder without images (each such class is named: a class
            with no image cannot be trained or weighted); a ``val``/``test`` class that ``train`` lacks.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is not a folder")
    dirs, files, hidden = _entries(root)
    split_layout = "train" in dirs
    notes: list[str] = []
    if split_layout:
        splits = [s for s in SPLITS if s in dirs]
        others = [d for d in dirs if d not in SPLITS]
        if others:  # as the folder source refuses them: a class folder beside train/ is a layout mistake
            raise ValueError(f"{root}: expected only train/, val/ and test/ folders beside train/; got {others[0]}/")
    else:
        splits = [""]
    if files:
        notes.append(f"{_plural(len(files), 'file')} outside the class folders skipped ({', '.join(files[:5])}"
                     + (", ..." if len(files) > 5 else "") + ")")
    skipped: Counter[str] = Counter()
    classes: list[str] = []
    counted: dict[str, tuple[int, ...]] = {}
    for split in splits:
        split_dir = root / split if split else root
        class_dirs, stray, split_hidden = _entries(split_dir)
        if split:  # the root's own entries are said above
            hidden += split_hidden
            if stray:
                notes.append(f"{_plural(len(stray), 'file')} outside the class folders of {split}/ skipped")
        if not classes:  # the training split (or the only one) names the classes
            if not class_dirs:
                raise ValueError(f"image folder {str(split_dir)!r} holds no class folders (one folder of images per "
                                 "class, as torchvision's ImageFolder reads)")
            classes = class_dirs
        unknown = [c for c in class_dirs if c not in classes]
        if unknown:
            raise ValueError(f"{split}/ of {str(root)!r} has classes that train/ lacks: {', '.join(unknown)}")
        counted[split or "train"] = tuple(
            _count_images(split_dir / c, skipped, hidden) if c in class_dirs else 0 for c in classes)
    empty = [c for c, n in zip(classes, counted["train"]) if n == 0]
    if empty:
        where = root / "train" if split_layout else root
        raise ValueError(f"class folders without images in {str(where)!r}: {', '.join(map(repr, empty))} (images "
                         f"are files ending in {' '.join(IMAGE_EXTENSIONS)}; a class with no image cannot be "
                         "weighted: add images or remove the folder)")
    if skipped:
        notes.append(f"{_plural(sum(skipped.values()), 'file')} skipped: not images ({', '.join(sorted(skipped))})")
    if hidden:
        notes.append(f"{_plural(len(hidden), 'hidden file or folder', 'hidden files and folders')} ignored (names "
                     "starting with '.')")
    layout = "split layout " + "/".join(splits) if split_layout else "ImageFolder layout"
    return ClassCounts(tuple(classes), counted["train"], f"image folder {str(root)!r} ({layout}, counted from file "
                       "names)", counted, tuple(notes))


_INTEGER = re.compile(r"[+-]?\d+")


def _label_counts(values: Iterable[Any], what: str) -> tuple[tuple[str, ...], tuple[int, ...], list[str]]:
    """Classes and counts of labels that are all integers (counts for every index 0 .. max, absent ones 0) or
    strings (sorted); missing labels (None, NaN, an empty cell) are skipped and said."""
    tally: Counter[Any] = Counter()
    missing = 0
    for value in values:
        if isinstance(value, float) and value == value and value.is_integer():
            value = int(value)  # an integer column with gaps, read as floats
        if value is None or value != value or (isinstance(value, str) and not value.strip()):
            missing += 1
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"{what} must hold class names or integer class indices; got {value!r}")
        else:
            tally[value.strip() if isinstance(value, str) else value] += 1
    if not tally:
        raise ValueError(f"{what} holds no labels")
    notes = [f"{_plural(missing, 'row')} without a label skipped"] if missing else []
    if all(isinstance(v, int) or _INTEGER.fullmatch(v) for v in tally):
        as_int: Counter[int] = Counter()
        for value, n in tally.items():
            as_int[int(value)] += n
        if min(as_int) < 0:
            raise ValueError(f"{what} holds integer labels that must be >= 0 (class indices); got {min(as_int)}")
        top = max(as_int)
        absent = [str(k) for k in range(top + 1) if k not in as_int]
        if absent:
            notes.append(f"integer labels are class indices 0..{top}: {_plural(len(absent), 'class', 'classes')} "
                         f"without rows counted 0 ({', '.join(absent[:10])}{', ...' if len(absent) > 10 else ''})")
        return tuple(map(str, range(top + 1))), tuple(as_int[k] for k in range(top + 1)), notes
    classes = sorted(str(v) for v in tally)
    by_name = Counter({str(v): n for v, n in tally.items()})
    return tuple(classes), tuple(by_name[c] for c in classes), notes


def _csv_column(path: Path, target: str | None, delimiter: str) -> tuple[list[str], list[str]]:
    """The header and the ``target`` column of a CSV/TSV file (the other columns are not kept)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{str(path)!r} is not a table: it has no header row")
            if target not in header:
                return header, []
            index = header.index(target)
            return header, [row[index] if index < len(row) else "" for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        kind = "CSV" if delimiter == "," else "TSV"
        raise ValueError(f"{str(path)!r} is not a table: not a text {kind} file ({exc})") from None


def _parquet_column(path: Path, target: str | None) -> tuple[list[str], list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {str(path)!r} (Parquet) needs pyarrow: pip install pyarrow") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid: not a Parquet file
        raise ValueError(f"{str(path)!r} is not a table: not a Parquet file ({exc})") from None
    header = list(parquet.schema_arrow.names)
    if target not in header:
        return header, []
    return header, parquet.read(columns=[target]).column(target).to_pylist()


def table_counts(path: str | os.PathLike[str], target: str | None) -> ClassCounts:
    """The row count of each class of a table (``.csv``, ``.tsv``; ``.parquet`` / ``.pq`` with pyarrow), read for
    its ``target`` column only.

    Labels are strings (classes: the sorted distinct labels) or integers (class indices: a count for every index
    from 0 to the largest label, 0 for an index no row has, and a note naming them). Rows whose label is empty are
    skipped and said in :attr:`ClassCounts.notes`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a table (another extension, not text, no header), ``target`` missing or not a column (the
            message lists the columns), labels neither names nor integers >= 0, or no labels.
        ImportError: a Parquet file without pyarrow (the message says to install it).
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if not file.exists():
        raise FileNotFoundError(f"table {str(file)!r} does not exist")
    if suffix not in TABLE_EXTENSIONS or not file.is_file():
        raise ValueError(f"{str(file)!r} is not a table: expected a file ending in {', '.join(TABLE_EXTENSIONS)}")
    if suffix in (".parquet", ".pq"):
        header, values = _parquet_column(file, target)
    else:
        header, values = _csv_column(file, target, "\t" if suffix == ".tsv" else ",")
    if target not in header:
        what = "a label column (target) is needed" if target is None else f"label column {target!r} is not in it"
        raise ValueError(f"table {str(file)!r}: {what}; its columns: {', '.join(header)}")
    classes, counts, notes = _label_counts(values, f"column {target!r} of {str(file)!r}")
    return ClassCounts(classes, counts, f"table {str(file)!r} (column {target!r})", {"train": counts}, tuple(notes))


def npz_counts(path: str | os.PathLike[str]) -> ClassCounts:
    """The count of each class of a ``.npz`` file, from its integer label array ``y`` (and ``y_test`` as the test
    split where present; ``x`` is never read); ``classes`` (strings) names the indices where present, otherwise
    the classes are ``"0"`` .. the largest label of ``y`` and ``y_test``. Loaded with ``allow_pickle=False``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a ``.npz`` archive, no ``y``, labels that are not
        integers in ``[0, len(classes))``.
    """
    import zipfile

    import numpy as np

    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"array file {str(file)!r} does not exist")
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{str(file)!r} is not a .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{str(file)!r} is not a .npz archive (a single .npy array)")
    with archive:
        if "y" not in archive.files:
            raise ValueError(f"{str(file)!r} has no label array 'y'; its arrays: {', '.join(archive.files)}")
        labels = {split: archive[key] for split, key in (("train", "y"), ("test", "y_test")) if key in archive.files}
        names = [str(c) for c in archive["classes"].tolist()] if "classes" in archive.files else None
    for split, y in labels.items():
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"{'y' if split == 'train' else 'y_test'} of {str(file)!r} must be a 1-D array of "
                             f"integer class indices (names go in 'classes'); got {y.dtype} {y.shape}")
    top = max(int(y.max()) if y.size else -1 for y in labels.values())
    low = min(int(y.min()) if y.size else 0 for y in labels.values())
    num_classes = len(names) if names is not None else top + 1
    if low < 0 or top >= num_classes:
        raise ValueError(f"labels of {str(file)!r} must be in [0, {num_classes - 1}] (its 'classes' names "
                         f"{num_classes}); got values in [{low}, {top}]")
    if num_classes < 1:
        raise ValueError(f"y of {str(file)!r} holds no labels")
    splits = {split: tuple(int(n) for n in np.bincount(y, minlength=num_classes)) for split, y in labels.items()}
    classes = tuple(names) if names is not None else tuple(map(str, range(num_classes)))
    return ClassCounts(classes, splits["train"], f"arrays {str(file)!r} (y" + (", y_test" if "test" in splits else "")
                       + ")", splits)


def path_counts(path: str | os.PathLike[str], target: str | None = None) -> ClassCounts:
    """:func:`folder_counts` for a folder, :func:`npz_counts` for a ``.npz`` file, :func:`table_counts` (with
    ``target``) for any other file."""
    file = Path(path)
    if file.is_dir():
        return folder_counts(file)
    if file.suffix.lower() == ".npz":
        return npz_counts(file)
    return table_counts(file, target)


__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "TABLE_EXTENSIONS", "ClassCounts", "folder_counts", "npz_counts",
           "path_counts", "table_counts"]
