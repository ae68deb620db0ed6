"""Training harness: configuration, device-resident data, the loss registry and the loop."""

from .config import TrainConfig
from .data import PreparedData, augment_batch, prepare_data, synthetic_images
from .losses import LOSSES, build_loss
from .trainer import evaluate, learning_rate, train

__all__ = [
    "LOSSES",
    "PreparedData",
    "TrainConfig",
    "augment_batch",
    "build_loss",
    "evaluate",
    "learning_rate",
    "prepare_data",
    "synthetic_images",
    "train",
]
