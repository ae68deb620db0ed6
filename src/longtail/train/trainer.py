"""The training loop: compact, deterministic under a seed, resumable, and DDP-aware.

Three layers, each usable on its own:

- :func:`build_run` turns a configuration into a :class:`Run` (data on the device, model, loss,
  optimiser, the loss's hooks); a user's own loop or the trainer benchmark starts from the same setup;
- :func:`train_one_epoch` and :func:`evaluate` run one epoch and one evaluation pass of a run;
- :func:`train` runs a whole configuration: it writes ``checkpoint.pt`` after every epoch and
  ``result.json`` (config, per-class counts, per-epoch metrics, timings, versions) atomically, so a
  killed run resumes with ``resume=True`` and ends with the same metrics as an uninterrupted one.

Every epoch's randomness (data order, augmentation) comes from a generator seeded by
``(seed, epoch)``, which is what makes resuming exact. The trainer knows no loss by name: it asks
the loss's :class:`longtail.train.LossSpec`.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..bias_init import init_prior_bias
from ..metrics import ConfusionMeter
from ..drw import DeferredReweighting
from ..io import load_checkpoint, save_checkpoint, write_json
from ..models import build_model
from .config import TrainConfig
from .data import DeviceSplit, PreparedData, augment_batch, prepare_data
from .losses import EpochHook, LossSpec, loss_spec
from .schedule import learning_rate

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"


# --- distributed ---------------------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Initialises the process group under ``torchrun`` (``WORLD_SIZE > 1``); nccl on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this torch build or machine has no CUDA")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """AVX512-BF16 or AMX-BF16: oneDNN then runs bfloat16 convolutions and matmuls in hardware."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except RuntimeError:  # pragma: no cover - a build without these probes
        return False


def autocast_enabled(amp: str, device: torch.device) -> bool:
    """Whether ``amp`` (``"auto"``, ``"bf16"`` or ``"off"``) turns on bfloat16 autocast on ``device``.

    ``"auto"``: on CUDA, and on CPUs with native bfloat16 (measured here, AMX-BF16: the width-16 CNN
    trains 1.47x faster at the same accuracy); float32 elsewhere, where emulated bfloat16 is slower.
    """
    if amp == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
    return amp == "bf16"


# --- building a run ------------------------------------------------------------------------------


