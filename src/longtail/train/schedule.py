"""Learning-rate schedules, by name: a linear warm-up, then the named decay.

Each schedule maps the epoch progress after the warm-up to a multiple of the base LR; the table
``SCHEDULES`` is what the configuration offers (``--schedule``), so a new schedule is one entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def _cosine(progress: float, epochs: float, warmup: float, milestones: Sequence[int], decay: float) -> float:
    span = max(epochs - warmup, 1e-9)
    done = min(max(progress - warmup, 0.0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * done))


def _step(progress: float, epochs: float, warmup: float, milestones: Sequence[int], decay: float) -> float:
    return decay ** sum(1 for m in milestones if progress >= m)


def _constant(progress: float, epochs: float, warmup: float, milestones: Sequence[int], decay: float) -> float:
    return 1.0


# name -> (what it does, factor of the base LR at a fractional epoch after the warm-up)
SCHEDULES: dict[str, tuple[str, Callable[[float, float, float, Sequence[int], float], float]]] = {
    "cosine": ("cosine decay to 0 at the last epoch", _cosine),
    "step": ("times lr_decay at each of the milestones", _step),
    "constant": ("the base LR throughout", _constant),
}


def learning_rate(config: Any, epoch_progress: float) -> float:
    """LR at a fractional epoch of ``config`` (a :class:`longtail.train.TrainConfig`): warm-up, then its schedule."""
    if config.warmup_epochs > 0 and epoch_progress < config.warmup_epochs:
        return config.lr * (epoch_progress + 1e-9) / config.warmup_epochs
    factor = SCHEDULES[config.schedule][1]
    return config.lr * factor(epoch_progress, config.epochs, config.warmup_epochs, config.milestones, config.lr_decay)


__all__ = ["SCHEDULES", "learning_rate"]
