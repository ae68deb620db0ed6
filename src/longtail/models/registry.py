"""Model registry: build a model from its name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..checks import check_choice, check_int, check_num_classes
from .resnet_cifar import resnet20, resnet32, resnet44, resnet56
from .small_cnn import SmallCNN

__all__ = ["available_models", "build_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Instantiate a model by name.

    Args:
        name: one of :func:`available_models` -- ``"small_cnn"`` (:class:`SmallCNN`, 28x28 grey images),
            ``"resnet32"`` (CIFAR ResNet-32) and its siblings ``"resnet20"``, ``"resnet44"``, ``"resnet56"``.
        num_classes: outputs ``C``.
        in_channels: input channels.
        **kwargs: passed to the constructor (e.g. ``use_norm=True``; ``width=``/``dropout=`` for ``small_cnn``).

    Returns:
        The model; its final layer is ``model.fc`` (an ``nn.Linear``, or a ``NormedLinear`` with ``use_norm``).

    Raises:
        ValueError: unknown ``name`` (the message lists the known names) or sizes below 1.
        TypeError: ``num_classes`` / ``in_channels`` that are not integers (bools and floats included).
    """
    check_choice("model", name, available_models())
    num_classes = check_num_classes(num_classes)
    in_channels = check_int("in_channels", in_channels, low=1)
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
