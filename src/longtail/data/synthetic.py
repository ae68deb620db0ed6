"""A small deterministic image set for tests and quick checks (no files needed)."""

from __future__ import annotations

import torch

from .datasets import LabelledImages


def synthetic_images(train: bool, *, num_classes: int = 10, per_class: int | None = None, size: int = 16) -> LabelledImages:
    """A class prototype plus noise, as uint8 ``(N, 1, size, size)`` images.

    The prototypes are fixed (seed 0) so train and test share them; the noise differs between the
    splits. The classes overlap enough that a small CNN does not reach 100% in a few epochs.
    """
    per_class = per_class if per_class is not None else (500 if train else 100)
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.rand(num_classes, 1, size, size, generator=gen)
    noise_gen = torch.Generator().manual_seed(1 if train else 2)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 1, size, size, generator=noise_gen)
    images = (prototypes[labels] * 0.6 + 0.2 + 0.25 * noise).clamp(0, 1)
    return LabelledImages((images * 255).round().to(torch.uint8), labels, tuple(f"class_{i}" for i in range(num_classes)))


__all__ = ["synthetic_images"]