def build_network(config: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The model of ``config``, with the head and bias initialisation its loss asks for."""
    spec = loss_spec(config.loss)
    kwargs: dict[str, Any] = {"use_norm": spec.head == "cosine"}
    if config.model == "small_cnn":
        kwargs["width"] = config.width
    model = build_model(config.model, num_classes, in_channels, **kwargs)
    if spec.prior_bias:
        init_prior_bias(model.fc)
    return model


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Weight decay on every parameter except a prior-initialised classifier bias."""
    exempt: set[int] = set()
    bias = getattr(model.fc, "bias", None)
    if loss_spec(config.loss).prior_bias and bias is not None:
        exempt.add(id(bias))
    decay = [p for p in model.parameters() if id(p) not in exempt]
    no_decay = [p for p in model.parameters() if id(p) in exempt]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@dataclass
class Run:
    """Everything one training run works with; :func:`build_run` makes it from a configuration.

    ``model`` is the bare model (its ``state_dict`` goes into checkpoints); ``network`` is what runs
    the training forward pass (the model, wrapped by DDP and ``torch.compile`` when asked); ``eager``
    is the same without ``torch.compile``, for the steps a compiled graph would only recompile for.
    """

    config: TrainConfig
    device: torch.device
    data: PreparedData
    spec: LossSpec
    model: nn.Module
    network: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    pad: int
    epoch_hooks: list[EpochHook] = field(default_factory=list)
    eager: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.eager is None:
            self.eager = self.network

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def autocast(self) -> bool:
        """bfloat16 autocast of the forward pass (the loss stays float32), resolved from ``config.amp``."""
        return autocast_enabled(self.config.amp, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "criterion": self.criterion.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.criterion.load_state_dict(state["criterion"])


def build_run(config: TrainConfig, data: PreparedData | None = None, device: torch.device | None = None) -> Run:
    """Data, model, loss, optimiser and hooks of ``config``, on ``device`` (default: ``config.device``).

    Under ``torch.distributed`` (initialised by the caller) the network is wrapped in DDP. The
    model's initialisation is seeded by ``config.seed``.
    """
    device = device if device is not None else resolve_device(config.device)
    if data is None:
        data = prepare_data(config, device)
    spec = loss_spec(config.loss)
    torch.manual_seed(config.seed)
    # Channels-last activations select the faster convolution kernels (oneDNN on CPU, cuDNN on GPU):
    # about 1.5x the throughput of the small CNN here (docs/benchmarks/ops.md).
    model = build_network(config, data.num_classes, data.in_channels).to(device, memory_format=torch.channels_last)
    criterion = spec.build_loss(config, data.counts).to(device)
    optimizer = torch.optim.SGD(
        parameter_groups(model, config), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
    )
    eager: nn.Module = model
    if _distributed()[1] > 1:
        eager = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # torch.compile traces one graph: the full training batch in train mode. The last, shorter batch of an epoch
    # and the evaluation passes (another batch size, eval mode, no grad) run eagerly: each would otherwise cost a
    # recompile of about 20 s on this CPU (measured: 3 graphs, 45 s, for a run whose epochs take 0.3 s).
    network = torch.compile(eager) if config.compile else eager
    pad = config.pad if config.pad is not None else (4 if data.train.images.shape[-1] >= 32 else 2)
    hooks = [spec.on_epoch_start] if spec.on_epoch_start is not None else []
    if config.drw_epoch is not None:
        hooks.append(DeferredReweighting(data.counts, config.drw_epoch, beta=config.drw_beta).apply)
    return Run(config, device, data, spec, model, network, criterion, optimizer, pad, hooks, eager)


# --- one epoch -----------------------------------------------------------------------------------


def _epoch_generator(config: TrainConfig, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch)


def _batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, bool]]:
    """This process's indices of each batch of an epoch, and whether the batch is a full one."""
    order = torch.randperm(n, generator=generator, device=device)
    rank, world = _distributed()
    for start in range(0, n, batch_size):
        indices = order[start : start + batch_size]
        if len(indices) < 2 * world:  # BatchNorm needs two samples on every process
            break
        yield indices[rank::world], len(indices) == batch_size


def train_one_epoch(run: Run, epoch: int, progress: Any = None) -> float:
    """Trains ``run`` for epoch ``epoch`` (0-based; its hooks first) and returns the mean training loss."""
    config, device, data = run.config, run.device, run.data.train
    for hook in run.epoch_hooks:
        hook(run.criterion, epoch)
    run.network.train()
    generator = _epoch_generator(config, epoch, device)
    n = len(data)
    steps = max(1, n // config.batch_size)
    total = torch.zeros((), device=device)
    seen = 0
    for step, (indices, full) in enumerate(_batches(n, config.batch_size, generator, device)):
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch + step / steps)
        images = data.images[indices]
        if config.augment:
            images = augment_batch(images, run.pad, flip=True, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.autocast):
            logits = (run.network if full else run.eager)(images)
        loss = run.criterion(logits.float(), data.labels[indices])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        total += loss.detach() * len(indices)
        seen += len(indices)
        if progress is not None:
            progress.update(1)
    return float(total) / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceSplit, num_classes: int, config: TrainConfig) -> ConfusionMeter:
    """Confusion counts of the model on ``data`` (each process a shard, then summed over processes)."""
    model.eval()
    rank, world = _distributed()
    meter = ConfusionMeter(num_classes).to(data.labels.device)
    indices = torch.arange(rank, len(data), world, device=data.labels.device)
    for start in range(0, len(indices), config.eval_batch_size):
        chunk = indices[start : start + config.eval_batch_size]
        images = data.images[chunk].contiguous(memory_format=torch.channels_last)
        with torch.autocast(data.images.device.type, dtype=torch.bfloat16,
                            enabled=autocast_enabled(config.amp, data.images.device)):
            logits = model(images)
        meter.update(logits.float(), data.labels[chunk])
    return meter.all_reduce()


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "shot_accuracy")
    return {k: report[k] for k in keys if k in report}


