"""MNIST / Fashion-MNIST loaders (folder search, errors), LabelledImages, and the real Debian Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import longtail.data.datasets as datasets_module
from data_helpers import make_mnist_like, write_idx
from longtail.data import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    LabelledImages,
    long_tailed_indices,
    load_fashion_mnist,
    load_mnist,
)


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $LONGTAIL_DATA, no Debian folder, and an empty default cache: only what a test sets up exists."""
    monkeypatch.delenv("LONGTAIL_DATA", raising=False)
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_data_dir(isolated: Path, compress: bool) -> None:
    arrays = make_mnist_like(isolated / "fm", n_train=30, n_test=10, compress=compress)
    train = load_fashion_mnist(isolated / "fm")
    test = load_fashion_mnist(str(isolated / "fm"), train=False)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.shape == (30,)
    assert test.images.shape == (10, 1, 28, 28)
    assert train.classes == FASHION_MNIST_CLASSES and len(train.classes) == 10
    assert torch.equal(train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_env_var_and_subfolder(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist_like(isolated / "root" / "fashion-mnist", n_train=20)
    monkeypatch.setenv("LONGTAIL_DATA", str(isolated / "root"))
    assert len(load_fashion_mnist()) == 20
    make_mnist_like(isolated / "root" / "mnist", n_train=40)
    mnist = load_mnist()
    assert len(mnist) == 40 and mnist.classes == MNIST_CLASSES


def test_explicit_dir_beats_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist_like(isolated / "env", n_train=20)
    make_mnist_like(isolated / "explicit", n_train=10)
    monkeypatch.setenv("LONGTAIL_DATA", str(isolated / "env"))
    assert len(load_fashion_mnist(isolated / "explicit")) == 10
    assert len(load_fashion_mnist()) == 20


def test_explicit_dir_is_not_silently_ignored(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist_like(isolated / "env", n_train=20)
    monkeypatch.setenv("LONGTAIL_DATA", str(isolated / "env"))
    with pytest.raises(FileNotFoundError, match="empty"):
        load_fashion_mnist(isolated / "empty")


def test_system_folder_is_searched(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist_like(isolated / "debian", n_train=12)
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST_DIR", isolated / "debian")
    assert len(load_fashion_mnist()) == 12


def test_not_found_message_says_how_to_get_the_data(isolated: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist()
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "as root" in message
    assert "LONGTAIL_DATA" in message
    assert "download=True" in message
    assert str(isolated / "no-debian") in message  # lists where it looked
    with pytest.raises(FileNotFoundError, match="LONGTAIL_DATA"):
        load_mnist()


def test_only_one_split_present(isolated: Path) -> None:
    make_mnist_like(isolated / "fm", n_train=10)
    (isolated / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert len(load_fashion_mnist(isolated / "fm")) == 10
    with pytest.raises(FileNotFoundError, match="test split"):
        load_fashion_mnist(isolated / "fm", train=False)


def test_inconsistent_files(isolated: Path) -> None:
    folder = isolated / "fm"
    make_mnist_like(folder, n_train=10)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        load_fashion_mnist(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\); got values in \[12, 12\]"):
        load_fashion_mnist(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros((10, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected uint8 labels"):
        load_fashion_mnist(folder)


def test_labelled_images_behaviour() -> None:
    images = torch.arange(6 * 2 * 2, dtype=torch.uint8).reshape(6, 1, 2, 2)
    data = LabelledImages(images, torch.tensor([0, 1, 2, 0, 1, 0]), ("a", "b", "c"))
    assert len(data) == 6 and data.num_classes == 3
    assert data.class_counts().tolist() == [3, 2, 1]
    image, label = data[4]
    assert torch.equal(image, images[4]) and int(label) == 1
    sub = data.subset(torch.tensor([5, 0]))
    assert sub.labels.tolist() == [0, 0] and torch.equal(sub.images[0], images[5])
    assert len(data.subset([1, 2])) == 2
    batch_images, batch_labels = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch_images.shape == (4, 1, 2, 2) and batch_labels.tolist() == [0, 1, 2, 0]


U8 = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("images", "labels", "classes", "exc", "match"),
    [
        (torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), ("a",), ValueError, "uint8.*; got torch.float32"),
        (torch.zeros(2, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ("a",), ValueError, r"\(2, 2, 2\)"),
        (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), ("a",), ValueError, "int32"),
        (U8, torch.zeros(3, dtype=torch.int64), ("a",), ValueError, r"one label per image \(2 images\); got 3 labels"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([1]), ("a",), ValueError, r"\[0, 1\); got"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([0]), ["a"], TypeError, "tuple of str; got"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([0]), (), ValueError, "at least one class; got"),
        (np.zeros((1, 1, 2, 2), np.uint8), torch.tensor([0]), ("a",), TypeError, "must be tensors; got ndarray"),
    ],
)
def test_labelled_images_validation(images, labels, classes, exc, match) -> None:  # noqa: ANN001
    with pytest.raises(exc, match=match):
        LabelledImages(images, labels, classes)


needs_debian = pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST_DIR.is_dir(),
    reason=f"{DEBIAN_FASHION_MNIST_DIR} absent (install Debian's dataset-fashion-mnist)",
)


@needs_debian
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGTAIL_DATA", raising=False)
    train = load_fashion_mnist(DEBIAN_FASHION_MNIST_DIR)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.class_counts().tolist() == [6000] * 10
    test = load_fashion_mnist(train=False)  # found through the search order (no env var -> Debian folder)
    assert test.images.shape == (10000, 1, 28, 28)
    assert test.class_counts().tolist() == [1000] * 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    split = long_tailed_indices(train.labels, 100, val_per_class=25, seed=0)
    lt = train.subset(split.train_indices)
    assert lt.class_counts().tolist() == split.counts.tolist()
    assert split.counts[0] == 5975 and split.counts[-1] == 59
