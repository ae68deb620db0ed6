"""The training loop: compact, deterministic under a seed, resumable, and DDP-aware.

Three layers, each usable on its own:

- :func:`build_run` turns a configuration into a :class:`Run` (data on the device, model, loss,
  optimiser, the loss's hooks); a user's own loop or the trainer benchmark starts from the same setup;
- :func:`train_one_epoch` and :func:`evaluate` run one epoch and one evaluation pass of a run;
- :func:`train` runs a whole configuration: it writes ``checkpoint.pt`` after every epoch and
  ``result.json`` (config, per-class counts, per-epoch metrics, timings, versions) atomically, so a
  killed run resumes with ``resume=True`` and ends with the same metrics as an uninterrupted one.

The output folder belongs to one run at a time: :func:`train` holds an exclusive lock on its file
``.lock`` (``fcntl.flock``, POSIX only; under DDP rank 0 holds it) from the first check to the last
write, so a second run started on the same folder stops at once, naming the folder and the PID
that holds it. The lock file stays in the folder (removing it would let two runs lock two
different files); the kernel releases the lock when the process ends, even by SIGKILL. A folder
that holds a run is never replaced silently: without ``resume`` or ``overwrite`` it is refused.

A resumed run whose checkpoint is finished but whose ``result.json`` is missing, unreadable, not
``"complete"`` or shorter than the checkpoint's history (a SIGKILL during the last write) gets its
``result.json`` rebuilt from the checkpoint (the model is rebuilt, loaded and evaluated). A
training loss that becomes NaN or infinite stops the run: ``result.json`` gets ``"status":
"diverged"`` and :class:`TrainingDiverged` is raised; such a run is not resumed.

Every epoch's randomness (data order, augmentation) comes from a generator seeded by
``(seed, epoch)``, which is what makes resuming exact. The trainer knows no loss by name: it asks
the loss's :class:`longtail.train.LossSpec`.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..bias_init import init_prior_bias
from ..checks import check_batch_per_process, check_output_folder, value_checks
from ..metrics import ConfusionMeter, nan_to_none, relative_shot_thresholds
from ..drw import DeferredReweighting
from ..io import clean_stale_temporaries, load_checkpoint, save_checkpoint, write_json, write_text
from ..models import build_model
from .config import TrainConfig
from .data import DeviceSplit, PreparedData, augment_batch, prepare_data
from .losses import EpochHook, LossSpec, loss_spec
from .posthoc import POSTHOC, adjusted_model
from .samplers import epoch_order, shard_batches
from .stages import MaxNorm, StageSpec, load_parent_weights, prepare_stage, read_parent, stage_spec
from .device import (
    autocast_enabled,
    cpu_has_native_bfloat16,
    distributed,
    hardware,
    init_distributed,
    resolve_device,
    synchronize,
)
from .run_folder import (
    CHECKPOINT,
    CONFIG,
    HISTORY,
    RESULT,
    RunFolderError,
    existing_run,
    folder_lock,
    history_csv,
    history_scalars,
    read_result,
    result_problem,
    tensorboard_writer,
)
from .schedule import learning_rate

class TrainingDiverged(RuntimeError):
    """The training loss of an epoch was NaN or infinite; the run stopped.

    ``epoch`` (1-based) and ``loss`` say where; ``result`` is what was written to ``result.json``
    (``"status": "diverged"``, the history so far, the non-finite loss as ``null``). The command line
    prints the message as one line (exit status 1).
    """

    exit_status = 1

    def __init__(self, epoch: int, loss: float, result: dict[str, Any] | None = None) -> None:
        self.epoch, self.loss, self.result = epoch, loss, result
        super().__init__(f"training diverged at epoch {epoch} (loss {loss:g}); lower --lr")


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
    """The trainable parameters (those a frozen stage left ``requires_grad``), with weight decay on every one
    except a prior-initialised classifier bias."""
    exempt: set[int] = set()
    bias = getattr(model.fc, "bias", None)
    if loss_spec(config.loss).prior_bias and bias is not None:
        exempt.add(id(bias))
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if id(p) not in exempt]
    no_decay = [p for p in trainable if id(p) in exempt]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@dataclass
class Run:
    """Everything one training run works with; :func:`build_run` makes it from a configuration.

    ``model`` is the bare model (its ``state_dict`` goes into checkpoints); ``network`` is what runs
    the training forward pass (the model, or its frozen-backbone wrapper for a classifier stage,
    wrapped by DDP and ``torch.compile`` when asked); ``eager`` is the same without
    ``torch.compile``, for the steps a compiled graph would only recompile for. ``constraint`` is
    weight balancing's MaxNorm (or None); ``parent`` the record of the run it started from.
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
    stage: StageSpec = field(default_factory=lambda: stage_spec("joint"))
    constraint: MaxNorm | None = None
    parent: dict[str, Any] | None = None

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
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "criterion": self.criterion.state_dict(),
        }
        if self.constraint is not None:
            state["constraint"] = self.constraint.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.criterion.load_state_dict(state["criterion"])
        if self.constraint is not None:
            self.constraint.load_state_dict(state["constraint"])