def _thresholds(config: TrainConfig) -> dict[str, float]:
    return dict(many_threshold=config.many_threshold, few_threshold=config.few_threshold)


def validate(run: Run) -> dict[str, Any]:
    """Validation metrics of ``run`` (every loss reports them, so hyperparameters can be chosen without the
    test set), then the loss's ``after_validation`` hook; ``{}`` without a validation split."""
    if run.data.val is None:
        return {}
    meter = evaluate(run.eager, run.data.val, run.num_classes, run.config)
    entry: dict[str, Any] = {"val": _summary(meter.report(**_thresholds(run.config)))}
    if run.spec.after_validation is not None:
        entry.update(run.spec.after_validation(run.criterion, meter))
    return entry


def test_report(run: Run) -> dict[str, Any]:
    """The full report of ``run`` on the (balanced) test set, shot groups by the training counts."""
    meter = evaluate(run.eager, run.data.test, run.num_classes, run.config)
    return meter.report(train_counts=run.data.counts, **_thresholds(run.config))


test_report.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --- the whole run -------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a run has done so far: saved in the checkpoint, so a resumed run continues from it."""

    history: list[dict[str, Any]] = field(default_factory=list)
    next_epoch: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    wall_start: float = field(default_factory=time.perf_counter)

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.wall_start

    def resume_from(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint["history"])
        self.next_epoch = checkpoint["epoch"] + 1
        self.train_seconds, self.eval_seconds = checkpoint["train_seconds"], checkpoint["eval_seconds"]
        self.wall_start -= checkpoint.get("wall_seconds", 0.0)  # wall time of the earlier attempts counts too


def _check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    saved = TrainConfig.from_dict(saved).to_dict()  # a checkpoint of an older version, in today's fields
    current = config.to_dict()
    execution_only = TrainConfig.execution_only_fields()
    differing = sorted(k for k in current if k not in execution_only and saved.get(k) != current[k])
    if differing:
        details = ", ".join(f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in differing)
        raise ValueError(f"cannot resume: the configuration differs from the checkpoint's ({details})")


def _progress_bar(total: int, verbose: int, description: str) -> Any:
    if verbose < 2:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, file=sys.stderr)


def _log(verbose: int, message: str) -> None:
    if verbose >= 1 and _distributed()[0] == 0:
        print(message, flush=True)


def _epoch_line(epoch: int, config: TrainConfig, train_loss: float, test: dict[str, Any] | None) -> str:
    line = f"epoch {epoch + 1:3d}/{config.epochs}  loss {train_loss:.4f}"
    if test is not None:
        shots = test.get("shot_accuracy", {})
        line += f"  acc {test['accuracy']:.4f}  bal {test['balanced_accuracy']:.4f}  many/med/few " + "/".join(
            "-" if shots.get(k) is None else f"{shots[k]:.3f}" for k in ("many", "medium", "few")
        )
    return line


def _timed(device: torch.device, fn: Any, *args: Any) -> tuple[Any, float]:
    _synchronize(device)
    t0 = time.perf_counter()
    out = fn(*args)
    _synchronize(device)
    return out, time.perf_counter() - t0


def _run_epoch(run: Run, epoch: int, progress: Progress, verbose: int) -> dict[str, Any]:
    """One epoch of :func:`train`: train, validate, test on schedule; returns the test report (or ``{}``)."""
    config = run.config
    rank = _distributed()[0]
    bar = _progress_bar(max(1, len(run.data.train) // config.batch_size), verbose if rank == 0 else 0,
                        f"epoch {epoch + 1}/{config.epochs}")
    train_loss, seconds = _timed(run.device, train_one_epoch, run, epoch, bar)
    progress.train_seconds += seconds
    if bar is not None:
        bar.close()

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"epoch": epoch + 1, "lr": learning_rate(config, epoch + 1), "train_loss": train_loss}
    entry.update(validate(run))
    report: dict[str, Any] = {}
    if epoch + 1 == config.epochs or (config.eval_every is not None and (epoch + 1) % config.eval_every == 0):
        report = test_report(run)
        entry["test"] = _summary(report)
    _synchronize(run.device)
    progress.eval_seconds += time.perf_counter() - t0
    progress.history.append(entry)
    progress.next_epoch = epoch + 1
    _log(verbose, _epoch_line(epoch, config, train_loss, entry.get("test")))
    return report


def _save(run: Run, progress: Progress, out: Path, report: dict[str, Any]) -> None:
    save_checkpoint(out / CHECKPOINT, {
        "epoch": progress.next_epoch - 1,
        "config": run.config.to_dict(),
        **run.state_dict(),
        "history": progress.history,
        "train_seconds": progress.train_seconds,
        "eval_seconds": progress.eval_seconds,
        "wall_seconds": progress.wall_seconds(),
    })
    write_json(out / RESULT, result_dict(run, progress, report, complete=progress.next_epoch == run.config.epochs))


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    verbose: int = 1,
    data: PreparedData | None = None,
) -> dict[str, Any]:
    """Trains ``config`` and returns the result written to ``out_dir/result.json``.

    Args:
        config: the run.
        out_dir: folder for ``checkpoint.pt`` and ``result.json`` (created).
        resume: continue from ``out_dir/checkpoint.pt`` if there is one (the configuration must
            match); a finished run is returned as it is.
        verbose: 0 silent, 1 one line per epoch (logs), 2 progress bars too.
        data: prepared data to reuse across runs (the benchmark matrix); loaded from ``config`` otherwise.
    """
    progress = Progress()
    out = Path(out_dir)
    device = resolve_device(config.device)
    started_group = init_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        checkpoint = None
        if resume and (out / CHECKPOINT).exists():
            checkpoint = load_checkpoint(out / CHECKPOINT, map_location=device)
            _check_resumable(checkpoint["config"], config)
            if checkpoint["epoch"] + 1 >= config.epochs and (out / RESULT).exists():
                _log(verbose, f"{out}: already complete")
                return json.loads((out / RESULT).read_text())

        run = build_run(config, data, device)
        if checkpoint is not None:
            run.load_state_dict(checkpoint)
            progress.resume_from(checkpoint)
            _log(verbose, f"resuming {out} at epoch {progress.next_epoch + 1}/{config.epochs}")

        report: dict[str, Any] = {}
        for epoch in range(progress.next_epoch, config.epochs):
            report = _run_epoch(run, epoch, progress, verbose)
            if _distributed()[0] == 0:
                _save(run, progress, out, report)
        if not report:  # nothing left to train (resumed after the last epoch): evaluate once
            report = test_report(run)
        return result_dict(run, progress, report, complete=True)
    finally:
        if started_group:
            torch.distributed.destroy_process_group()


def result_dict(run: Run, progress: Progress, report: dict[str, Any], *, complete: bool) -> dict[str, Any]:
    """The content of ``result.json``."""
    return {
        "status": "complete" if complete else "running",
        "longtail_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(run.device),
        "autocast": "bfloat16" if run.autocast else "off",
        "world_size": _distributed()[1],
        "config": run.config.to_dict(),
        "classes": list(run.data.classes),
        "train_counts": run.data.counts.tolist(),
        "val_counts": run.data.val_counts.tolist(),
        "history": progress.history,
        "final": report,
        "train_seconds": progress.train_seconds,
        "eval_seconds": progress.eval_seconds,
        "wall_seconds": progress.wall_seconds(),
    }


__all__ = [
    "CHECKPOINT",
    "RESULT",
    "Progress",
    "Run",
    "build_network",
    "autocast_enabled",
    "build_run",
    "cpu_has_native_bfloat16",
    "evaluate",
    "init_distributed",
    "learning_rate",
    "parameter_groups",
    "resolve_device",
    "result_dict",
    "test_report",
    "train",
    "train_one_epoch",
]
