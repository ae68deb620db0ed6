"""The training loop: compact, deterministic under a seed, resumable, and DDP-aware.

Three layers, each usable on its own:

- :func:`build_run` turns a configuration into a :class:`Run` (data on the device, model, loss,
  optimiser, the loss's hooks, and every value derived from the configuration, resolved once); a
  user's own loop or the trainer benchmark starts from the same setup;
- :func:`train_one_epoch` runs one epoch of a run (:func:`validate` and :func:`final_report` evaluate it);
- :func:`train` runs a whole configuration, in the order it reads: setup (device, process group, the
  folder's lock), the folder's state (new, overwritten or resumed), data / model / loss / optimiser, the
  epochs (train, validate, test on schedule, save), the end. It writes ``checkpoint.pt`` and
  ``result.json`` atomically after every epoch, so a killed run resumes with ``resume=True`` and ends
  with the same metrics as an uninterrupted one; a NaN or infinite training loss stops the run
  (:class:`TrainingDiverged`, ``"status": "diverged"``).

Where the rest is: the run folder (its files, lock and states, the contents of the checkpoint and of
``result.json``, the resume checks) in :mod:`longtail.train.run_folder`; evaluation (confusion counts,
the validation pass, the test-set report, the post-hoc tau search, the shot thresholds) in
:mod:`longtail.train.evaluation`; the :class:`Progress` record, progress bars and epoch lines in
:mod:`longtail.train.progress`.

Every epoch's randomness (data order, augmentation) comes from a generator seeded by
``(seed, epoch)``, which is what makes resuming exact. The trainer knows no loss by name: it asks
the loss's :class:`longtail.train.LossSpec`.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bias_init import init_prior_bias
from ..checks import check_batch_per_process, check_output_folder, value_checks
from ..data.samplers import epoch_seed
from ..drw import DeferredReweighting
from ..models import build_configured_model
from ..models.backbones import adopt_model
from .config import TrainConfig, naming_model
from .data import PreparedData, augment_batch, prepare_data
from .device import autocast_enabled, cpu_has_native_bfloat16, distributed, init_distributed, resolve_device
from .device import synchronize
from .evaluation import evaluate, final_report, shot_thresholds, summary, validate
from .losses import EpochHook, LossSpec, loss_spec
from .progress import Progress, epoch_line, log, progress_bar, timed
from .run_folder import CHECKPOINT, RESULT, RunFolderError, TrainingDiverged, folder_lock, history_scalars
from .run_folder import prepare_folder, result_dict, resume_point, save, save_config, save_result, tensorboard_writer
from .samplers import epoch_order, shard_batches
from .schedule import learning_rate
from .stages import MaxNorm, StageSpec, load_parent_weights, prepare_stage, read_parent, stage_spec


# --- building a run ------------------------------------------------------------------------------


def build_network(config: TrainConfig, num_classes: int, in_channels: int, spec: LossSpec | None = None, *,
                  model: nn.Module | None = None) -> nn.Module:
    """The model of ``config`` (the fields its :class:`longtail.models.ModelSpec` reads), or ``model``, a module of
    yours (:func:`longtail.models.backbones.adopt_model`), with the head and bias initialisation its loss asks for
    (``spec``: the loss's, default ``config.loss``'s)."""
    spec = spec or loss_spec(config.loss)
    if model is None:
        model = build_configured_model(config, num_classes, in_channels, use_norm=spec.head == "cosine")
    else:
        model = adopt_model(model, num_classes, use_norm=spec.head == "cosine",
                            frozen_stage=config.stage if stage_spec(config.stage).frozen_backbone else None)
    if spec.prior_bias:
        init_prior_bias(model.fc)
    return model


def parameter_groups(model: nn.Module, config: TrainConfig, spec: LossSpec | None = None) -> list[dict[str, Any]]:
    """The trainable parameters (those a frozen stage left ``requires_grad``), with weight decay on every one
    except a prior-initialised classifier bias (``spec``: the loss's, default ``config.loss``'s)."""
    exempt: set[int] = set()
    bias = getattr(model.fc, "bias", None)
    if (spec or loss_spec(config.loss)).prior_bias and bias is not None:
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

    What the run derives from its configuration is resolved once, in :func:`build_run`: ``spec`` (the
    loss's :class:`LossSpec`), ``shot_thresholds`` (the many/few thresholds of every report),
    ``needs_confidence`` (whether validation sums the true-class probabilities, the spec's answer),
    and this process's ``rank`` and the ``world_size`` under ``torch.distributed`` (0 and 1 without).
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
    shot_thresholds: dict[str, float]
    needs_confidence: bool
    rank: int
    world_size: int
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


def rank_and_world(config: TrainConfig) -> tuple[int, int]:
    """This process's rank and the world size (0 and 1 without ``torch.distributed``), checked against the
    batch: each process needs 2 samples of it (BatchNorm)."""
    rank, world = distributed()
    check_batch_per_process(config.batch_size, world)
    return rank, world


def build_run(
    config: TrainConfig,
    data: PreparedData | None = None,
    device: torch.device | None = None,
    *,
    load_parent: bool = True,
    rank_and_world_size: tuple[int, int] | None = None,
    model: nn.Module | None = None,
) -> Run:
    """Data, model, loss, optimiser and hooks of ``config``, on ``device`` (default: ``config.device``).

    Under ``torch.distributed`` (initialised by the caller) the network is wrapped in DDP. The
    model's initialisation is seeded by ``config.seed``; with ``init_from`` the parent run's weights
    are loaded (unless ``load_parent`` is False: a resumed run loads its own checkpoint instead) and
    the stage freezes what it does not train. ``rank_and_world_size``: as :func:`rank_and_world` gave it
    (:func:`train` passes its own); by default read here. ``model``: a module of yours instead of
    ``config.model``'s (:func:`build_network`; ``config.model`` becomes ``"custom:<its class>"``).
    """
    config = naming_model(config, model)
    device = device if device is not None else resolve_device(config.device)
    rank, world = rank_and_world_size if rank_and_world_size is not None else rank_and_world(config)
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
    model = build_network(config, data.num_classes, data.in_channels, spec, model=model)
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
        parameter_groups(model, config, spec), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
    )
    eager: nn.Module = trainable
    if world > 1:
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
    return Run(config, device, data, spec, model, network, criterion, optimizer, pad,
               shot_thresholds=shot_thresholds(config, data.counts),
               needs_confidence=spec.needs_confidence is not None and spec.needs_confidence(config),
               rank=rank, world_size=world, epoch_hooks=hooks, eager=eager, stage=stage, constraint=constraint,
               parent=parent)


# --- one epoch -----------------------------------------------------------------------------------


def _epoch_generator(config: TrainConfig, epoch: int, device: torch.device) -> torch.Generator:
    # The public samplers' seed (longtail.data.ClassAwareSampler draws the same epochs on the CPU).
    return torch.Generator(device=device).manual_seed(epoch_seed(config.seed, epoch))


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
    for step, (indices, full) in enumerate(shard_batches(order, config.batch_size, run.rank, run.world_size)):
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
    if run.world_size > 1:
        # The epoch's loss over every process's shard, not rank 0's alone; float64 keeps the sums exact enough.
        sums = torch.stack([total.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
        torch.distributed.all_reduce(sums)
        return float(sums[0]) / max(float(sums[1]), 1.0)
    return float(total) / max(seen, 1)


# --- the whole run -------------------------------------------------------------------------------


def _run_epoch(run: Run, epoch: int, progress: Progress, verbose: int) -> dict[str, Any]:
    """One epoch of :func:`train`: train, validate, test on schedule; returns the test report (or ``{}``)."""
    config = run.config
    steps = max(1, len(run.data.train) // config.batch_size)
    bar = progress_bar(steps, verbose, f"epoch {epoch + 1}/{config.epochs}")
    train_loss, seconds = timed(run.device, train_one_epoch, run, epoch, bar)  # the module's: tests replace it
    progress.train_seconds += seconds
    if bar is not None:
        bar.close()
    if not math.isfinite(train_loss):  # diverged: stop before evaluating a NaN model (JSON has no NaN: null)
        progress.history.append({"epoch": epoch + 1, "lr": learning_rate(config, epoch + 1), "train_loss": None})
        log(verbose, epoch_line(epoch, config.epochs, train_loss, None))
        raise TrainingDiverged(epoch + 1, train_loss)

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"epoch": epoch + 1, "lr": learning_rate(config, epoch + 1), "train_loss": train_loss}
    entry.update(validate(run))
    report: dict[str, Any] = {}
    if epoch + 1 == config.epochs or (config.eval_every is not None and (epoch + 1) % config.eval_every == 0):
        report = final_report(run)
        entry["test"] = summary(report)
    synchronize(run.device)
    progress.eval_seconds += time.perf_counter() - t0
    progress.history.append(entry)
    progress.next_epoch = epoch + 1
    log(verbose, epoch_line(epoch, config.epochs, train_loss, entry.get("test")))
    return report


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int = 1,
    data: PreparedData | None = None,
    model: nn.Module | None = None,
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
        model: a module of yours to train instead of ``config.model``'s (see :func:`build_run`); the run records
            ``model = "custom:<its class>"``, and resuming it needs the same module again.

    Raises:
        RunFolderError: the folder is in use, holds a run (without resume / overwrite) or a diverged one.
        TrainingDiverged: an epoch's training loss was NaN or inf (``result.json`` says ``"diverged"``).
        ValueError: a bad argument, a checkpoint that cannot be resumed (damaged, other configuration or
            world size), or a device this machine lacks; checked before any training.
    """
    # Setup: the arguments, the device, the process group; then the folder is locked for the whole run.
    if resume and overwrite:
        raise ValueError("resume and overwrite must not both be set (resume continues the run in out_dir, overwrite "
                         "replaces it); got resume=True, overwrite=True")
    out = check_output_folder(out_dir, "out_dir")
    config = naming_model(config, model)
    if config.tensorboard:
        tensorboard_writer(None)  # only the check that TensorBoard is installed, before any work
    device = resolve_device(config.device)
    started_group = init_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        rank, world = rank_and_world(config)
        verbose = verbose if rank == 0 else 0  # one process prints
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        with folder_lock(out) if rank == 0 else nullcontext():
            result = _train_in(out, config, device, rank, world, resume=resume, overwrite=overwrite, verbose=verbose,
                               data=data, model=model)
        if started_group:
            # Every rank finishes before any tears its group down: without this barrier 1 of 6 two-process gloo runs
            # here aborted at exit ("terminate called without an active exception", SIGABRT in one rank).
            torch.distributed.barrier()
        return result
    finally:
        if started_group:
            torch.distributed.destroy_process_group()


