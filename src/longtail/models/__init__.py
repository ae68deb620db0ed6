"""Small image classifiers written for this package (no torchvision).

Every model exposes its final classifier layer as the attribute ``fc`` (and the ``classifier`` property), and
its penultimate embedding through ``forward_features(x)``; ``forward_head(features)`` maps the embedding to the
logits, so ``forward(x) == forward_head(forward_features(x))`` (timm's convention).
"""

from .heads import NormedLinear, PriorAdjusted, ScaledClassifier, TauNormalized
from .registry import available_models, build_model
from .resnet_cifar import BasicBlock, CifarResNet, resnet20, resnet32, resnet44, resnet56
from .small_cnn import SmallCNN

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "NormedLinear",
    "PriorAdjusted",
    "ScaledClassifier",
    "TauNormalized",
    "SmallCNN",
    "available_models",
    "build_model",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]
