"""``nn.Module`` losses; one loss family per file, every weighted one a :class:`WeightedLoss`."""

from ._base import WeightedLoss
from .cdb import CDBLoss, StableCDBLoss
from .class_balanced import ClassBalancedLoss
from .focal import FocalLoss, SigmoidFocalLoss
from .ldam import LDAMLoss
from .logit_adjusted import BalancedSoftmaxLoss, LogitAdjustedLoss

__all__ = [
    "BalancedSoftmaxLoss",
    "CDBLoss",
    "ClassBalancedLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "SigmoidFocalLoss",
    "StableCDBLoss",
    "WeightedLoss",
]
