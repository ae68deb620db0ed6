"""Data for the trainer: a long-tailed split held as tensors on the device, and batched augmentation.

In the style of airbench: the whole (small) dataset is normalised once and lives on the device;
an epoch is a ``randperm`` over it, and augmentation (pad-and-crop, horizontal flip) is applied to a
whole batch at once with tensor indexing, no per-image Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..data.registry import dataset_spec, load_dataset, training_split
from .config import TrainConfig


@dataclass
class DeviceSplit:
    """Images (float, normalised, ``(N, C, H, W)``) and labels (int64) on the device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> DeviceSplit:
        """This split on ``device`` (itself when it is there already)."""
        if self.labels.device == device:
            return self
        return DeviceSplit(self.images.to(device), self.labels.to(device))


@dataclass
class PreparedData:
    train: DeviceSplit
    val: DeviceSplit | None
    test: DeviceSplit
    counts: torch.Tensor  # (C,) training images per class, CPU int64
    val_counts: torch.Tensor
    classes: tuple[str, ...]
    # Per-channel statistics of the training subset that every split was normalised with (x / 255 - mean) / std
    # (a table's float features: (x - mean) / std, one channel a feature):
    # a model trained on these sees raw inputs only through them (checkpoints carry them).
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to(self, device: torch.device) -> PreparedData:
        """The splits on ``device`` (``counts`` stay on the CPU); itself when they are there already."""
        if self.train.labels.device == device:
            return self
        return replace(self, train=self.train.to(device), val=None if self.val is None else self.val.to(device),
                       test=self.test.to(device))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    def description(self) -> dict[str, Any]:
        """What a model trained on this data needs at prediction time: class names, input shape and the
        normalisation ``(x / 255 - mean) / std`` per channel (saved in checkpoints and results)."""
        return {
            "classes": list(self.classes),
            "in_channels": self.in_channels,
            "image_size": list(self.train.images.shape[-2:]),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def prepare_data(config: TrainConfig, device: torch.device) -> PreparedData:
    """Loads the dataset, draws the long-tailed split (a dataset that is not a benchmark one: its own split, see
    :func:`longtail.data.training_split`) and moves everything to ``device``. A dataset with its own validation
    split (``DatasetSpec.load_validation``, a folder's ``val/``) has it as the validation split, nothing held out."""
    spec = dataset_spec(config.dataset)
    if config.augment and not spec.augmentable:
        raise ValueError(f"augment must be False for dataset {config.dataset!r}, whose inputs are features, not images "
                         "(pad-and-crop would shift them into each other's place); pass --no-augment")
    fields = {name: getattr(config, name) for name in spec.reads}  # the built-in sets read none
    full_train = load_dataset(config.dataset, config.data_dir, train=True, download=config.download, **fields)
    test = load_dataset(config.dataset, config.data_dir, train=False, download=config.download, **fields)
    given_val = None if spec.load_validation is None else spec.load_validation(config.data_dir, **fields)
    split = training_split(
        config.dataset,
        full_train.labels,
        config.imbalance,
        config.profile,
        n_max=config.n_max,
        seed=config.subset_seed,
        val_per_class=config.val_per_class if given_val is None else 0,
        num_classes=full_train.num_classes,
    )
    # Statistics of the training subset, so the test set is normalised like the data the model saw (a table's
    # features: standardised with its training rows' mean and std, one channel a feature).
    train_images = _as_float(full_train.images[split.train_indices])
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    if full_train.images.dtype != torch.uint8:
        # A table's feature that is constant over the training rows would be divided by 1e-6 (its test values blown
        # up by 1e6): it is only centred (std 1). Images keep the clamp, bit for bit.
        std = torch.where(std <= 1e-6, torch.ones_like(std), std)

    def to_device(images: torch.Tensor, labels: torch.Tensor, already_float: bool = False) -> DeviceSplit:
        x = images if already_float else _as_float(images)
        return DeviceSplit(((x - mean) / std).to(device), labels.to(device))

    train = to_device(train_images, full_train.labels[split.train_indices], already_float=True)
    val, val_counts = None, split.val_counts
    if given_val is not None:
        val, val_counts = to_device(given_val.images, given_val.labels), given_val.class_counts()
    elif len(split.val_indices):
        val = to_device(full_train.images[split.val_indices], full_train.labels[split.val_indices])
    return PreparedData(
        train=train,
        val=val,
        test=to_device(test.images, test.labels),
        counts=split.counts.cpu(),
        val_counts=val_counts.cpu(),
        classes=full_train.classes,
        mean=tuple(mean.flatten().tolist()),
        std=tuple(std.flatten().tolist()),
    )


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as floats in [0, 1]; float features (a table's) as they are."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def augment_batch(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random pad-and-crop (zero padding, as the CIFAR recipes) and horizontal flip for a whole batch."""
    n, _, h, w = images.shape
    device = images.device
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator, device=device)
        dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator, device=device)
        rows = torch.arange(h, device=device).view(1, h, 1) + dy
        cols = torch.arange(w, device=device).view(1, 1, w) + dx
        batch = torch.arange(n, device=device).view(n, 1, 1)
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=device) < 0.5
        images = torch.where(mirrored.view(n, 1, 1, 1), images.flip(3), images)
    return images.contiguous()
