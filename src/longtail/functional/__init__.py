"""Functional forms of the losses: ``longtail.functional.<loss>(logits, target, ...)``."""

from .class_balanced import class_balanced_loss
from .focal import focal_loss, sigmoid_focal_loss
from .ldam import ldam_loss, ldam_margins
from .logit_adjusted import balanced_softmax_loss, class_log_prior, logit_adjust, logit_adjusted_loss

__all__ = [
    "balanced_softmax_loss",
    "class_balanced_loss",
    "class_log_prior",
    "focal_loss",
    "ldam_loss",
    "ldam_margins",
    "logit_adjust",
    "logit_adjusted_loss",
    "sigmoid_focal_loss",
]
