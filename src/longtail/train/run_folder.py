"""The one owner of a run folder: what it holds (``checkpoint.pt``, ``result.json``, the per-epoch log
``history.csv`` and the resolved configuration ``config.toml``), its lock, and its states.

A run holds an exclusive lock on ``<out>/.lock`` (``fcntl.flock``, POSIX only; under DDP rank 0 holds it)
for its whole duration, so two runs never write the same folder; the file keeps the PID of its last
holder and is left in place (deleting lock files reopens the race). :func:`existing_run` says what a
folder holds, :func:`read_result` reads ``result.json`` without ever raising, and
:func:`result_problem` says why a finished checkpoint's ``result.json`` must be rebuilt.

The lifecycle of :func:`longtail.train.train` in a folder: :func:`prepare_folder` refuses a folder that
holds a run (without resume or overwrite) and clears what an overwrite replaces; :func:`resume_point`
reads what a resumed run continues from (its checkpoint, after :func:`check_resumable` and
:func:`check_world_size`) or the finished result it returns as it is; :func:`save` writes the checkpoint
(:data:`TRAINER_CHECKPOINT_KEYS` and more), ``result.json`` (:func:`result_dict`: status ``running``,
``complete`` or ``diverged``) and ``history.csv`` after every epoch. The two ways a run stops that the
command line prints as one line are here too: :class:`RunFolderError` (the folder cannot take the run)
and :class:`TrainingDiverged` (the ``diverged`` state: a NaN or infinite training loss).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..io import (
    TRAINER_CHECKPOINT_KEYS,
    clean_stale_temporaries,
    load_checkpoint,
    save_checkpoint,
    write_json,
    write_text,
)
from .device import hardware
from .progress import Progress, log

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX (Windows): runs are not locked
    fcntl = None  # type: ignore[assignment]

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
HISTORY = "history.csv"
CONFIG = "config.toml"
TENSORBOARD = "tensorboard"
LOCK = ".lock"

# The columns of history.csv: one row per epoch, empty where an epoch has no such value (no validation split, or
# the test set not evaluated that epoch).
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", *(f"{split}_{metric}" for split in ("val", "test")
                                                  for metric in ("accuracy", "balanced_accuracy", "macro_f1")))


def history_scalars(entry: dict[str, Any]) -> dict[str, float]:
    """One epoch's numbers by TensorBoard tag (``train/loss``, ``val/balanced_accuracy``, ...)."""
    scalars = {"train/loss": entry.get("train_loss"), "train/lr": entry.get("lr")}
    for split in ("val", "test"):
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            scalars[f"{split}/{metric}"] = (entry.get(split) or {}).get(metric)
    return {tag: float(value) for tag, value in scalars.items() if value is not None}


def tensorboard_writer(out: Path | None) -> Any:
    """A ``SummaryWriter`` on ``out/tensorboard`` (``out=None``: only check that TensorBoard is installed); a
    ``ValueError`` naming the extra when it is not."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard must be installed for tensorboard=True (pip install 'longtail[tensorboard]'); "
                         "got no tensorboard package") from None
    return None if out is None else SummaryWriter(str(out / TENSORBOARD))


def history_csv(history: list[dict[str, Any]]) -> str:
    """``history.csv``'s text: the per-epoch history of ``result.json`` as a table (spreadsheets, pandas)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for entry in history:
        row = {key: entry.get(key) for key in ("epoch", "lr", "train_loss")}
        for split in ("val", "test"):
            for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
                row[f"{split}_{metric}"] = (entry.get(split) or {}).get(metric)
        writer.writerow(["" if row[c] is None else row[c] for c in HISTORY_COLUMNS])
    return buffer.getvalue()


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


class RunFolderError(RuntimeError):
    """The output folder cannot take this run: another run holds it, or it holds a run that would be
    replaced or cannot be resumed. The command line prints it as one line (exit status 2)."""

    exit_status = 2


