"""Autograd functions with hand-written backward passes, used by :mod:`longtail.functional._core`.

Class-index targets go through two autograd functions with hand-written backward passes,
:class:`TargetLogSoftmax` (``log softmax(z)_y``, every softmax loss) and :class:`SigmoidRowSum`
(the one-vs-all BCE / sigmoid focal terms summed over classes); :class:`FocalNLL` is the softmax
focal term from ``log p``. They keep no ``(N, C, *)`` tensor the forward did not compute anyway
and write the gradient in place, so a softmax loss needs one ``(N, C, *)`` buffer where native
``F.cross_entropy`` needs three, and a sigmoid loss a few full passes fewer than the same formula
through autograd (figures in ``docs/benchmarks/ops.md``). Their backward is differentiable
(double backward) when the graph of the gradient is asked for (``create_graph=True``).

Layout as in the rest of :mod:`longtail.functional`: logits ``(N, C)`` or ``(N, C, d1, ...)`` with
the class dimension at 1, class-index targets ``(N, d1, ...)``. Besides the three functions:
:func:`log1mexp`, the two-branch ``log(1 - exp(x))`` they (and the focal losses) rely on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..checks import is_compiling

_LOG_HALF = -0.6931471805599453


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0`` with finite value and gradient everywhere.

    Two branches (Maechler 2012) keep full precision; each branch only ever sees inputs it is
    accurate for, so the masked-out branch cannot put NaN into the gradient. ``x == 0`` (a
    probability of exactly 1) is clamped to the smallest normal so the log stays finite.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near_zero = x > _LOG_HALF
    x_near = torch.where(near_zero, x, torch.full_like(x, -1.0))
    x_far = torch.where(near_zero, torch.full_like(x, -1.0), x)
    return torch.where(near_zero, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))


def _log_prob_floor(dtype: torch.dtype) -> float:
    """Half a unit above the log of the dtype's smallest normal number (-86.8 for float32, -707.9 for float64)."""
    return math.log(torch.finfo(dtype).tiny) + 0.5


def _exp_of_log_prob_(log_prob: torch.Tensor) -> torch.Tensor:
    """``exp`` in place of log-probabilities, raised first to :func:`_log_prob_floor`.

    ``torch.exp`` on x86 CPUs takes a scalar path, 30-80 times slower, wherever its result is
    subnormal or zero (log-probabilities below about -87.3 in float32), which a confident model
    produces for most classes. A probability below ``e**0.5`` times the smallest normal number
    (1.9e-38 in float32, 3.7e-308 in float64) enters the gradient as that value: an absolute change
    of the gradient entry below 2e-38, far under float32's resolution of every other entry.
    """
    return log_prob.clamp_(min=_log_prob_floor(log_prob.dtype)).exp_()


