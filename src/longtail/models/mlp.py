"""A multilayer perceptron for tables (``--dataset table --model mlp``)."""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_int, check_num_classes
from .base import Classifier, linear_head

__all__ = ["MLP"]


class MLP(Classifier):
    """Two hidden layers (Linear, BatchNorm1d, ReLU; ``hidden`` units each) and a linear classifier ``fc``.

    A table reaches it as ``(N, F, 1, 1)``: one channel a feature (:func:`longtail.data.load_table`), standardised
    by the trainer. BatchNorm keeps the hidden activations on one scale whatever the features' spread, as the
    image models' BatchNorm does, so the trainer's default learning rate (0.05, SGD) trains it too.

    Args:
        num_classes: outputs ``C``.
        in_channels: the number of features ``F``.
        hidden: units of each hidden layer; the feature dimension.
        use_norm: a :class:`NormedLinear` cosine head instead of :class:`torch.nn.Linear` (LDAM-DRW).

    >>> model = MLP(num_classes=3, in_channels=5, hidden=8)
    >>> tuple(model(torch.zeros(4, 5, 1, 1)).shape), model.feature_dim
    ((4, 3), 8)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, hidden: int = 256, use_norm: bool = False) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.feature_dim = check_int("hidden", hidden, low=1)
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.in_channels, hidden, bias=False),  # BatchNorm's shift makes the bias redundant
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fc: nn.Module = linear_head(hidden, self.num_classes, use_norm)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, F, 1, 1)`` -> ``(N, hidden)``."""
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"input must be features (N, {self.in_channels}, 1, 1), a table's rows; got "
                             f"{tuple(x.shape)}")
        return self.features(x)
