"""The training configuration: one flat, JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "synthetic")
MODELS = ("small_cnn", "resnet20", "resnet32", "resnet44", "resnet56")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in the result file and the checkpoint.

    Data: ``dataset`` (``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100`` or ``synthetic``),
    ``imbalance`` (rho = n_max / n_min; 1 keeps the balanced set), ``profile`` (``exp``/``step``),
    ``n_max`` (head class size; default all a class has), ``val_per_class`` (balanced validation
    split carved out before the imbalance; CDB needs it), ``subset_seed`` (the long-tailed draw).

    Loss: ``loss`` (a name from ``longtail.train.LOSSES``), ``beta``, ``gamma``, ``tau`` (CDB: a
    number or ``"dynamic"``; logit adjustment: a number), ``cdb_floor`` (CDB minimum difficulty, an
    extension beyond the paper; 0 is the paper), ``drw_epoch`` (deferred re-weighting: plain
    loss before it, class-balanced weights with ``drw_beta`` from it on), ``max_margin``/``scale`` (LDAM).

    Optimisation: SGD with momentum and nesterov, ``lr`` after a linear warm-up of ``warmup_epochs``,
    then ``schedule`` ``cosine`` (to 0), ``step`` (times ``lr_decay`` at each of ``milestones``) or
    ``constant``; ``weight_decay`` (never on the prior-initialised bias of sigmoid losses).
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    download: bool = False
    imbalance: float = 100.0
    profile: str = "exp"
    n_max: int | None = None
    val_per_class: int = 0
    subset_seed: int = 0

    loss: str = "ce"
    beta: float = 0.9999
    gamma: float = 1.0
    tau: float | str = "dynamic"
    cdb_floor: float = 0.0
    drw_epoch: int | None = None
    drw_beta: float = 0.9999
    max_margin: float = 0.5
    scale: float = 30.0

    model: str = "small_cnn"
    width: int = 16
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    lr_decay: float = 0.01
    augment: bool = True
    pad: int | None = None

    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    eval_batch_size: int = 1024
    eval_every: int = 1
    many_threshold: float = 100
    few_threshold: float = 20

    def __post_init__(self) -> None:
        from .losses import LOSSES  # local: the registry imports the loss modules

        _choice("dataset", self.dataset, DATASETS)
        _choice("model", self.model, MODELS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("loss", self.loss, tuple(LOSSES))
        _choice("profile", self.profile, ("exp", "step"))
        _number("imbalance", self.imbalance, low=1.0)
        _number("beta", self.beta, low=0.0, high=1.0)
        _number("drw_beta", self.drw_beta, low=0.0, high=1.0)
        _number("gamma", self.gamma, low=0.0)
        _number("cdb_floor", self.cdb_floor, low=0.0, high=1.0)
        _number("lr", self.lr, low=0.0)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("momentum", self.momentum, low=0.0, high=1.0)
        _number("warmup_epochs", self.warmup_epochs, low=0.0)
        _number("lr_decay", self.lr_decay, low=0.0)
        _integer("epochs", self.epochs, low=1)
        _integer("batch_size", self.batch_size, low=1)
        _integer("eval_batch_size", self.eval_batch_size, low=1)
        _integer("eval_every", self.eval_every, low=1)
        _integer("val_per_class", self.val_per_class, low=0)
        _integer("width", self.width, low=1)
        if self.n_max is not None:
            _integer("n_max", self.n_max, low=1)
        if self.drw_epoch is not None:
            _integer("drw_epoch", self.drw_epoch, low=0)
            if self.loss.startswith("cdb"):
                raise ValueError("drw_epoch does not apply to the CDB losses, whose weights already change every epoch")
        if isinstance(self.tau, str):
            if self.tau != "dynamic":
                raise ValueError(f"tau must be a number or 'dynamic'; got {self.tau!r}")
        else:
            _number("tau", self.tau, low=0.0)
        if self.loss.startswith("cdb") and self.val_per_class < 1:
            raise ValueError(
                f"loss={self.loss!r} needs a validation split to measure class difficulty: set val_per_class >= 1 "
                f"(the CDB CIFAR protocol holds out 25 per class); got {self.val_per_class}"
            )
        if any(not isinstance(m, int) or m < 0 for m in self.milestones):
            raise ValueError(f"milestones must be non-negative epoch numbers; got {self.milestones!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps'; got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**data)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number; got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high if high is not None else 'inf'}]; got {value!r}")


def _integer(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
