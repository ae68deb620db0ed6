"""Classifier heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_real, check_tau

__all__ = ["NormedLinear", "PriorAdjusted", "ScaledClassifier", "TauNormalized"]


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


class ScaledClassifier(nn.Module):
    """Learnable weight scaling (LWS, Kang et al. ICLR 2020): ``out[n, k] = f_k * classifier(x)[n, k]``.

    Wraps a trained classifier (frozen by the caller); only the per-class scales ``f`` (``scales``, ``(C,)``,
    initialised to 1, so the wrapped model starts as it was) are meant to be learned, with class-balanced
    sampling. The scale multiplies the whole logit, bias included. :meth:`fold` returns the plain
    :class:`torch.nn.Linear` with the scales folded into its rows.

    Shapes: input ``(N, in_features)`` -> output ``(N, C)``.
    """

    def __init__(self, classifier: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.classifier = classifier
        self.scales = nn.Parameter(torch.ones(check_int("num_classes", num_classes, low=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x) * self.scales

    def fold(self) -> nn.Linear:
        """The ``nn.Linear`` equal to this head: row ``k`` and bias ``k`` times ``f_k``."""
        if not isinstance(self.classifier, nn.Linear):
            raise TypeError(f"fold needs an nn.Linear classifier; got {type(self.classifier).__name__}")
        inner = self.classifier
        linear = nn.Linear(inner.in_features, inner.out_features, bias=inner.bias is not None)
        linear = linear.to(inner.weight.device, inner.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(inner.weight * self.scales[:, None])
            if inner.bias is not None:
                linear.bias.copy_(inner.bias * self.scales)
        return linear


class TauNormalized(nn.Module):
    r"""Post-hoc tau-normalised classifier (Kang et al. ICLR 2020): :math:`\tilde w_k = w_k / \|w_k\|^\tau`.

    ``out = x @ W_tau^T`` with the bias dropped (the paper's form); ``tau = 0`` is the classifier without
    its bias, ``tau = 1`` a cosine-like classifier with unnormalised features. A zero row stays zero.
    The weights are normalised once, at construction, from a copy of ``linear.weight``.

    Shapes: input ``(N, in_features)`` -> output ``(N, out_features)``.
    """

    def __init__(self, linear: nn.Linear, tau: float) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"tau-normalisation needs an nn.Linear classifier; got {type(linear).__name__}")
        self.tau = check_real("tau", tau, low=0.0, finite=True)
        with torch.no_grad():
            w = linear.weight.detach().clone()
            norms = torch.linalg.vector_norm(w.double(), dim=1, keepdim=True)
            scale = torch.where(norms > 0, norms.clamp_min(torch.finfo(torch.float64).tiny) ** -self.tau,
                                torch.ones_like(norms))
        self.register_buffer("weight", (w.double() * scale).to(w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}"


class PriorAdjusted(nn.Module):
    r"""Post-hoc logit adjustment (Menon et al. ICLR 2021): ``classifier(x) - tau * log(prior)``.

    ``log_prior`` is the ``(C,)`` log of the training class frequencies
    (:func:`longtail.functional.class_log_prior`).
    """

    def __init__(self, classifier: nn.Module, log_prior: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.tau = float(check_tau(tau, allow_dynamic=False, allow_zero=True))
        self.register_buffer("log_prior", torch.as_tensor(log_prior, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x)
        return logits - (self.tau * self.log_prior).to(logits.dtype)

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}"
