"""``nn.Module`` losses; one loss family per file."""

from .cdb import CDBLoss
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
]
