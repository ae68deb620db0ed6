"""What a run has done so far and what it tells the person watching: the :class:`Progress` record (saved
in every checkpoint, so a resumed run continues its history and its clocks), the epoch's progress bar,
and the one line per epoch.

Only one process prints: :func:`train <longtail.train.train>` passes ``verbose=0`` to every rank but 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .device import synchronize


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


def progress_bar(total: int, verbose: int, description: str) -> Any:
    """A tqdm bar of ``total`` steps at ``verbose >= 2`` on a terminal, else None."""
    # Only on a terminal: in a log file tqdm's \r frames pile up (138 KB for the demo's log); the epoch lines say it all.
    if verbose < 2 or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, file=sys.stderr)


def log(verbose: int, message: str) -> None:
    """Prints ``message`` at ``verbose >= 1``."""
    if verbose >= 1:
        print(message, flush=True)


def epoch_line(epoch: int, epochs: int, train_loss: float, test: dict[str, Any] | None) -> str:
    """The log line of epoch ``epoch`` (0-based) of ``epochs``; ``test``: the epoch's test summary, if any.

    >>> epoch_line(0, 5, 0.5, {"accuracy": 0.5, "balanced_accuracy": 0.25, "shot_accuracy": {"many": 0.5}})
    'epoch   1/5  loss 0.5000  acc 0.5000  bal 0.2500  many/med/few 0.500/-/-'
    """
    line = f"epoch {epoch + 1:3d}/{epochs}  loss {train_loss:.4f}"
    if test is not None:
        shots = test.get("shot_accuracy", {})
        line += f"  acc {test['accuracy']:.4f}  bal {test['balanced_accuracy']:.4f}  many/med/few " + "/".join(
            "-" if shots.get(k) is None else f"{shots[k]:.3f}" for k in ("many", "medium", "few")
        )
    return line


def timed(device: torch.device, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and its seconds, the device's queue drained before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn(*args)
    synchronize(device)
    return out, time.perf_counter() - t0


__all__ = ["Progress", "epoch_line", "log", "progress_bar", "timed"]