class TargetLogSoftmax(torch.autograd.Function):
    """``log softmax(z, dim=1)`` at the target class: ``(N, C, *)`` logits, ``(N, *)`` indices -> ``(N, *)``.

    ``dz = -g * softmax(z) + g * onehot(y)``. The forward's ``(N, C, *)`` log-softmax is kept (as
    native cross-entropy keeps it) and the backward turns it into the gradient in place
    (:func:`_exp_of_log_prob_`, ``mul_`` by ``-g``, ``scatter_add_`` of ``g`` at the targets): one
    ``(N, C, *)`` buffer in all, where native cross-entropy allocates three (log-softmax, a
    zero-filled gradient of it, the gradient of the logits). The buffer is handed over once: a
    second backward through a retained graph, a traced (``torch.compile``) graph, or a
    differentiable backward (``create_graph=True``) recompute the log-softmax from the saved logits.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        index = target.unsqueeze(1)
        ctx.save_for_backward(logits, index)
        log_softmax = F.log_softmax(logits, dim=1)
        ctx.log_softmax = None if is_compiling() else log_softmax
        return log_softmax.gather(1, index).squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, index = ctx.saved_tensors
        buffer, ctx.log_softmax = ctx.log_softmax, None
        g = grad.unsqueeze(1)
        # Every path computes the same probabilities, bit for bit (a reentrant backward).
        if torch.is_grad_enabled():  # create_graph=True: out of place, so the gradient is differentiable
            probs = torch.exp(F.log_softmax(logits, 1).clamp(min=_log_prob_floor(logits.dtype)))
            return (probs * -g).scatter_add(1, index, g), None
        probs = _exp_of_log_prob_(F.log_softmax(logits, 1) if buffer is None else buffer)
        return probs.mul_(-g).scatter_add_(1, index, g), None


class SigmoidRowSum(torch.autograd.Function):
    """One-vs-all terms of class-index targets summed over classes: ``(N, C, *)``, ``(N, *)`` -> ``(N, *)``.

    With ``z_t = z_i`` for the target class and ``-z_i`` for the others and ``p_t = sigmoid(z_t)``,
    the term of class ``i`` is ``a_i * m_i * BCE_i`` with ``BCE_i = -logsigmoid(z_t)``, the focal
    modulator ``m_i = exp(gamma * logsigmoid(-z_t))`` (1 when ``gamma`` is None) and ``a_i`` the
    torchvision ``alpha`` for the target, ``1 - alpha`` for the others (1 when ``alpha`` is None).

    Backward, by hand: ``d term / d z_t = -m (1 - p_t (1 + gamma log p_t))``, which is
    ``-(1 - p_t)`` for BCE, ``z_t -> +-inf`` giving 0 or ``-m``, never NaN. BCE recomputes
    ``sigmoid(z)`` from the logits and saves nothing; focal saves ``log p_t`` and ``m``, which the
    forward computes anyway, so the backward is four passes over ``(N, C, *)``.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, gamma: float | None, alpha: float | None
    ) -> torch.Tensor:
        index = target.unsqueeze(1)
        z_t = torch.neg(logits).scatter_(1, index, logits.gather(1, index))
        log_p = F.logsigmoid(z_t)  # log p_t = -BCE
        ctx.gamma, ctx.alpha = gamma, alpha
        if gamma is None:
            ctx.save_for_backward(logits, index)
            terms = log_p
        else:
            # log(1 - p_t) = logsigmoid(-z_t) = log p_t - z_t, written over z_t.
            modulator = torch.sub(log_p, z_t, out=z_t).mul_(gamma).exp_()
            ctx.save_for_backward(logits, index, log_p, modulator)
            terms = modulator * log_p
        if alpha is not None:
            positive = terms.gather(1, index)
            terms = (1.0 - alpha) * terms
            terms.scatter_(1, index, alpha * positive)
        return -terms.sum(1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        gamma, alpha = ctx.gamma, ctx.alpha
        g = grad.unsqueeze(1)
        if torch.is_grad_enabled():  # create_graph=True: recompute from the logits, out of place
            return SigmoidRowSum._differentiable_backward(ctx.saved_tensors[0], ctx.saved_tensors[1], g, gamma, alpha)
        if gamma is None:
            logits, index = ctx.saved_tensors
            # -d term / d z_t = 1 - p_t: sigmoid(z_i) for the others; sign flips at the target.
            out = torch.sigmoid(logits)
            positive = out.gather(1, index).sub_(1.0)
        else:
            _, index, log_p, modulator = ctx.saved_tensors
            out = torch.exp(log_p)  # p_t
            torch.addcmul(out, out, log_p, value=gamma, out=out)  # p_t (1 + gamma log p_t)
            torch.addcmul(modulator, modulator, out, value=-1.0, out=out)  # -d term / d z_t
            positive = out.gather(1, index).neg_()
        out.mul_(g if alpha is None else g * (1.0 - alpha))
        positive.mul_(g if alpha is None else g * alpha)
        return out.scatter_(1, index, positive), None, None, None

    @staticmethod
    def _differentiable_backward(
        logits: torch.Tensor, index: torch.Tensor, g: torch.Tensor, gamma: float | None, alpha: float | None
    ) -> tuple[torch.Tensor, None, None, None]:
        z_t = torch.neg(logits).scatter(1, index, logits.gather(1, index))
        log_p = F.logsigmoid(z_t)
        if gamma is None:
            minus_dterm = torch.sigmoid(-z_t)
        else:
            minus_dterm = torch.exp(gamma * (log_p - z_t)) * (1.0 - torch.exp(log_p) * (1.0 + gamma * log_p))
        neg_scale, pos_scale = (g, g) if alpha is None else (g * (1.0 - alpha), g * alpha)
        out = (minus_dterm * neg_scale).scatter(1, index, -minus_dterm.gather(1, index) * pos_scale)
        return out, None, None, None


class FocalNLL(torch.autograd.Function):
    """``-(1 - p)**gamma * log p`` elementwise from ``log p`` (the softmax focal term).

    The modulator is ``exp(gamma * log(1 - p))`` with the two-branch :func:`log1mexp` (computed
    without autograd: the masked branches need no NaN-safe gradient). Backward, by hand:
    ``d/d log p = gamma log p exp(log p + (gamma - 1) log(1 - p)) - (1 - p)**gamma``; the exponent is
    at most ``-log(tiny)`` (``log(1 - p)`` is clamped at ``log(tiny)``), so it stays finite for every
    ``gamma >= 0`` and ``p -> 1``, and ``gamma = 0`` gives ``-1``, cross-entropy's gradient.
    """

    @staticmethod
    def forward(ctx: Any, log_prob: torch.Tensor, gamma: float) -> torch.Tensor:
        log_q = log1mexp(log_prob)  # log(1 - p)
        modulator = torch.mul(log_q, gamma).exp_()
        ctx.save_for_backward(log_prob, log_q, modulator)
        ctx.gamma = gamma
        # Out of place: under torch.compile, torch 2.11 gives a zero gradient through a forward whose output comes
        # from an in-place op (``.neg_()``; measured on 2.11.0, right on 2.13.0); the extra (N, *) buffer is small.
        return torch.neg(torch.mul(modulator, log_prob))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_prob, log_q, modulator = ctx.saved_tensors
        gamma = ctx.gamma
        if torch.is_grad_enabled():  # create_graph=True: differentiable, through the NaN-safe log1mexp
            log_q = log1mexp(log_prob)
            modulator = torch.exp(gamma * log_q)
            slope = gamma * log_prob * torch.exp(log_prob + (gamma - 1.0) * log_q) - modulator
            return grad * slope, None
        out = torch.mul(log_q, gamma - 1.0).add_(log_prob).exp_()
        torch.addcmul(modulator, out, log_prob, value=-gamma, out=out)  # -slope
        return out.mul_(grad).neg_(), None


__all__ = [
    "FocalNLL",
    "SigmoidRowSum",
    "TargetLogSoftmax",
    "log1mexp",
]
