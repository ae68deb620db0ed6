"""The datasets the trainer and the command line know, by name: one table, read by both, open to yours.

A :class:`DatasetSpec` says how to load a dataset and whether the benchmark's long-tailed construction applies
to it: the built-in sets are balanced, and the CIFAR-LT protocol draws the long tail from them
(:func:`longtail.data.long_tailed_indices`); a set that is long-tailed already (one of yours) is used as it is.
:func:`register_dataset` adds one (``longtail train --plugin FILE`` loads a file that calls it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..checks import check_registration
from .cifar import load_cifar10, load_cifar100
from .arrays import load_arrays
from .datasets import LabelledImages, load_fashion_mnist, load_mnist
from .folder import load_folder, load_folder_validation
from .subsample import LongTailedSplit, long_tailed_indices
from .table import load_table
from .synthetic import synthetic_images


@dataclass(frozen=True)
class DatasetSpec:
    """What the trainer and the command line know about one dataset.

    Attributes:
        summary: its line in ``longtail train --help``.
        load: ``load(data_dir, train, download)`` -> :class:`LabelledImages` (the train or the test split).
        downloadable: ``--download`` fetches it.
        draw_long_tail: the benchmark's construction applies: the training split is a balanced source from which
            ``imbalance``, ``profile`` and ``n_max`` draw the long tail (the built-in sets). False (the default for
            a dataset of yours): the training split is used as it is at ``imbalance=1``, every image kept; an
            ``imbalance`` above 1 still draws a long tail from it, with a warning (its head is then its smallest
            class, as for a balanced source).
        reads: configuration fields passed to ``load`` (and ``load_validation``) by name, as a model's
            ``ModelSpec.reads`` (``folder`` reads ``image_size``, ``test_fraction`` and ``test_seed``); the
            built-in sets read none.
        load_validation: ``load_validation(data_dir, **fields)`` -> the dataset's own validation split, or None
            (then ``val_per_class`` images of each class are held out of the training split); None: it has none.
        augmentable: its inputs are images, which pad-and-crop and flipping (``augment``) apply to; False: a
            table's features (``table``), with which ``augment=True`` is refused.
    """

    summary: str
    load: Callable[..., LabelledImages]
    downloadable: bool = False
    draw_long_tail: bool = False
    reads: tuple[str, ...] = ()
    load_validation: Callable[..., LabelledImages | None] | None = None
    augmentable: bool = True

    def describe(self) -> str:
        return self.summary + ("" if self.draw_long_tail else " [used as it is at imbalance 1]")


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "Fashion-MNIST (Debian's copy found automatically; --download fetches it)",
        lambda data_dir, train, download: load_fashion_mnist(data_dir, train=train, download=download),
        downloadable=True, draw_long_tail=True,
    ),
    "mnist": DatasetSpec("MNIST IDX files from --data-dir",
                         lambda data_dir, train, download: load_mnist(data_dir, train=train), draw_long_tail=True),
    "cifar10": DatasetSpec("CIFAR-10 (cifar-10-batches-py under --data-dir)",
                           lambda data_dir, train, download: load_cifar10(data_dir, train=train), draw_long_tail=True),
    "cifar100": DatasetSpec("CIFAR-100 (cifar-100-python under --data-dir)",
                            lambda data_dir, train, download: load_cifar100(data_dir, train=train),
                            draw_long_tail=True),
    "synthetic": DatasetSpec("a small generated set for quick checks (no files)",
                             lambda data_dir, train, download: synthetic_images(train), draw_long_tail=True),
    "folder": DatasetSpec("your images: --data-dir DIR of class folders, or of train/, test/ (and val/) folders "
                          "holding them (needs Pillow; docs/your_data.md)", load_folder,
                          reads=("image_size", "test_fraction", "test_seed"), load_validation=load_folder_validation),
    "arrays": DatasetSpec("your arrays: --data-dir FILE.npz with x, y (and x_test, y_test, classes; "
                          "docs/your_data.md)", load_arrays, reads=("test_fraction", "test_seed")),
    "table": DatasetSpec("your table: --data-dir FILE (.csv, .tsv, .parquet) with --target COLUMN, numeric feature "
                         "columns standardised on the training rows (--model mlp, --no-augment; docs/your_data.md)",
                         load_table, reads=("target", "encode_categorical", "test_fraction", "test_seed"),
                         augmentable=False),
}


def register_dataset(name: str, spec: DatasetSpec, *, replace: bool = False) -> None:
    """Adds ``spec`` to :data:`DATASETS` under ``name`` (the trainer, the config and the CLI then know it).

    >>> from longtail.data import DATASETS, DatasetSpec, register_dataset, synthetic_images
    >>> register_dataset("tiny", DatasetSpec("20 images a class", lambda d, train, dl: synthetic_images(train,
    ...                  per_class=20)))
    >>> DATASETS["tiny"].draw_long_tail
    False
    >>> del DATASETS["tiny"]
    """
    DATASETS[check_registration(DATASETS, "dataset", name, spec, DatasetSpec, replace)] = spec


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")
    return DATASETS[name]


def load_dataset(name: str, data_dir: str | None, train: bool, download: bool = False, **fields: Any) -> LabelledImages:
    """The named dataset's train or test split; ``download`` fetches it where the dataset supports that. ``fields``:
    configuration fields; those the spec ``reads`` are passed on (the others, and those not given, take the
    loader's defaults)."""
    spec = dataset_spec(name)
    return spec.load(data_dir, train, download, **{key: fields[key] for key in spec.reads if key in fields})


def training_split(name: str, labels: torch.Tensor | Sequence[int], imbalance: float, profile: str = "exp",
                   **options: Any) -> LongTailedSplit:
    """The training and validation indices of dataset ``name``'s training ``labels``; ``options``: those of
    :func:`long_tailed_indices` (``n_max``, ``seed``, ``val_per_class``, ``num_classes``).

    A dataset whose spec draws the long tail (the built-in ones): :func:`long_tailed_indices` with these
    arguments. Any other one is used as it is at ``imbalance=1`` without ``n_max``: every image not held out
    for validation (the last ``val_per_class`` of each class, as :func:`long_tailed_indices` holds them out) is a
    training image. ``long_tailed_indices`` alone would cut every class to the smallest one's count there
    (measured: a set of yours, 2 images in its smallest class, trained on 2 images a class, to 21 % accuracy).
    """
    if dataset_spec(name).draw_long_tail:
        return long_tailed_indices(labels, imbalance, profile, **options)
    if imbalance != 1 or options.get("n_max") is not None:
        warnings.warn(f"dataset {name!r} is used as it is at imbalance=1 (its DatasetSpec has draw_long_tail=False); "
                      f"imbalance={imbalance:g}, n_max={options.get('n_max')} draw a long tail from it, its head being "
                      "its smallest class", stacklevel=2)
        return long_tailed_indices(labels, imbalance, profile, **options)
    # The validation split as long_tailed_indices holds it out (one training image a class satisfies any quota).
    held = long_tailed_indices(labels, 1.0, n_max=1, val_per_class=options.get("val_per_class", 0),
                               num_classes=options.get("num_classes"))
    y = torch.as_tensor(labels, dtype=torch.int64)
    kept = torch.ones(len(y), dtype=torch.bool)
    kept[held.val_indices] = False
    train = kept.nonzero().flatten()
    counts = torch.bincount(y[train], minlength=held.num_classes)
    return LongTailedSplit(train_indices=train, val_indices=held.val_indices, counts=counts,
                           val_counts=held.val_counts)


__all__ = ["DATASETS", "DatasetSpec", "dataset_spec", "load_dataset", "register_dataset", "training_split"]
