"""What every model of the package shares: timm's classifier convention.

A :class:`Classifier` exposes its final layer as ``fc`` (and the ``classifier`` property),
:meth:`~Classifier.forward_features` returns the embedding that feeds it and :meth:`~Classifier.forward_head`
maps that embedding to the logits, so ``forward(x) == forward_head(forward_features(x))``. The stages that
refit or rescale a classifier (cRT, LWS, tau-normalisation, post-hoc adjustment) rely on nothing else.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import NormedLinear

__all__ = ["Classifier", "linear_head"]


def linear_head(feature_dim: int, num_classes: int, use_norm: bool = False) -> nn.Module:
    """The classifier layer: :class:`torch.nn.Linear`, or the cosine :class:`NormedLinear` (LDAM-DRW's head)."""
    return NormedLinear(feature_dim, num_classes) if use_norm else nn.Linear(feature_dim, num_classes)


class Classifier(nn.Module):
    """Base of the image classifiers: a subclass sets ``in_channels``, ``num_classes``, ``feature_dim`` and ``fc``,
    and defines :meth:`embed` (the backbone) and, if it has more than ``fc`` in its head, :meth:`forward_head`."""

    in_channels: int
    num_classes: int
    feature_dim: int
    fc: nn.Module

    @property
    def classifier(self) -> nn.Module:
        """The final layer (same object as ``self.fc``)."""
        return self.fc

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> embedding ``(N, feature_dim)`` (what the head takes)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape (N, {self.in_channels}, H, W); got {tuple(x.shape)}")
        return self.embed(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Embedding ``(N, feature_dim)`` -> logits ``(N, num_classes)``."""
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))
