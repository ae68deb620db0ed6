"""The datasets the trainer and the command line know, by name: one table, read by both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cifar import load_cifar10, load_cifar100
from .datasets import LabelledImages, load_fashion_mnist, load_mnist
from .synthetic import synthetic_images


@dataclass(frozen=True)
class DatasetSpec:
    """``load(data_dir, train, download)`` -> :class:`LabelledImages`; ``summary`` is its line in ``--help``."""

    summary: str
    load: Callable[[str | None, bool, bool], LabelledImages]
    downloadable: bool = False


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "Fashion-MNIST (Debian's copy found automatically; --download fetches it)",
        lambda data_dir, train, download: load_fashion_mnist(data_dir, train=train, download=download),
        downloadable=True,
    ),
    "mnist": DatasetSpec("MNIST IDX files from --data-dir",
                         lambda data_dir, train, download: load_mnist(data_dir, train=train)),
    "cifar10": DatasetSpec("CIFAR-10 (cifar-10-batches-py under --data-dir)",
                           lambda data_dir, train, download: load_cifar10(data_dir, train=train)),
    "cifar100": DatasetSpec("CIFAR-100 (cifar-100-python under --data-dir)",
                            lambda data_dir, train, download: load_cifar100(data_dir, train=train)),
    "synthetic": DatasetSpec("a small generated set for quick checks (no files)",
                             lambda data_dir, train, download: synthetic_images(train)),
}


def load_dataset(name: str, data_dir: str | None, train: bool, download: bool = False) -> LabelledImages:
    """The named dataset's train or test split; ``download`` fetches it where the dataset supports that."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")
    return DATASETS[name].load(data_dir, train, download)


__all__ = ["DATASETS", "DatasetSpec", "load_dataset"]
