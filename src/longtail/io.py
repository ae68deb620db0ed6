"""Atomic writes: a crash or SIGKILL leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Writes ``data`` as indented JSON (NaN refused: JSON has none) atomically."""
    text = json.dumps(data, indent=2, allow_nan=False, sort_keys=False) + "\n"
    return _atomic_write(path, lambda handle: handle.write(text.encode()))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """``torch.save`` atomically; the state must load with ``weights_only=True`` (tensors and plain data)."""
    return _atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True``: no pickled code is ever executed."""
    return torch.load(path, map_location=map_location, weights_only=True)