def read_result(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``result.json`` as a dict, or ``None`` and why not (never raises for a bad file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"is unreadable ({type(exc).__name__})"
    try:
        data = json.loads(text)
    except ValueError:
        return None, "is not valid JSON (truncated?)"
    if not isinstance(data, dict):
        return None, f"is not a JSON object (a {type(data).__name__})"
    return data, f"has status {data.get('status')!r}"


def existing_run(out: Path) -> str | None:
    """The status of the run that ``out`` holds (``complete``, ``running``, ``diverged`` ...), or None."""
    result, why = read_result(out / RESULT)
    if result is not None:
        return str(result.get("status", "unknown"))
    if (out / RESULT).exists():
        return f"unknown: result.json {why}"
    if (out / CHECKPOINT).exists():
        return "unknown: a checkpoint without result.json"
    return None


def result_problem(result: dict[str, Any] | None, why: str, checkpoint: dict[str, Any]) -> str | None:
    """Why ``result.json`` does not match a finished checkpoint, or None when the two are a consistent pair."""
    if result is None:
        return why
    if result.get("status") != "complete":
        return why
    history = result.get("history")
    if not isinstance(history, list) or len(history) != len(checkpoint["history"]):
        epochs = len(history) if isinstance(history, list) else 0
        return f"holds {epochs} of the checkpoint's {len(checkpoint['history'])} epochs"
    if not isinstance(result.get("final"), dict) or not result["final"]:
        return "has no final test report"
    return None


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``out/.lock`` (which records the holder's PID) for the ``with`` block.

    Raises :class:`RunFolderError` at once when another process holds it. Without ``fcntl`` (not POSIX)
    nothing is locked.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = path.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise RunFolderError(
                f"{out} is in use by another run (PID {holder} holds {path}); wait for it to end or choose another "
                "--out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


# --- the lifecycle of a run in its folder -------------------------------------------------------------


def prepare_folder(out: Path, rank: int, *, resume: bool, overwrite: bool) -> None:
    """Readies the locked folder ``out`` for a run: removes the temporaries of writes a SIGKILL interrupted and,
    with ``overwrite``, the run it holds (rank 0 does both); without ``resume`` or ``overwrite``, refuses a folder
    that holds a run (:class:`RunFolderError`)."""
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


def resume_point(
    out: Path, config: Any, device: torch.device, world_size: int, verbose: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What a resumed run in ``out`` continues from: ``(checkpoint, None)``, ``(None, None)`` (no checkpoint:
    start at epoch 1), or ``(None, result)`` for a finished run whose ``result.json`` is consistent with its
    checkpoint (returned as it is). A finished checkpoint with a missing, damaged or shorter ``result.json`` comes
    back as a checkpoint, for its result to be rebuilt.

    Raises:
        RunFolderError: the run diverged.
        ValueError: a damaged checkpoint, another configuration or another world size.
    """
    saved, why = read_result(out / RESULT)
    if saved is not None and saved.get("status") == "diverged":
        where = saved.get("diverged") if isinstance(saved.get("diverged"), dict) else {}
        at = f" at epoch {where.get('epoch')} (loss {where.get('train_loss')})" if where else ""
        raise RunFolderError(f"{out} holds a run that diverged{at}; it cannot be resumed: pass --overwrite to "
                             "start it over (with a lower --lr)")
    if not (out / CHECKPOINT).exists():
        log(verbose, f"{out}: no checkpoint to resume; starting at epoch 1")
        return None, None
    try:
        checkpoint = load_checkpoint(out / CHECKPOINT, map_location=device)
    except ValueError as exc:
        raise ValueError(f"cannot resume: {exc}; pass --overwrite to start the run over") from None
    check_resumable(checkpoint["config"], config)
    finished = checkpoint["epoch"] + 1 >= config.epochs
    problem = result_problem(saved, why, checkpoint) if finished else None
    if finished and problem is None:
        log(verbose, f"{out}: already complete")
        return None, saved
    check_world_size(checkpoint.get("world_size", (saved or {}).get("world_size")), world_size)
    if finished:
        log(verbose, f"{out}: result.json {problem}: rebuilding it from the checkpoint")
    return checkpoint, None


def check_resumable(saved: dict[str, Any], config: Any) -> None:
    """A resumed run continues the configuration that wrote its checkpoint (execution-only fields aside);
    ``config`` is a :class:`longtail.train.TrainConfig` (not imported here: the configuration imports the
    run folder, for the parent run a stage starts from)."""
    kind = type(config)
    saved = kind.from_dict(saved).to_dict()  # a checkpoint of an older version, in today's fields
    current = config.to_dict()
    execution_only = kind.execution_only_fields()
    differing = sorted(k for k in current if k not in execution_only and saved.get(k) != current[k])
    if differing:
        details = ", ".join(f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in differing)
        raise ValueError(f"cannot resume: the configuration differs from the checkpoint's ({details})")


def check_world_size(saved: Any, world: int) -> None:
    """A resumed run continues with the world size that wrote its checkpoint: the data shards of every
    batch, the gradient average and BatchNorm's statistics depend on it."""
    if saved is not None and saved != world:
        raise ValueError(
            f"cannot resume: the world size must be {saved}, the checkpoint's (the data shards and the gradient "
            f"average depend on it); got {world}: resume with torchrun --nproc-per-node {saved}"
            + (" on one machine" if saved > 1 else " or without torchrun") + ", or pass --overwrite to start over"
        )


def save_config(out: Path, config: Any) -> None:
    """The resolved configuration beside the run, in the form ``--config`` reads."""
    write_text(out / CONFIG, config.to_toml())


def save(out: Path, run: Any, progress: Progress, report: dict[str, Any]) -> None:
    """After an epoch of ``run`` (a :class:`longtail.train.trainer.Run`): its checkpoint, ``result.json`` and
    ``history.csv``, each written atomically."""
    save_checkpoint(out / CHECKPOINT, {
        "epoch": progress.next_epoch - 1,
        "config": run.config.to_dict(),
        **run.state_dict(),
        "history": progress.history,
        "train_seconds": progress.train_seconds,
        "eval_seconds": progress.eval_seconds,
        "wall_seconds": progress.wall_seconds(),
        "world_size": run.world_size,
        "parent": run.parent,
        "data": run.data.description(),
        "train_counts": run.data.counts.tolist(),
        "posthoc": report.get("posthoc"),  # the tau validation chose: load_model applies it
    })
    save_result(out, result_dict(run, progress, report, complete=progress.next_epoch == run.config.epochs),
                history=True)


def save_result(out: Path, result: dict[str, Any], *, history: bool = False) -> None:
    """``result.json`` (and, with ``history``, ``history.csv`` from its history) without a checkpoint."""
    write_json(out / RESULT, result)
    if history:
        write_text(out / HISTORY, history_csv(result["history"]))


def result_dict(
    run: Any, progress: Progress, report: dict[str, Any], *, complete: bool, diverged: TrainingDiverged | None = None
) -> dict[str, Any]:
    """The content of ``result.json`` for ``run`` (a :class:`longtail.train.trainer.Run`): status ``complete``,
    ``running`` or (``diverged`` given) ``diverged``."""
    result = {
        "status": "diverged" if diverged is not None else "complete" if complete else "running",
        "longtail_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(run.device),
        "hardware": hardware(run.device),
        "autocast": "bfloat16" if run.autocast else "off",
        "world_size": run.world_size,
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
    "CONFIG",
    "HISTORY",
    "LOCK",
    "RESULT",
    "TRAINER_CHECKPOINT_KEYS",
    "RunFolderError",
    "TrainingDiverged",
    "check_resumable",
    "check_world_size",
    "existing_run",
    "folder_lock",
    "prepare_folder",
    "read_result",
    "result_dict",
    "result_problem",
    "resume_point",
    "save",
    "save_config",
    "save_result",
]
