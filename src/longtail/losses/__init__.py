"""``nn.Module`` losses; one loss family per file."""

from .class_balanced import ClassBalancedLoss
from .focal import FocalLoss, SigmoidFocalLoss

__all__ = ["ClassBalancedLoss", "FocalLoss", "SigmoidFocalLoss"]