def build_run(
    config: TrainConfig,
    data: PreparedData | None = None,
    device: torch.device | None = None,
    *,
    load_parent: bool = True,
) -> Run:
    """Data, model, loss, optimiser and hooks of ``config``, on ``device`` (default: ``config.device``).

    Under ``torch.distributed`` (initialised by the caller) the network is wrapped in DDP. The
    model's initialisation is seeded by ``config.seed``; with ``init_from`` the parent run's weights
    are loaded (unless ``load_parent`` is False: a resumed run loads its own checkpoint instead) and
    the stage freezes what it does not train.
    """
    device = device if device is not None else resolve_device(config.device)
    world = distributed()[1]
    check_batch_per_process(config.batch_size, world)
    # Data prepared elsewhere (on the CPU, say, and reused across runs) moves to the run's device: the epoch's
    # generator, order and batches all live there.
    data = prepare_data(config, device) if data is None else data.to(device)
    if len(data.train) < 2 * world:  # no batch of 2 per process: every epoch would train zero steps
        raise ValueError(
            f"the training split must hold at least 2 x the world size = {2 * world} images (one batch of 2 per "
            f"process); got {len(data.train)}"
        )
    spec, stage = loss_spec(config.loss), stage_spec(config.stage)
    torch.manual_seed(config.seed)
    model = build_network(config, data.num_classes, data.in_channels)
    parent = None
    if config.init_from is not None and load_parent:
        state, parent = read_parent(config, device)
        load_parent_weights(model, state, stage)
    trainable = prepare_stage(model, stage, data.num_classes)
    # Channels-last activations select the faster convolution kernels (oneDNN on CPU, cuDNN on GPU):
    # about 1.5x the throughput of the small CNN here (docs/benchmarks/ops.md).
    trainable.to(device, memory_format=torch.channels_last)
    constraint = MaxNorm(model.fc.weight, config.max_norm).to(device) if config.max_norm is not None else None
    criterion = spec.build_loss(config, data.counts).to(device)
    optimizer = torch.optim.SGD(
        parameter_groups(model, config), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
    )
    eager: nn.Module = trainable
    if distributed()[1] > 1:
        eager = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None
        )
    # torch.compile traces one graph: the full training batch in train mode. The last, shorter batch of an epoch
    # and the evaluation passes (another batch size, eval mode, no grad) run eagerly: each would otherwise cost a
    # recompile of about 20 s on this CPU (measured: 3 graphs, 45 s, for a run whose epochs take 0.3 s).
    network = torch.compile(eager) if config.compile else eager
    pad = config.pad if config.pad is not None else (4 if data.train.images.shape[-1] >= 32 else 2)
    hooks = [spec.on_epoch_start] if spec.on_epoch_start is not None else []
    if config.drw_epoch is not None:
        hooks.append(DeferredReweighting(data.counts, config.drw_epoch, beta=config.drw_beta).apply)
    return Run(config, device, data, spec, model, network, criterion, optimizer, pad, hooks, eager, stage, constraint,
               parent)


