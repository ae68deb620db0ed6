"""The models the trainer and ``longtail train --model`` know, by name: one registry of specs, open to yours.

A :class:`ModelSpec` says how to build a model and which configuration fields its builder reads (``small_cnn``
reads ``width``), so the trainer names no model: :func:`build_configured_model` builds any registered one from a
configuration. :func:`register_model` adds one (``longtail train --plugin FILE`` loads a file that calls it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..checks import check_choice, check_int, check_num_classes, check_registration
from .backbones import build_backbone, check_backbone_name, split_backbone_name
from .mlp import MLP
from .resnet_cifar import resnet20, resnet32, resnet44, resnet56
from .small_cnn import SmallCNN

__all__ = ["MODELS", "ModelSpec", "available_models", "build_configured_model", "build_model", "check_model_name",
           "register_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What the trainer and the command line know about one model.

    Attributes:
        summary: its line in ``longtail train --help``.
        build: ``build(num_classes=, in_channels=, use_norm=, **fields)`` -> the model, whose final layer is
            ``model.fc`` (an ``nn.Linear``, or a :class:`~longtail.models.NormedLinear` with ``use_norm``: the
            cosine head some losses ask for) and which has ``forward_features`` / ``forward_head``.
        reads: the configuration fields passed to ``build`` by name (each declared once, beside the field in
            :class:`longtail.train.TrainConfig`).
    """

    summary: str
    build: Callable[..., nn.Module]
    reads: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.summary + (f" [reads {', '.join(self.reads)}]" if self.reads else "")


# name -> spec; `longtail train --help` lists them in this order.
MODELS: dict[str, ModelSpec] = {
    "small_cnn": ModelSpec("small CNN for 28x28 grey images", SmallCNN, reads=("width",)),
    "resnet20": ModelSpec("CIFAR ResNet-20", resnet20),
    "resnet32": ModelSpec("CIFAR ResNet-32 (the papers' CIFAR-LT network)", resnet32),
    "resnet44": ModelSpec("CIFAR ResNet-44", resnet44),
    "resnet56": ModelSpec("CIFAR ResNet-56", resnet56),
    "mlp": ModelSpec("MLP for tables (--dataset table): two hidden layers of --hidden units", MLP, reads=("hidden",)),
}


def register_model(name: str, spec: ModelSpec, *, replace: bool = False) -> None:
    """Adds ``spec`` to :data:`MODELS` under ``name`` (the trainer, the config and the CLI then know it).

    >>> from longtail.models import MODELS, ModelSpec, SmallCNN, register_model
    >>> register_model("wide_cnn", ModelSpec("SmallCNN, 32 channels", lambda **kw: SmallCNN(width=32, **kw)))
    >>> build_model("wide_cnn", 10, 1).feature_dim
    256
    >>> del MODELS["wide_cnn"]
    """
    MODELS[check_registration(MODELS, "model", name, spec, ModelSpec, replace)] = spec


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Instantiate a model by name.

    Args:
        name: one of :func:`available_models` -- ``"small_cnn"`` (:class:`SmallCNN`, 28x28 grey images),
            ``"resnet32"`` (CIFAR ResNet-32) and its siblings ``"resnet20"``, ``"resnet44"``, ``"resnet56"``, and
            any registered with :func:`register_model`.
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
    return MODELS[name].build(num_classes=num_classes, in_channels=in_channels, **kwargs)


def check_model_name(name: str, value: object) -> str:
    """A registered model's name, or a backbone name (``hf:PATH``, ``timm:NAME``; ``custom:CLASS``, a module of
    yours given to the trainer), as :class:`longtail.train.TrainConfig` checks its ``model``."""
    if isinstance(value, str) and split_backbone_name(value) is not None:
        return check_backbone_name(name, value)
    return check_choice(name, value, available_models())


def build_configured_model(config: Any, num_classes: int, in_channels: int, *, use_norm: bool) -> nn.Module:
    """The model ``config.model`` names, built with the configuration fields its spec reads.

    Args:
        config: any object with a ``model`` attribute and the fields the spec reads (a ``TrainConfig``).
        num_classes: outputs ``C``.
        in_channels: input channels.
        use_norm: a cosine classifier head (:class:`~longtail.models.NormedLinear`), as LDAM's loss asks.

    A name with a backbone prefix, ``hf:PATH`` or ``timm:NAME`` (with ``config.pretrained``), is a pretrained
    backbone under longtail's head (:mod:`longtail.models.backbones`).
    """
    if split_backbone_name(config.model) is not None:  # hf:PATH, timm:NAME (backbones.py)
        return build_backbone(config.model, num_classes, in_channels, use_norm=use_norm,
                              pretrained=getattr(config, "pretrained", None))
    spec = MODELS[check_choice("model", config.model, available_models())]
    return build_model(config.model, num_classes, in_channels, use_norm=use_norm,
                       **{name: getattr(config, name) for name in spec.reads})
