"""The training configuration: one flat, JSON-serialisable dataclass whose fields describe themselves.

Each field is declared once, with its help text, its check (one of :mod:`longtail.train.checks`) and
whether a resumed run may change it (:func:`option`); the command line (``longtail train --help``, and
the options the other commands share with it, ``--device`` or ``--data-dir``), the checks in
``__post_init__`` and the resume check all read that declaration. Names offered by a registry (datasets,
models, losses, schedules) come from that registry, at the time they are asked for: a name registered
later (``longtail train --plugin FILE``) is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from ..checks import check_choice
from ..data.registry import DATASETS
from ..data.subsample import PROFILES
from ..difficulty import DIFFICULTIES
from ..models.registry import check_model_name
from ..weights import STABLE_DIFFICULTY, STABLE_MAX_RATIO, STABLE_MOMENTUM, STABLE_PRIOR
from .losses import LOSSES, loss_spec
from .posthoc import POSTHOC
from .checks import (
    FINITE_NONNEGATIVE,
    UNIT,
    Check,
    check_amp,
    check_batch_size,
    check_cdb_tau,
    check_class_betas,
    check_device_name,
    check_flag,
    check_la_tau,
    check_milestones,
    check_run_seed,
    check_text,
    integer,
    real,
)
from .samplers import SAMPLERS
from .schedule import SCHEDULES
from .stages import STAGES, stage_spec

def option(
    default: Any = None,
    help: str = "",
    *,
    check: Check | None = None,
    choices: Callable[[], Iterable[str]] | None = None,
    execution_only: bool = False,
    optional: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A configuration field with its description, declared once.

    Args:
        default: the default value (or ``factory`` for a mutable one).
        help: its line in ``longtail train --help``.
        check: ``check(name, value) -> value`` (one of :mod:`longtail.train.checks`), raising
            ``ValueError``/``TypeError`` in the format of :mod:`longtail.checks`; the returned value is stored
            (normalised: ``"1.5"`` -> 1.5, ...).
        choices: returns the allowed names (a registry's keys): the value must be one of them.
        execution_only: changes how a run executes, not what it computes, so a resume may change it.
        optional: ``None`` is allowed (and skips ``check``).
    """
    metadata = dict(help=help, check=check, choices=choices, execution_only=execution_only, optional=optional)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_SPLIT_TAU = ("tau was split in two: use cdb_tau (--cdb-tau; CDB's exponent, a number or 'dynamic') or la_tau "
              "(--la-tau; logit adjustment's)")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in the result file and the checkpoint.

    Every field's meaning, bounds and default are declared beside it (``longtail train --help``
    prints them). The loss (``loss``, a name of :data:`longtail.train.LOSSES`) reads only the fields
    its spec names; the others are ignored by it.
    """

    # data
    dataset: str = option("fashion_mnist", "the dataset (see the list below)", choices=lambda: DATASETS)
    data_dir: str | None = option(None, "folder with the dataset files (else $LONGTAIL_DATA, then Debian's "
                                  "/usr/share/datasets/fashion-mnist)", check=check_text, optional=True,
                                  execution_only=True)
    download: bool = option(False, "download the dataset (SHA-256 verified) when it is not found", check=check_flag,
                            execution_only=True)
    imbalance: float = option(100.0, "imbalance factor rho = n_max / n_min (1 keeps the balanced set)",
                              check=real(low=1.0, finite=True))
    profile: str = option("exp", "long-tail profile: exp (exponential, the papers') or step", choices=lambda: PROFILES)
    n_max: int | None = option(None, "images kept by the head class (default: all it has)", check=integer(1),
                               optional=True)
    val_per_class: int = option(0, "balanced validation images held out per class before the imbalance "
                                "(the losses that need it say so)", check=integer(0))
    subset_seed: int = option(0, "seed of the long-tailed subset draw", check=check_run_seed)
    image_size: int | None = option(None, "with --dataset folder: every image resized to this many pixels square "
                                    "(default: the folder's most common size)", check=integer(1), optional=True)
    test_fraction: float = option(0.2, "a dataset of yours without a test split (folder, arrays): this fraction of "
                                  "each class is carved out as the test set",
                                  check=real(low=0.0, high=1.0, low_open=True, high_open=True))
    test_seed: int = option(0, "seed of that carved test set (not the run's seed: the same test set for every run)",
                            check=check_run_seed)
    target: str | None = option(None, "with --dataset table: the label column", check=check_text, optional=True)
    encode_categorical: bool = option(False, "with --dataset table: one-hot encode the feature columns that hold text "
                                      "(else they are refused by name)", check=check_flag)

    # loss
    loss: str = option("ce", "the loss (see the list below)", choices=lambda: LOSSES)
    beta: float = option(0.9999, "class-balanced beta in [0, 1] (1: inverse frequency)", check=UNIT)
    class_betas: list[float] | None = option(None, "per-class betas of the class-balanced losses, comma-separated, one "
                                             "per class; replaces beta (an extension beyond the paper, e.g. from "
                                             "longtail tune-beta's per-class candidate)", check=check_class_betas,
                                             optional=True)
    gamma: float = option(1.0, "focal gamma >= 0", check=FINITE_NONNEGATIVE)
    reduction: str = option("mean", "how a weighted loss averages: mean (the papers' code: weighted sum / N) or "
                            "weighted_mean (PyTorch's: weighted sum / sum of the weights)",
                            choices=lambda: ("mean", "weighted_mean"))
    cdb_tau: float | str = option("dynamic", "CDB exponent tau: a positive number or 'dynamic' (the paper's)",
                                  check=check_cdb_tau)
    cdb_floor: float = option(0.0, "CDB minimum difficulty in [0, 1] (an extension beyond the paper; 0 is the paper)",
                              check=UNIT)
    cdb_prior: float = option(STABLE_PRIOR, "stable CDB (an extension beyond the paper): Beta(a, a) pseudo-count a >= 0 "
                              "of each class's validation accuracy, A = (correct + a) / (n + 2a), so 25 images never "
                              "give a difficulty of exactly 0 or 1 (1: Laplace, 0.5: Jeffreys, 0: the paper's ratio)",
                              check=real(low=0.0, finite=True))
    cdb_difficulty: str = option(STABLE_DIFFICULTY, "stable CDB (an extension beyond the paper): measure a class by its "
                                 "top-1 accuracy (the paper) or its confidence, the mean probability of its true class",
                                 choices=lambda: DIFFICULTIES)
    cdb_momentum: float = option(STABLE_MOMENTUM, "stable CDB (an extension beyond the paper): EMA step m in (0, 1] of "
                                 "the weights, w <- (1 - m) w + m target, from the uniform start (1: the paper's "
                                 "undamped weights)", check=real(low=0.0, high=1.0, low_open=True))
    cdb_max_ratio: float = option(STABLE_MAX_RATIO, "stable CDB (an extension beyond the paper): largest / smallest "
                                  "weight at most this (>= 1; the small weights are raised, then all rescaled to sum "
                                  "to C); a huge value such as 1e9 is no bound", check=real(low=1.0, finite=True))
    la_tau: float = option(1.0, "logit-adjustment tau >= 0 (1 is balanced softmax)",
                           check=check_la_tau)
    drw_epoch: int | None = option(None, "deferred re-weighting: class-balanced weights from this epoch on (0-based)",
                                   check=integer(0), optional=True)
    drw_beta: float = option(0.9999, "beta of the deferred re-weighting", check=UNIT)
    max_margin: float = option(0.5, "LDAM largest margin", check=FINITE_NONNEGATIVE)
    scale: float = option(30.0, "LDAM logit scale", check=real(low=0.0, low_open=True, finite=True))

    # stages, sampling and post-hoc adjustment
    stage: str = option("joint", "training stage (see the list below): joint trains the whole network; crt, lws and "
                        "classifier adjust the classifier of init_from's run on its frozen backbone", choices=lambda: STAGES)
    init_from: str | None = option(None, "folder of a finished run to start from (its split and architecture; the "
                                   "stages crt, lws and classifier need it)", check=check_text, optional=True)
    sampler: str | None = option(None, "which images an epoch draws (default: the stage's; instance for joint and "
                                 "classifier, class_balanced for crt and lws)", choices=lambda: SAMPLERS, optional=True)
    posthoc: str = option("none", "post-hoc classifier adjustment after the last epoch, its tau chosen on the "
                          "validation split (needs val_per_class)", choices=lambda: ("none", *POSTHOC))
    max_norm: float | None = option(None, "weight balancing's per-class MaxNorm after every step, relative radius in "
                                    "[0, 1]: delta = min + max_norm * (max - min) of the classifier's row norms at the "
                                    "start (0.1 in the authors' recipe)", check=UNIT, optional=True)

    # model and optimisation
    model: str = option("small_cnn", "the network: one of the list below, or a pretrained backbone under longtail's "
                        "head: hf:PATH (a transformers image model saved with save_pretrained in the folder PATH) or "
                        "timm:NAME (with --pretrained FILE; needs timm)", check=check_model_name)
    pretrained: str | None = option(None, "with --model timm:NAME: its weights, a state dict saved with torch.save "
                                    "(or a .safetensors file); default: timm's random initialisation",
                                    check=check_text, optional=True)
    width: int = option(16, "small_cnn first-stage channels", check=integer(1))
    hidden: int = option(256, "mlp: units of each of its two hidden layers", check=integer(1))
    epochs: int = option(10, "training epochs (0 with init_from: evaluate, or post-hoc adjust, the parent's model)",
                         check=integer(0))
    batch_size: int = option(128, "training batch size (over all processes; at least 2 per process)",
                             check=check_batch_size)
    lr: float = option(0.05, "base learning rate (SGD)", check=FINITE_NONNEGATIVE)
    momentum: float = option(0.9, "SGD momentum in [0, 1]", check=UNIT)
    nesterov: bool = option(True, "Nesterov momentum", check=check_flag)
    weight_decay: float = option(5e-4, "weight decay (never on the prior-initialised bias)", check=FINITE_NONNEGATIVE)
    warmup_epochs: float = option(1.0, "linear warm-up epochs", check=FINITE_NONNEGATIVE)
    schedule: str = option("cosine", "LR schedule after the warm-up", choices=lambda: SCHEDULES)
    milestones: list[int] = option(help="epochs at which the step schedule multiplies the LR by lr_decay "
                                   "(comma-separated)", check=check_milestones, factory=list)
    lr_decay: float = option(0.01, "factor of the step schedule at each milestone", check=FINITE_NONNEGATIVE)
    augment: bool = option(True, "pad-and-crop and horizontal flip", check=check_flag)
    pad: int | None = option(None, "pad-and-crop padding in pixels (default 2 for 28x28, 4 for 32x32)",
                             check=integer(0), optional=True)

    # execution and evaluation
    seed: int = option(0, "seed of the initialisation, data order and augmentation", check=check_run_seed)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", check=check_device_name, execution_only=True)
    amp: str = option("auto", "mixed precision: auto (bfloat16 autocast on CUDA and on CPUs with native bfloat16, "
                      "AVX512-BF16 or AMX; float32 elsewhere), bf16 or off; the loss is computed in float32",
                      check=check_amp)
    compile: bool = option(False, "torch.compile the model", check=check_flag, execution_only=True)
    eval_batch_size: int = option(1024, "evaluation batch size", check=integer(1), execution_only=True)
    eval_every: int | None = option(None, "also evaluate the test set every this many epochs (default: only after "
                                    "the last; validation, when there is a split, runs every epoch)",
                                    check=integer(1), optional=True, execution_only=True)
    tensorboard: bool = option(False, "also write the per-epoch scalars for TensorBoard to <out>/tensorboard (needs "
                               "the tensorboard package: pip install 'longtail[tensorboard]')", check=check_flag,
                               execution_only=True)
    many_threshold: float | None = option(None, "many-shot classes have more training images than this (default: "
                                          "0.2 x the head class's count: 100 for a 500-image head, as CIFAR-100-LT)",
                                          check=FINITE_NONNEGATIVE, optional=True)
    few_threshold: float | None = option(None, "few-shot classes have fewer training images than this (default: "
                                         "0.04 x the head class's count: 20 for a 500-image head)",
                                         check=FINITE_NONNEGATIVE, optional=True)

    tau: InitVar[Any] = None  # removed: refused with a message that names cdb_tau and la_tau

    def __post_init__(self, tau: Any = None) -> None:
        if tau is not None:
            raise TypeError(f"{_SPLIT_TAU}; got tau={tau!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if value is None and meta["optional"]:
                continue
            if meta["choices"] is not None:
                value = check_choice(f.name, value, tuple(meta["choices"]()))
            if meta["check"] is not None:
                value = meta["check"](f.name, value)
            setattr(self, f.name, value)
        if self.pretrained is not None and not self.model.startswith("timm:"):
            raise ValueError(f"pretrained must be None unless model is timm:NAME (an hf:PATH folder holds its own "
                             f"weights); got pretrained={self.pretrained!r} with model={self.model!r}")
        spec, stage = loss_spec(self.loss), stage_spec(self.stage)
        if self.sampler is None:
            self.sampler = stage.sampler
        self._check_stage(spec, stage)
        if spec.needs_validation and self.val_per_class < 1:
            raise ValueError(
                f"val_per_class must be >= 1 for loss={self.loss!r}, which measures class difficulty on a validation "
                f"split (the CDB CIFAR protocol holds out 25 per class); got {self.val_per_class}"
            )
        if self.drw_epoch is not None and not spec.deferred_reweighting:
            raise ValueError(
                f"drw_epoch must be None for loss={self.loss!r}: its class weights are the method itself, and "
                f"deferred re-weighting would replace them; got drw_epoch={self.drw_epoch}"
            )
        if (self.many_threshold is None) != (self.few_threshold is None):
            raise ValueError(f"many_threshold and few_threshold must be given together (or neither: relative to the head "
                             f"class); got many_threshold={self.many_threshold}, few_threshold={self.few_threshold}")
        if self.few_threshold is not None and self.few_threshold > self.many_threshold:
            raise ValueError(
                f"few_threshold must be <= many_threshold ({self.many_threshold:g}); got {self.few_threshold:g}"
            )

    def _check_stage(self, spec: Any, stage: Any) -> None:
        """The combinations of stage, parent, post-hoc adjustment and MaxNorm that mean something."""
        if stage.needs_parent and self.init_from is None:
            raise ValueError(f"init_from must be a finished run's folder for stage={self.stage!r}, which adjusts that "
                             "run's classifier (train it first with stage='joint'); got None")
        if self.epochs == 0 and self.init_from is None:
            raise ValueError("epochs must be >= 1 (0 only with init_from, to evaluate or post-hoc adjust a finished "
                             "run's model); got 0")
        if self.posthoc != "none":
            if self.val_per_class < 1:
                raise ValueError(f"val_per_class must be >= 1 for posthoc={self.posthoc!r}, whose tau is chosen on the "
                                 f"validation split; got {self.val_per_class}")
            if POSTHOC[self.posthoc].linear_only and (spec.head != "linear" or stage.trains == "scales"):
                raise ValueError(f"posthoc={self.posthoc!r} needs a linear classifier; got loss={self.loss!r} "
                                 f"({spec.head} head) with stage={self.stage!r}")
        if self.max_norm is not None and (spec.head != "linear" or stage.trains == "scales"):
            raise ValueError(f"max_norm must be None for a classifier that is not a trained linear layer; got "
                             f"max_norm={self.max_norm:g} with loss={self.loss!r} ({spec.head} head) and "
                             f"stage={self.stage!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The configuration saved by :meth:`to_dict`, also from older versions of the library.

        Migrations: the single ``tau`` of versions before 0.2 becomes ``cdb_tau`` for a loss that
        reads it and ``la_tau`` for one that reads that (where the old ``"dynamic"`` meant 1.0).
        """
        data = dict(data)
        if "tau" in data:
            tau = data.pop("tau")
            reads = loss_spec(data.get("loss", "ce")).reads
            if "cdb_tau" in reads:
                data.setdefault("cdb_tau", tau)
            elif "la_tau" in reads:
                data.setdefault("la_tau", 1.0 if tau == "dynamic" else tau)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"configuration keys must be fields of TrainConfig; got unknown keys {sorted(unknown)}")
        return cls(**data)

    def to_toml(self) -> str:
        """The configuration as TOML, readable by :func:`load_config_file` (``--config``); unset (None) fields are
        listed in a comment, TOML having no null."""
        lines, unset = [], []
        for key, value in self.to_dict().items():
            if value is None:
                unset.append(key)
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value!r}")
            elif isinstance(value, str):
                lines.append(f"{key} = {json.dumps(value)}")
            else:  # milestones, class_betas: lists of numbers
                lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]")
        note = [f"# unset (None): {', '.join(unset)}"] if unset else []
        return "\n".join(["# The resolved configuration of this run (longtail train --config FILE reads it).", *note,
                          *lines]) + "\n"

    @classmethod
    def execution_only_fields(cls) -> tuple[str, ...]:
        """Fields that change how a run executes but not what it computes: a resume may differ in them."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["execution_only"])


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fields set in a TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML) file of
    :class:`TrainConfig` fields, checked by name (unknown keys are refused, naming them); values are
    checked when the configuration is built.

    Raises:
        ValueError: an unknown suffix or key, a file that does not parse, or not a table of fields.
        OSError: the file cannot be read.
    """
    path = Path(path).expanduser()
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {str(path)!r} must be valid TOML; got {exc}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"config file {str(path)!r} is YAML, which needs PyYAML (pip install pyyaml); or use "
                             "TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {str(path)!r} must be valid YAML; got {' '.join(str(exc).split())}") from None
        data = {} if data is None else data
    else:
        raise ValueError(f"config file must end in .toml, .yaml or .yml; got {str(path)!r}")
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a table of TrainConfig fields; got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config file {str(path)!r} must hold TrainConfig fields only; got unknown keys {unknown}")
    return data


def naming_model(config: TrainConfig, model: Any) -> TrainConfig:
    """``config``, with ``model = "custom:<its class>"`` where a module of yours is given (result.json names it)."""
    return config if model is None else dataclasses.replace(config, model=f"custom:{type(model).__name__}")


__all__ = ["TrainConfig", "load_config_file", "naming_model", "option"]
