"""The one owner of a run folder: what it holds (``checkpoint.pt``, ``result.json``, the per-epoch log
``history.csv`` and the resolved configuration ``config.toml``), and its lock.

A run holds an exclusive lock on ``<out>/.lock`` (``fcntl.flock``, POSIX only; under DDP rank 0 holds it)
for its whole duration, so two runs never write the same folder; the file keeps the PID of its last
holder and is left in place (deleting lock files reopens the race). :func:`existing_run` says what a
folder holds, :func:`read_result` reads ``result.json`` without ever raising, and
:func:`result_problem` says why a finished checkpoint's ``result.json`` must be rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


__all__ = ["CHECKPOINT", "LOCK", "RESULT", "RunFolderError", "existing_run", "folder_lock", "read_result",
           "result_problem"]
