"""Training harness: configuration, device-resident data, the loss registry and the loop."""

from ..data.synthetic import synthetic_images
from .config import TrainConfig
from .data import PreparedData, augment_batch, prepare_data
from .inference import TrainedModel, load_model
from .losses import LOSSES, LossSpec, build_loss, loss_spec, register_loss
from .posthoc import POSTHOC, PostHocSpec
from .samplers import SAMPLERS, SamplerSpec
from .schedule import SCHEDULES, learning_rate
from .stages import STAGES, StageSpec
from .trainer import (
    Run,
    RunFolderError,
    TrainingDiverged,
    build_run,
    evaluate,
    final_report,
    train,
    train_one_epoch,
    validate,
)

__all__ = [
    "LOSSES",
    "POSTHOC",
    "SAMPLERS",
    "SCHEDULES",
    "STAGES",
    "LossSpec",
    "PostHocSpec",
    "SamplerSpec",
    "StageSpec",
    "TrainedModel",
    "PreparedData",
    "Run",
    "RunFolderError",
    "TrainConfig",
    "TrainingDiverged",
    "augment_batch",
    "build_loss",
    "build_run",
    "evaluate",
    "final_report",
    "learning_rate",
    "load_model",
    "loss_spec",
    "prepare_data",
    "register_loss",
    "synthetic_images",
    "train",
    "train_one_epoch",
    "validate",
]