def _train_in(
    out: Path, config: TrainConfig, device: torch.device, rank: int, world: int, *, resume: bool, overwrite: bool,
    verbose: int, data: PreparedData | None, model: nn.Module | None = None,
) -> dict[str, Any]:
    """:func:`train` in its checked and locked folder ``out`` (locked by rank 0)."""
    progress = Progress()
    # The folder's state: a new run, an overwrite, or a resume (from a checkpoint, or a finished result as it is).
    prepare_folder(out, rank, resume=resume, overwrite=overwrite)
    checkpoint, finished = resume_point(out, config, device, world, verbose) if resume else (None, None)
    if finished is not None:
        return finished

    # Data, model, loss, optimiser (and the run's own checkpoint when resumed).
    run = build_run(config, data, device, load_parent=checkpoint is None, rank_and_world_size=(rank, world),
                    model=model)
    if rank == 0:
        save_config(out, config)
    if checkpoint is not None:
        run.load_state_dict(checkpoint)
        run.parent = checkpoint.get("parent")
        progress.resume_from(checkpoint)
        if progress.next_epoch < config.epochs:
            log(verbose, f"resuming {out} at epoch {progress.next_epoch + 1}/{config.epochs}")

    # The epochs: train, validate, test on schedule; rank 0 saves after each.
    report: dict[str, Any] = {}
    board = tensorboard_writer(out) if config.tensorboard and rank == 0 else None
    try:
        for epoch in range(progress.next_epoch, config.epochs):
            try:
                report = _run_epoch(run, epoch, progress, verbose)
            except TrainingDiverged as exc:
                exc.result = result_dict(run, progress, {}, complete=False, diverged=exc)
                if rank == 0:
                    save_result(out, exc.result, history=True)
                raise
            if rank == 0:
                save(out, run, progress, report)
                if board is not None:
                    for tag, value in history_scalars(progress.history[-1]).items():
                        board.add_scalar(tag, value, epoch + 1)
    finally:
        if board is not None:
            board.close()

    # The end: the last epoch's report, or (no epoch trained here) one made now.
    if report:
        return result_dict(run, progress, report, complete=True)
    # A finished checkpoint whose result.json was missing, damaged or behind it: the test report needs the model,
    # which the checkpoint holds.
    report = final_report(run)
    result = result_dict(run, progress, report, complete=True)
    if rank == 0:
        if checkpoint is None:  # epochs = 0: the parent's model, evaluated (or post-hoc adjusted), is this run's
            save(out, run, progress, report)
        else:
            save_result(out, result)
    return result


__all__ = [
    "CHECKPOINT", "RESULT", "Progress", "Run", "RunFolderError", "TrainingDiverged", "autocast_enabled",
    "build_network", "build_run", "cpu_has_native_bfloat16", "evaluate", "final_report", "init_distributed",
    "learning_rate", "parameter_groups", "rank_and_world", "resolve_device", "result_dict", "shot_thresholds",
    "train", "train_one_epoch", "validate",
]
