"""Functional forms of the losses: ``longtail.functional.<loss>(logits, target, ...)``."""

from .class_balanced import LOSSES as CLASS_BALANCED_LOSSES
from .class_balanced import class_balanced_loss
from .focal import focal_loss, sigmoid_focal_loss

__all__ = ["CLASS_BALANCED_LOSSES", "class_balanced_loss", "focal_loss", "sigmoid_focal_loss"]