# --- one epoch -----------------------------------------------------------------------------------


def _epoch_generator(config: TrainConfig, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch)


def train_one_epoch(run: Run, epoch: int, progress: Any = None) -> float:
    """Trains ``run`` for epoch ``epoch`` (0-based; its hooks first) and returns the mean training loss.

    The mean is over every sample of the epoch: under ``torch.distributed`` the loss sums and sample
    counts of all processes are summed first, so every process returns the same number. NaN or inf
    when training diverged (one host sync per epoch, on the accumulated sum).
    """
    config, device, data = run.config, run.device, run.data.train
    for hook in run.epoch_hooks:
        hook(run.criterion, epoch)
    run.network.train()
    generator = _epoch_generator(config, epoch, device)
    n = len(data)
    steps = max(1, n // config.batch_size)
    total = torch.zeros((), device=device)
    seen = 0
    # The epoch's sample and its order, the same on every process; each process trains on its shard of every batch.
    order = epoch_order(config.sampler, data.labels, run.data.counts, epoch, config.epochs, generator)
    for step, (indices, full) in enumerate(shard_batches(order, config.batch_size, *distributed())):
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch + step / steps)
        images = data.images[indices]
        if config.augment:
            images = augment_batch(images, run.pad, flip=True, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.autocast):
            logits = (run.network if full else run.eager)(images)
        # The loss checks its labels and weights on the epoch's first batch (after the epoch's weight updates) and
        # not on the others: each check is a host sync, which on CUDA stalls the queue of kernels every step.
        with value_checks(step == 0):
            loss = run.criterion(logits.float(), data.labels[indices])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.constraint is not None:
            run.constraint.project_(run.model.fc.weight)
        total += loss.detach() * len(indices)
        seen += len(indices)
        if progress is not None:
            progress.update(1)
    if distributed()[1] > 1:
        # The epoch's loss over every process's shard, not rank 0's alone; float64 keeps the sums exact enough.
        sums = torch.stack([total.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
        torch.distributed.all_reduce(sums)
        return float(sums[0]) / max(float(sums[1]), 1.0)
    return float(total) / max(seen, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DeviceSplit, num_classes: int, config: TrainConfig, *, confidence: bool = False
) -> ConfusionMeter:
    """Confusion counts of the model on ``data`` (each process a shard, then summed over processes); with
    ``confidence``, also each class's summed true-class probability (for a loss that weights by it)."""
    model.eval()
    rank, world = distributed()
    meter = ConfusionMeter(num_classes, confidence=confidence).to(data.labels.device)
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


def shot_thresholds(config: TrainConfig, counts: torch.Tensor) -> dict[str, float]:
    """The many/few thresholds of a run: the configuration's, or 0.2 / 0.04 x the head class's training count."""
    if config.many_threshold is not None:
        return dict(many_threshold=config.many_threshold, few_threshold=config.few_threshold)
    many, few = relative_shot_thresholds(counts)
    return dict(many_threshold=many, few_threshold=few)


def validate(run: Run) -> dict[str, Any]:
    """Validation metrics of ``run`` (every loss reports them, so hyperparameters can be chosen without the
    test set), then the loss's ``after_validation`` hook; ``{}`` without a validation split."""
    if run.data.val is None:
        return {}
    # Only the losses that read it (stable CDB with difficulty="confidence") pay for the true-class probabilities.
    needs_confidence = getattr(run.criterion, "difficulty", None) == "confidence"
    meter = evaluate(run.eager, run.data.val, run.num_classes, run.config, confidence=needs_confidence)
    entry: dict[str, Any] = {"val": _summary(meter.report(**shot_thresholds(run.config, run.data.counts)))}
    if run.spec.after_validation is not None:
        entry.update(run.spec.after_validation(run.criterion, meter))
    return entry


def test_report(run: Run) -> dict[str, Any]:
    """The full report of ``run`` on the (balanced) test set, shot groups by the training counts; with a
    post-hoc adjustment, the adjusted model's (``posthoc`` says which tau validation chose)."""
    meter = evaluate(run.eager, run.data.test, run.num_classes, run.config)
    report = meter.report(train_counts=run.data.counts, **shot_thresholds(run.config, run.data.counts))
    return report if run.config.posthoc == "none" else _posthoc_report(run, report)


def _posthoc_report(run: Run, unadjusted: dict[str, Any]) -> dict[str, Any]:
    """Chooses the post-hoc tau on the validation split (highest balanced accuracy, the earliest on ties), then
    reports the adjusted model on the test set."""
    config, method = run.config, run.config.posthoc
    assert run.data.val is not None  # the configuration requires val_per_class >= 1
    grid = POSTHOC[method].grid
    scores = []
    for tau in grid:
        meter = evaluate(adjusted_model(run.model, method, run.data.counts, tau), run.data.val, run.num_classes, config)
        scores.append(nan_to_none(meter.report(**shot_thresholds(config, run.data.counts))["balanced_accuracy"]))
    best = max(range(len(grid)), key=lambda i: (-math.inf if scores[i] is None else scores[i], -i))
    model = adjusted_model(run.model, method, run.data.counts, grid[best])
    report = evaluate(model, run.data.test, run.num_classes, config).report(
        train_counts=run.data.counts, **shot_thresholds(config, run.data.counts))
    report["posthoc"] = {
        "method": method,
        "tau": grid[best],
        "grid": list(grid),
        "val_balanced_accuracy": scores,
        "unadjusted": _summary(unadjusted),
    }
    return report


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


def _check_world_size(saved: Any, world: int) -> None:
    """A resumed run continues with the world size that wrote its checkpoint: the data shards of every
    batch, the gradient average and BatchNorm's statistics depend on it."""
    if saved is not None and saved != world:
        raise ValueError(
            f"cannot resume: the world size must be {saved}, the checkpoint's (the data shards and the gradient "
            f"average depend on it); got {world}: resume with torchrun --nproc-per-node {saved}"
            + (" on one machine" if saved > 1 else " or without torchrun") + ", or pass --overwrite to start over"
        )


def _progress_bar(total: int, verbose: int, description: str) -> Any:
    # Only on a terminal: in a log file tqdm's \r frames pile up (138 KB for the demo's log); the epoch lines say it all.
    if verbose < 2 or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, file=sys.stderr)


def _log(verbose: int, message: str) -> None:
    if verbose >= 1 and distributed()[0] == 0:
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
    synchronize(device)
    t0 = time.perf_counter()
    out = fn(*args)
    synchronize(device)
    return out, time.perf_counter() - t0


def _run_epoch(run: Run, epoch: int, progress: Progress, verbose: int) -> dict[str, Any]:
    """One epoch of :func:`train`: train, validate, test on schedule; returns the test report (or ``{}``)."""
    config = run.config
    rank = distributed()[0]
    bar = _progress_bar(max(1, len(run.data.train) // config.batch_size), verbose if rank == 0 else 0,
                        f"epoch {epoch + 1}/{config.epochs}")
    train_loss, seconds = _timed(run.device, train_one_epoch, run, epoch, bar)
    progress.train_seconds += seconds
    if bar is not None:
        bar.close()
    if not math.isfinite(train_loss):  # diverged: stop before evaluating a NaN model (JSON has no NaN: null)
        progress.history.append({"epoch": epoch + 1, "lr": learning_rate(config, epoch + 1), "train_loss": None})
        _log(verbose, _epoch_line(epoch, config, train_loss, None))
        raise TrainingDiverged(epoch + 1, train_loss)

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"epoch": epoch + 1, "lr": learning_rate(config, epoch + 1), "train_loss": train_loss}
    entry.update(validate(run))
    report: dict[str, Any] = {}
    if epoch + 1 == config.epochs or (config.eval_every is not None and (epoch + 1) % config.eval_every == 0):
        report = test_report(run)
        entry["test"] = _summary(report)
    synchronize(run.device)
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
        "world_size": distributed()[1],
        "parent": run.parent,
        "data": run.data.description(),
        "train_counts": run.data.counts.tolist(),
        "posthoc": report.get("posthoc"),  # the tau validation chose: load_model applies it
    })
    write_json(out / RESULT, result_dict(run, progress, report, complete=progress.next_epoch == run.config.epochs))
    write_text(out / HISTORY, history_csv(progress.history))


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int = 1,
    data: PreparedData | None = None,
) -> dict[str, Any]:
    """Trains ``config`` and returns the result written to ``out_dir/result.json``.

    Args:
        config: the run.
        out_dir: folder for ``checkpoint.pt`` and ``result.json`` (created), locked for the whole run
            (``.lock``; a second run on it raises :class:`RunFolderError`).
        resume: continue from ``out_dir/checkpoint.pt`` if there is one (the configuration and the
            world size must match); a finished run is returned as it is, after its ``result.json`` is
            rebuilt from the checkpoint if it is missing, damaged or behind the checkpoint. A diverged
            run is refused.
        overwrite: replace the run that ``out_dir`` holds (its checkpoint and result are removed first).
            Without ``resume`` or ``overwrite``, a folder that holds a run is refused.
        verbose: 0 silent, 1 one line per epoch (logs), 2 progress bars too.
        data: prepared data to reuse across runs (the benchmark matrix); loaded from ``config`` otherwise.

    Raises:
        RunFolderError: the folder is in use, holds a run (without resume / overwrite) or a diverged one.
        TrainingDiverged: an epoch's training loss was NaN or inf (``result.json`` says ``"diverged"``).
        ValueError: a bad argument, a checkpoint that cannot be resumed (damaged, other configuration or
            world size), or a device this machine lacks; checked before any training.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite must not both be set (resume continues the run in out_dir, overwrite "
                         "replaces it); got resume=True, overwrite=True")
    out = check_output_folder(out_dir, "out_dir")
    if config.tensorboard:
        tensorboard_writer(None)  # only the check that TensorBoard is installed, before any work
    device = resolve_device(config.device)
    started_group = init_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        rank, world = distributed()
        check_batch_per_process(config.batch_size, world)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        with folder_lock(out) if rank == 0 else nullcontext():
            result = _train_locked(config, out, device, resume=resume, overwrite=overwrite, verbose=verbose, data=data)
        if started_group:
            # Every rank finishes before any tears its group down: without this barrier 1 of 6 two-process gloo runs
            # here aborted at exit ("terminate called without an active exception", SIGABRT in one rank).
            torch.distributed.barrier()
        return result
    finally:
        if started_group:
            torch.distributed.destroy_process_group()


def _train_locked(
    config: TrainConfig, out: Path, device: torch.device, *, resume: bool, overwrite: bool, verbose: int,
    data: PreparedData | None,
) -> dict[str, Any]:
    """:func:`train` once the folder is checked and locked (by rank 0)."""
    rank, world = distributed()
    if rank == 0:
        for name in (CHECKPOINT, RESULT, HISTORY, CONFIG):  # temporaries of writes that a SIGKILL interrupted
            clean_stale_temporaries(out, name)
    if overwrite:
        if rank == 0:
            for name in (CHECKPOINT, RESULT, HISTORY, CONFIG):
                (out / name).unlink(missing_ok=True)
    elif not resume:
        status = existing_run(out)
        if status == "diverged":
            raise RunFolderError(f"{out} holds a run (status diverged); pass --overwrite to replace it (a diverged run "
                                 "cannot be resumed)")
        if status is not None:
            raise RunFolderError(f"{out} holds a run (status {status}); pass --resume to continue it, or --overwrite "
                                 "to replace it")

    progress = Progress()
    checkpoint = None
    saved: dict[str, Any] | None = None
    if resume:
        saved, why = read_result(out / RESULT)
        if saved is not None and saved.get("status") == "diverged":
            where = saved.get("diverged") if isinstance(saved.get("diverged"), dict) else {}
            at = f" at epoch {where.get('epoch')} (loss {where.get('train_loss')})" if where else ""
            raise RunFolderError(f"{out} holds a run that diverged{at}; it cannot be resumed: pass --overwrite to "
                                 "start it over (with a lower --lr)")
        if (out / CHECKPOINT).exists():
            try:
                checkpoint = load_checkpoint(out / CHECKPOINT, map_location=device)
            except ValueError as exc:
                raise ValueError(f"cannot resume: {exc}; pass --overwrite to start the run over") from None
            _check_resumable(checkpoint["config"], config)
            finished = checkpoint["epoch"] + 1 >= config.epochs
            problem = result_problem(saved, why, checkpoint) if finished else None
            if finished and problem is None:
                _log(verbose, f"{out}: already complete")
                return saved  # type: ignore[return-value]
            _check_world_size(checkpoint.get("world_size", (saved or {}).get("world_size")), world)
            if finished:
                _log(verbose, f"{out}: result.json {problem}: rebuilding it from the checkpoint")
        else:
            _log(verbose, f"{out}: no checkpoint to resume; starting at epoch 1")

    run = build_run(config, data, device, load_parent=checkpoint is None)
    if rank == 0:  # the resolved configuration beside the run, in the form --config reads
        write_text(out / CONFIG, config.to_toml())
    if checkpoint is not None:
        run.load_state_dict(checkpoint)
        run.parent = checkpoint.get("parent")
        progress.resume_from(checkpoint)
        if progress.next_epoch < config.epochs:
            _log(verbose, f"resuming {out} at epoch {progress.next_epoch + 1}/{config.epochs}")

    report: dict[str, Any] = {}
    board = tensorboard_writer(out) if config.tensorboard and rank == 0 else None
    try:
        for epoch in range(progress.next_epoch, config.epochs):
            try:
                report = _run_epoch(run, epoch, progress, verbose)
            except TrainingDiverged as exc:
                exc.result = result_dict(run, progress, {}, complete=False, diverged=exc)
                if rank == 0:
                    write_json(out / RESULT, exc.result)
                    write_text(out / HISTORY, history_csv(progress.history))
                raise
            if rank == 0:
                _save(run, progress, out, report)
                if board is not None:
                    for tag, value in history_scalars(progress.history[-1]).items():
                        board.add_scalar(tag, value, epoch + 1)
    finally:
        if board is not None:
            board.close()
    if not report:
        # A finished checkpoint whose result.json was missing, damaged or behind it: the test report needs the
        # model, which the checkpoint holds.
        report = test_report(run)
        result = result_dict(run, progress, report, complete=True)
        if rank == 0:
            if checkpoint is None:  # epochs = 0: the parent's model, evaluated (or post-hoc adjusted), is this run's
                _save(run, progress, out, report)
            else:
                write_json(out / RESULT, result)
        return result
    return result_dict(run, progress, report, complete=True)


def result_dict(
    run: Run, progress: Progress, report: dict[str, Any], *, complete: bool, diverged: TrainingDiverged | None = None
) -> dict[str, Any]:
    """The content of ``result.json``: status ``complete``, ``running`` or (``diverged`` given) ``diverged``."""
    result = {
        "status": "diverged" if diverged is not None else "complete" if complete else "running",
        "longtail_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(run.device),
        "hardware": hardware(run.device),
        "autocast": "bfloat16" if run.autocast else "off",
        "world_size": distributed()[1],
        "config": run.config.to_dict(),
        "parent": run.parent,
        "classes": list(run.data.classes),
        "normalization": {"mean": list(run.data.mean), "std": list(run.data.std)},
        "train_counts": run.data.counts.tolist(),
        "val_counts": run.data.val_counts.tolist(),
        "history": progress.history,
        "final": report,
        "train_seconds": progress.train_seconds,
        "eval_seconds": progress.eval_seconds,
        "wall_seconds": progress.wall_seconds(),
    }
    if diverged is not None:  # JSON has no NaN: the loss as text ("nan", "inf")
        result["diverged"] = {"epoch": diverged.epoch, "train_loss": f"{diverged.loss:g}"}
        result["message"] = str(diverged)
    return result


__all__ = [
    "CHECKPOINT",
    "RESULT",
    "Progress",
    "Run",
    "RunFolderError",
    "TrainingDiverged",
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
    "shot_thresholds",
    "test_report",
    "train",
    "train_one_epoch",
]
