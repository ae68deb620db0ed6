"""In-memory labelled image sets and the MNIST / Fashion-MNIST loaders.

Every loader returns a :class:`LabelledImages`: uint8 images always in ``(N, C, H, W)`` layout (MNIST-like sets get
``C = 1``, CIFAR ``C = 3``), int64 labels and the class names.

Where the Fashion-MNIST files are looked for (first folder holding both files of the requested split wins):

1. ``data_dir`` when given (and its ``fashion-mnist/``, ``FashionMNIST/raw/`` subfolders); nothing else is searched.
2. ``$LONGTAIL_DATA`` (and the same subfolders).
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package).
4. The download cache (``cache_dir``, default ``$XDG_CACHE_HOME/longtail/fashion-mnist`` or
   ``~/.cache/longtail/fashion-mnist``), and, with ``download=True``, a fresh download into it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .download import default_cache_dir, download_fashion_mnist
from .idx import read_idx

__all__ = [
    "DATA_ENV",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "LabelledImages",
    "load_fashion_mnist",
    "load_mnist",
]

#: Environment variable naming a folder with datasets (files directly in it or in per-dataset subfolders).
DATA_ENV = "LONGTAIL_DATA"

#: Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

# Stems of the standard file names; each may carry a ".gz" suffix or not (content decides how it is read).
_IDX_FILES: dict[bool, tuple[str, str]] = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True, eq=False)
class LabelledImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A labelled image set held in memory.

    Attributes:
        images: uint8 ``(N, C, H, W)`` (channel-first even for grey images, ``C = 1``), values 0-255; or float32
            features of a table, ``(N, F, 1, 1)`` (one channel a feature, :func:`longtail.data.load_table`), used
            as they are (not divided by 255).
        labels: int64 ``(N,)`` with values in ``[0, len(classes))``.
        classes: class names; ``classes[k]`` names label ``k``.

    Indexing returns ``(images[i], labels[i])`` so the object can be handed to a ``DataLoader`` directly (convert
    to float and normalise in the training code, where the batch is on the right device).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise TypeError(
                f"images and labels must be tensors; got {type(self.images).__name__} and "
                f"{type(self.labels).__name__}"
            )
        features = self.images.dtype == torch.float32 and self.images.dim() == 4 and self.images.shape[-2:] == (1, 1)
        if not features and (self.images.dtype != torch.uint8 or self.images.dim() != 4):
            raise ValueError(f"images must be uint8 (N, C, H, W) or float32 features (N, F, 1, 1); got "
                             f"{self.images.dtype} with shape {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"labels must be int64 (N,); got {self.labels.dtype} with shape {tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must have one label per image ({self.images.shape[0]} images); "
                f"got {self.labels.shape[0]} labels"
            )
        if not isinstance(self.classes, tuple) or not all(isinstance(c, str) for c in self.classes):
            raise TypeError(f"classes must be a tuple of str; got {self.classes!r:.80}")
        if len(self.classes) < 1:
            raise ValueError("classes must name at least one class; got an empty tuple")
        if self.labels.numel():
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= len(self.classes):
                raise ValueError(f"labels must be in [0, {len(self.classes)}); got values in [{lo}, {hi}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        """Number of classes ``len(classes)``."""
        return len(self.classes)

    def class_counts(self) -> torch.Tensor:
        """int64 ``(num_classes,)``: images per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> LabelledImages:
        """The images at ``indices`` (e.g. ``LongTailedSplit.train_indices``), same classes; copies the data."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if idx.dim() != 1:
            raise ValueError(f"indices must be 1-D; got shape {tuple(idx.shape)}")
        return LabelledImages(self.images[idx], self.labels[idx], self.classes)


def _expand(folder: Path, subfolders: Sequence[str]) -> list[Path]:
    return [folder, *(folder / s for s in subfolders)]


def _split_files(folder: Path, train: bool) -> tuple[Path, Path] | None:
    """Paths of the (images, labels) files of a split in ``folder``, or None if either is missing."""
    found: list[Path] = []
    for stem in _IDX_FILES[train]:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found[0], found[1]


def _load_idx_pair(images_path: Path, labels_path: Path, classes: tuple[str, ...]) -> LabelledImages:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images_path} holds {images.shape[0]} images but {labels_path} {labels.shape[0]} labels")
    if labels.numel() and int(labels.max()) >= len(classes):  # uint8: never negative
        raise ValueError(
            f"{labels_path}: labels must be in [0, {len(classes)}); got values in [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )
    # unsqueeze is a view: the (N, 1, H, W) layout costs no copy.
    return LabelledImages(images.unsqueeze(1), labels.to(torch.int64), classes)


def _describe(folders: Sequence[Path]) -> str:
    return ", ".join(str(f) for f in folders) if folders else "(nowhere)"


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train: bool = True,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LabelledImages:
    """Load the Fashion-MNIST train (60,000 images, 6,000 per class) or test (10,000) split.

    Args:
        data_dir: folder with the IDX files (or a ``fashion-mnist`` / ``FashionMNIST/raw`` subfolder). When given,
            only this folder is searched, and a download (``download=True``) goes into ``cache_dir`` or, if that is
            None, into ``data_dir``.
        train: the training split if True, else the test split.
        download: when the files are found nowhere, fetch them (see :func:`longtail.data.download_fashion_mnist`;
            base URL from ``$LONGTAIL_FASHION_MNIST_URL`` or the Zalando S3 bucket) and verify their pinned SHA-256.
        cache_dir: download cache; default :func:`default_cache_dir` ``("fashion-mnist")``.

    Returns:
        :class:`LabelledImages` with uint8 images ``(N, 1, 28, 28)`` and labels in ``[0, 10)``.

    Raises:
        FileNotFoundError: the files are nowhere and ``download`` is False; the message lists the folders searched
            and the ways to get the data.
        ValueError: a file is malformed (see :func:`longtail.data.read_idx`) or a download fails verification.
    """
    subfolders = ("fashion-mnist", "FashionMNIST/raw")
    cache = Path(cache_dir) if cache_dir is not None else None
    searched: list[Path] = []
    if data_dir is not None:
        searched += _expand(Path(data_dir), subfolders)
        target = cache if cache is not None else Path(data_dir)
    else:
        env = os.environ.get(DATA_ENV)
        if env:
            searched += _expand(Path(env), subfolders)
        searched.append(DEBIAN_FASHION_MNIST_DIR)
        target = cache if cache is not None else default_cache_dir("fashion-mnist")
    if target not in searched:
        searched.append(target)

    for folder in searched:
        pair = _split_files(folder, train)
        if pair is not None:
            return _load_idx_pair(*pair, FASHION_MNIST_CLASSES)

    if download:
        download_fashion_mnist(target)
        pair = _split_files(target, train)
        if pair is None:  # pragma: no cover - download_fashion_mnist fetches all four files or raises
            raise FileNotFoundError(f"download into {target} did not produce the Fashion-MNIST files")
        return _load_idx_pair(*pair, FASHION_MNIST_CLASSES)

    stems = ", ".join(f"{s}.gz" for s in (*_IDX_FILES[True], *_IDX_FILES[False]))
    raise FileNotFoundError(
        f"Fashion-MNIST ({'train' if train else 'test'} split) not found; searched: {_describe(searched)}. "
        "To get it, do one of: (1) as root, `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs "
        f"{DEBIAN_FASHION_MNIST_DIR}); (2) put the four files ({stems}) in a folder and set the environment "
        f"variable {DATA_ENV} to it (or pass data_dir=...); (3) call load_fashion_mnist(download=True) to fetch "
        f"them into {target} (checked against pinned SHA-256 values)."
    )


def load_mnist(data_dir: str | os.PathLike[str] | None = None, *, train: bool = True) -> LabelledImages:
    """Load the MNIST train (60,000 images) or test (10,000) split from the standard IDX files.

    Args:
        data_dir: folder with the four files (``train-images-idx3-ubyte[.gz]`` ...) or an ``mnist`` /
            ``MNIST/raw`` subfolder; default ``$LONGTAIL_DATA`` (same subfolders).
        train: the training split if True, else the test split.

    Returns:
        :class:`LabelledImages` with uint8 images ``(N, 1, 28, 28)``, labels in ``[0, 10)``, classes ``"0"``..``"9"``.

    Raises:
        FileNotFoundError: the files are not found; the message says where to put them.
        ValueError: a file is malformed.
    """
    subfolders = ("mnist", "MNIST/raw")
    searched: list[Path] = []
    if data_dir is not None:
        searched += _expand(Path(data_dir), subfolders)
    else:
        env = os.environ.get(DATA_ENV)
        if env:
            searched += _expand(Path(env), subfolders)
    for folder in searched:
        pair = _split_files(folder, train)
        if pair is not None:
            return _load_idx_pair(*pair, MNIST_CLASSES)
    stems = ", ".join(f"{s}.gz" for s in (*_IDX_FILES[True], *_IDX_FILES[False]))
    raise FileNotFoundError(
        f"MNIST ({'train' if train else 'test'} split) not found; searched: {_describe(searched)}. "
        f"Put the four standard files ({stems}, gzipped or not) in a folder and pass data_dir=... or set the "
        f"environment variable {DATA_ENV} to it (the files may also sit in its mnist/ subfolder)."
    )
