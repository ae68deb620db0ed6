"""A trained run, loaded for prediction: the model with its normalisation, class names and post-hoc adjustment::

    trained = load_model("runs/my-run")            # a run folder, or its checkpoint.pt
    trained.predict(images)                        # uint8 (N, H, W) / (N, C, H, W), or floats in [0, 1]
    trained.classes[int(trained.predict(images[:1]))]

The checkpoint carries what a model needs beyond its weights: the class names, the input shape and the
per-channel statistics the trainer normalised every split with, ``(x / 255 - mean) / std`` (a model fed
raw pixels instead scores far below its test accuracy), and the tau a post-hoc adjustment chose on
validation (``--posthoc``), which :func:`load_model` applies so predictions are the run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import load_checkpoint
from .config import TrainConfig
from .device import autocast_enabled
from .posthoc import adjusted_model
from .run_folder import CHECKPOINT
from .stages import _plain_classifier


@dataclass
class TrainedModel:
    """A trained model in eval mode with what it needs to take raw images (see the module docstring)."""

    model: nn.Module
    config: TrainConfig
    classes: tuple[str, ...]
    in_channels: int
    image_size: tuple[int, int]
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    posthoc: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, images: Any) -> torch.Tensor:
        """Raw images -> the normalised float tensor ``(N, C, H, W)`` the model was trained on.

        Accepts uint8 pixels (0-255) or floats already scaled to [0, 1], shaped ``(N, H, W)`` (one
        channel) or ``(N, C, H, W)``, as a tensor or a numpy array.
        """
        x = torch.as_tensor(images)
        if x.ndim == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        expected = (self.in_channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shapes = f"(N, {', '.join(map(str, expected))})" + (
                f" or (N, {', '.join(map(str, self.image_size))})" if self.in_channels == 1 else "")
            raise ValueError(f"images must have shape {shapes}; got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        elif x.is_floating_point():
            x = x.float()
        else:
            raise TypeError(f"images must be uint8 pixels or floats in [0, 1]; got dtype {x.dtype}")
        return ((x.to(self.device) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def logits(self, images: Any, batch_size: int = 1024) -> torch.Tensor:
        """``(N, C_classes)`` float32 logits of raw ``images`` (post-hoc adjustment included)."""
        x = self.preprocess(images)
        out = [torch.empty(0, len(self.classes), device=self.device)]
        # The run's precision (bfloat16 autocast where it trained in it), so predictions are the run's.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast_enabled(self.config.amp,
                                                                                             self.device)):
            out += [self.model(x[i : i + batch_size]).float() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out)

    def predict(self, images: Any, batch_size: int = 1024) -> torch.Tensor:
        """``(N,)`` int64 predicted class indices of raw ``images`` (names: ``classes[i]``)."""
        return self.logits(images, batch_size).argmax(1)


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a file, else ``path/checkpoint.pt`` (a run folder)."""
    path = Path(path).expanduser()
    return path / CHECKPOINT if path.is_dir() else path


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu", *,
               model: nn.Module | None = None) -> TrainedModel:
    """The model of a run (its folder or its ``checkpoint.pt``), ready for :meth:`TrainedModel.predict`.

    The model is built again from the run's configuration (an ``hf:PATH`` backbone from its folder, as in
    training) and the checkpoint's weights loaded into it; a run of a module of yours (``model = "custom:..."``)
    needs ``model``, a module of the same class (its weights are replaced by the run's).

    Raises:
        ValueError: not a trainer checkpoint, or one written before checkpoints carried the data
            description (retrain, or resume it with ``--overwrite``... a newer version writes it).
        FileNotFoundError: nothing at ``path``.
    """
    from .trainer import build_network  # the trainer's own architecture builder

    file = checkpoint_path(path)
    if not file.exists():
        raise FileNotFoundError(f"no checkpoint at {str(file)!r} (give a run folder or its {CHECKPOINT})")
    checkpoint = load_checkpoint(file, map_location=device)
    data = checkpoint.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{file} was written by a version of longtail whose checkpoints do not carry the class "
                         "names and the normalisation statistics; train the run again to predict with it")
    config = TrainConfig.from_dict(checkpoint["config"])
    model = build_network(config, len(data["classes"]), int(data["in_channels"]), model=model)
    model.load_state_dict(_plain_classifier(checkpoint["model"]))
    posthoc = checkpoint.get("posthoc")
    if posthoc is not None:
        counts = torch.as_tensor(checkpoint["train_counts"]) if "train_counts" in checkpoint else None
        if counts is None:
            raise ValueError(f"{file}: a post-hoc adjusted run's checkpoint must hold its training counts")
        model = adjusted_model(model, posthoc["method"], counts, posthoc["tau"])
    model = model.to(device, memory_format=torch.channels_last).eval()
    shape = (1, -1, 1, 1)
    return TrainedModel(
        model=model,
        config=config,
        classes=tuple(data["classes"]),
        in_channels=int(data["in_channels"]),
        image_size=tuple(data["image_size"]),
        mean=torch.tensor(data["mean"], device=device).view(shape),
        std=torch.tensor(data["std"], device=device).view(shape),
        posthoc=posthoc,
    )


__all__ = ["TrainedModel", "checkpoint_path", "load_model"]
