"""Small image classifiers written for this package (no torchvision).

Every model exposes its final classifier layer as the attribute ``fc`` (and the ``classifier`` property), and
its penultimate embedding through ``forward_features(x)``.
"""

from .heads import NormedLinear
from .registry import available_models, build_model
from .resnet_cifar import BasicBlock, CifarResNet, resnet20, resnet32, resnet44, resnet56
from .small_cnn import SmallCNN

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "NormedLinear",
    "SmallCNN",
    "available_models",
    "build_model",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]
