"""Classifier heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_real

__all__ = ["NormedLinear"]


class NormedLinear(nn.Module):
    """Cosine classifier: ``out[n, k] = scale * <x_n / |x_n|, w_k / |w_k|>`` (the LDAM-DRW ``use_norm`` head).

    With the default ``scale=1`` every output lies in ``[-1, 1]``; LDAM applies its scale (s = 30) inside the loss,
    and a plain cross-entropy on unscaled cosines cannot get confident, so pass ``scale`` (e.g. 16-30) if the loss
    does not scale.  There is no bias, so prior-based bias initialisation does not apply to this head.

    ``weight`` has shape ``(out_features, in_features)`` like :class:`torch.nn.Linear` (row ``k`` is class ``k``'s
    prototype); the LDAM-DRW code stores the transpose.  Initialisation follows that code: uniform(-1, 1), then
    every class vector rescaled to unit L2 norm.

    Shapes: input ``(N, in_features)`` -> output ``(N, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, low=1)
        self.out_features = check_int("out_features", out_features, low=1)
        self.scale = check_real("scale", scale, low=0.0, low_open=True, finite=True)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            # LDAM-DRW: uniform_(-1, 1).renorm_(2, dim, 1e-5).mul_(1e5).  renorm caps each class vector's norm at
            # 1e-5 (every uniform vector exceeds it), so after the x1e5 each vector has norm exactly 1.
            self.weight.uniform_(-1.0, 1.0)
            self.weight.renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_features)`` -> ``(N, out_features)`` cosine similarities times ``scale``."""
        out = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        return out if self.scale == 1.0 else out * self.scale

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"
