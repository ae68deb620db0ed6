"""Small image classifiers written for this package (no torchvision).

Every model exposes its final classifier layer as the attribute ``fc`` (and the ``classifier`` property), and
its penultimate embedding through ``forward_features(x)``; ``forward_head(features)`` maps the embedding to the
logits, so ``forward(x) == forward_head(forward_features(x))`` (timm's convention). :data:`MODELS` holds them by
name; :func:`register_model` adds yours. :class:`Classifier` is the base that gives a model this convention
from its backbone (``embed``) and its ``fc``.
"""

from .backbones import Backbone
from .base import Classifier, linear_head
from .heads import NormedLinear, PriorAdjusted, ScaledClassifier, TauNormalized
from .mlp import MLP
from .registry import MODELS, ModelSpec, available_models, build_configured_model, build_model, register_model
from .resnet_cifar import BasicBlock, CifarResNet, resnet20, resnet32, resnet44, resnet56
from .small_cnn import SmallCNN

__all__ = [
    "MODELS",
    "Backbone",
    "BasicBlock",
    "CifarResNet",
    "Classifier",
    "MLP",
    "ModelSpec",
    "NormedLinear",
    "PriorAdjusted",
    "ScaledClassifier",
    "TauNormalized",
    "SmallCNN",
    "available_models",
    "build_configured_model",
    "build_model",
    "linear_head",
    "register_model",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]
