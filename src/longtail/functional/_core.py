"""Per-sample loss terms and reductions shared by every loss in :mod:`longtail.functional`.

Layout: logits ``z`` are ``(N, C)`` or ``(N, C, d1, ...)`` with the class dimension at 1 (as in
``F.cross_entropy``); no transpose is made, so dense inputs cost no copy. A "sample" is one
position ``(n, d1, ...)``: per-sample tensors have shape ``(N, d1, ...)``.

Everything is computed in float32 (float64 inputs stay float64) and returned in the input's dtype.
No ``.item()``, numpy or Python loops over labels: these functions compile under ``torch.compile``.

Class-index targets go through two autograd functions with hand-written backward passes,
:class:`TargetLogSoftmax` (``log softmax(z)_y``, every softmax loss) and :class:`SigmoidRowSum`
(the one-vs-all BCE / sigmoid focal terms summed over classes); :class:`FocalNLL` is the softmax
focal term from ``log p``. They keep no ``(N, C, *)`` tensor the forward did not compute anyway
and write the gradient in place, so a softmax loss needs one ``(N, C, *)`` buffer where native
``F.cross_entropy`` needs three, and a sigmoid loss a few full passes fewer than the same formula
through autograd (figures in ``docs/benchmarks/ops.md``). Their backward is differentiable
(double backward) when the graph of the gradient is asked for (``create_graph=True``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ..checks import (
    REDUCTIONS,
    check_choice,
    check_class_weight,
    check_gamma,
    check_label_values,
    check_logits,
    check_target,
    check_target_values,
    is_compiling,
)

_LOG_HALF = -0.6931471805599453
MULTILABEL_WEIGHTINGS = ("average", "by_class")


class Prepared(NamedTuple):
    logits: torch.Tensor  # float32 or float64, (N, C, *)
    target: torch.Tensor  # int64 (N, *) with ignored entries replaced by 0, or float (N, C, *)
    valid: torch.Tensor | None  # bool (N, *) for class-index targets, None for float targets
    weight: torch.Tensor | None  # (C,) in the compute dtype
    hard: bool  # class-index target


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def prepare(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Prepared:
    """Validates the arguments and brings them to the compute dtype and a common form."""
    check_logits(logits)
    check_choice("reduction", reduction, REDUCTIONS)
    hard = check_target(logits, target)
    num_classes = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    if weight is not None:
        weight = check_class_weight(weight, num_classes, logits.device).to(dtype)
    z = logits.to(dtype)
    if hard:
        target = target.long()
        valid = target != ignore_index
        # Ignored positions get a valid index (0) so gathers stay in range; their loss is masked out.
        safe = torch.where(valid, target, 0)
        _check_labels(safe, target, num_classes, ignore_index)
        return Prepared(z, safe, valid, weight, True)
    check_target_values(target)
    return Prepared(z, target.to(dtype), None, weight, False)


def _check_labels(safe: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Labels in ``[0, C)`` or ``ignore_index``: one ``aminmax`` over the labels with the ignored ones
    replaced by 0; the detailed check (and its error message) only runs when that finds a bad label."""
    if is_compiling() or safe.numel() == 0:
        return
    low, high = torch.aminmax(safe)
    if bool(low < 0) or bool(high >= num_classes):
        check_label_values(target, num_classes, ignore_index)


def class_dim_view(weight: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) to broadcast against (N, C, d1, ...)."""
    return weight.view((1, -1) + (1,) * (ndim - 2))


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
        x = log_prob.clamp(max=-torch.finfo(log_prob.dtype).tiny)
        near_zero = x > _LOG_HALF
        log_q = torch.expm1(x).neg_().log_()
        torch.where(near_zero, log_q, torch.exp(x).neg_().log1p_(), out=log_q)  # log(1 - p)
        modulator = torch.mul(log_q, gamma).exp_()
        ctx.save_for_backward(log_prob, log_q, modulator)
        ctx.gamma = gamma
        return torch.mul(modulator, log_prob).neg_()

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


def softmax_terms(p: Prepared, gamma: float | None) -> torch.Tensor:
    """Unweighted per-sample softmax cross-entropy, or softmax focal loss when ``gamma`` is given.

    Focal: ``-(1 - p_y)**gamma * log p_y``; the modulator is ``exp(gamma * log(1 - p_y))`` with
    ``log(1 - p_y)`` from :func:`log1mexp`, so ``gamma < 1`` and ``p_y -> 1`` stay finite.
    Soft targets: ``sum_c t_c * term(c)``, the loss is linear in the target.
    """
    if p.hard:
        log_prob = TargetLogSoftmax.apply(p.logits, p.target)
    else:
        log_prob = F.log_softmax(p.logits, dim=1)
    nll = -log_prob if gamma is None else FocalNLL.apply(log_prob, gamma)
    if p.hard:
        return nll
    return (p.target * nll).sum(1)


def signed_logits(p: Prepared) -> torch.Tensor:
    """``z_t``: ``z_i`` for the true class and ``-z_i`` for the others (hard targets)."""
    negated = -p.logits
    return negated.scatter(1, p.target.unsqueeze(1), p.logits.gather(1, p.target.unsqueeze(1)))


def sigmoid_terms(p: Prepared, gamma: float | None, alpha: float | None = None) -> torch.Tensor:
    """Unweighted one-vs-all terms ``(N, C, *)``: BCE, times ``(1 - p_t)**gamma`` when gamma is given.

    Hard targets use ``BCE = softplus(-z_t)`` and ``log(1 - p_t) = logsigmoid(-z_t)``. Float targets
    ``t`` use ``p_t = p t + (1 - p)(1 - t)`` (as torchvision), i.e.
    ``log(1 - p_t) = logaddexp(log t + logsigmoid(-z), log(1 - t) + logsigmoid(z))``, which is the
    hard form for ``t`` in {0, 1}. ``alpha`` (torchvision's) weighs positives by alpha and negatives by 1 - alpha.
    """
    if p.hard:
        z_t = signed_logits(p)
        # -logsigmoid is exact where softplus switches to its linear branch (|z| > 20).
        terms = -F.logsigmoid(z_t)
        if gamma is not None:
            terms = torch.exp(gamma * F.logsigmoid(-z_t)) * terms
        if alpha is not None:
            positive = torch.zeros_like(z_t).scatter(1, p.target.unsqueeze(1), 1.0)
            terms = (alpha * positive + (1.0 - alpha) * (1.0 - positive)) * terms
        return terms
    t = p.target
    terms = F.binary_cross_entropy_with_logits(p.logits, t, reduction="none")
    if gamma is not None:
        log_one_minus_pt = torch.logaddexp(
            torch.log(t) + F.logsigmoid(-p.logits), torch.log1p(-t) + F.logsigmoid(p.logits)
        )
        terms = torch.exp(gamma * log_one_minus_pt) * terms
    if alpha is not None:
        terms = (alpha * t + (1.0 - alpha) * (1.0 - t)) * terms
    return terms


def sample_weights(p: Prepared, multilabel_weight: str = "average") -> torch.Tensor | None:
    """Per-sample weights ``(N, *)`` from the per-class weights, or None when unweighted.

    Hard target: ``w_y``. Float target ``t``: ``sum_c t_c w_c / sum_c t_c``, the target-weighted
    mean of the class weights (``w_y`` for a one-hot row, the expected weight for a probability
    row, the mean weight of the positive labels for a multi-hot row); a row with no positive label
    gets the mean class weight.
    """
    if p.weight is None:
        return None
    if p.hard:  # index_select: several times faster than advanced indexing for many samples
        return p.weight.index_select(0, p.target.reshape(-1)).view(p.target.shape)
    mass = p.target.sum(1)
    weighted = (p.target * class_dim_view(p.weight, p.target.dim())).sum(1)
    mean_weight = p.weight.mean().expand_as(mass)
    has_positive = mass > 0
    return torch.where(has_positive, weighted / torch.where(has_positive, mass, torch.ones_like(mass)), mean_weight)


def reduce_loss(
    per_sample: torch.Tensor,
    weight_of_sample: torch.Tensor | None,
    valid: torch.Tensor | None,
    reduction: str,
    out_dtype: torch.dtype,
    normalizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """Applies weights and the mask, then the reduction.

    ``mean`` divides the weighted sum by the number of non-ignored samples (the official CB code);
    ``weighted_mean`` by the sum of their weights (``F.cross_entropy(weight=...)``), or of
    ``normalizer`` when the weights were applied before (per class). A batch with nothing to
    average (every sample ignored, or every weight 0) gives 0, not NaN.
    """
    if normalizer is None:
        normalizer = weight_of_sample
    if weight_of_sample is not None:
        per_sample = per_sample * weight_of_sample
    if valid is not None:
        per_sample = torch.where(valid, per_sample, 0.0)
    if reduction == "none":
        return _as_dtype(per_sample, out_dtype)
    total = per_sample.sum()
    if reduction == "sum":
        return _as_dtype(total, out_dtype)
    if reduction == "mean":
        # A count of 0 means the (masked) total is 0 as well: dividing by 1 then gives 0.
        if valid is None:
            return _as_dtype(total / max(per_sample.numel(), 1), out_dtype)
        return _as_dtype(total / valid.sum().clamp_min(1), out_dtype)
    norm = torch.ones_like(per_sample) if normalizer is None else normalizer.expand_as(per_sample)
    if valid is not None:
        norm = torch.where(valid, norm, 0.0)
    denominator = norm.sum()
    return _as_dtype(total / torch.where(denominator > 0, denominator, 1.0), out_dtype)


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def softmax_loss(p: Prepared, gamma: float | None, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    """Weighted, reduced softmax cross-entropy (``gamma=None``) or softmax focal loss."""
    if p.hard and gamma is None and reduction != "none":
        # The reductions are linear: reduce log p_y and negate the scalar, a pass over the samples fewer.
        log_prob = TargetLogSoftmax.apply(p.logits, p.target)
        return -reduce_loss(log_prob, sample_weights(p), p.valid, reduction, out_dtype)
    if p.hard or p.weight is None:
        return reduce_loss(softmax_terms(p, gamma), sample_weights(p), p.valid, reduction, out_dtype)
    # Soft targets with class weights: linear in the target, each class term weighted by its own
    # class (PyTorch's soft-target convention); weighted_mean divides by sum_c t_c w_c.
    weighted = p._replace(target=p.target * class_dim_view(p.weight, p.target.dim()))
    per_sample = softmax_terms(weighted, gamma)
    return reduce_loss(per_sample, None, None, reduction, out_dtype, normalizer=weighted.target.sum(1))


def sigmoid_loss(
    p: Prepared,
    gamma: float | None,
    reduction: str,
    out_dtype: torch.dtype,
    multilabel_weight: str = "average",
    alpha: float | None = None,
) -> torch.Tensor:
    """Weighted, reduced one-vs-all BCE (``gamma=None``) or sigmoid focal loss, summed over classes."""
    if p.hard:
        per_sample = SigmoidRowSum.apply(p.logits, p.target, gamma, alpha)
        return reduce_loss(per_sample, sample_weights(p), p.valid, reduction, out_dtype)
    terms = sigmoid_terms(p, gamma, alpha)
    if p.weight is not None and not p.hard and multilabel_weight == "by_class":
        per_sample = (terms * class_dim_view(p.weight, terms.dim())).sum(1)
        return reduce_loss(per_sample, None, None, reduction, out_dtype, normalizer=p.weight.mean())
    return reduce_loss(terms.sum(1), sample_weights(p), p.valid, reduction, out_dtype)


def check_multilabel_weight(value: str) -> str:
    return check_choice("multilabel_weight", value, MULTILABEL_WEIGHTINGS)


__all__ = [
    "FocalNLL",
    "Prepared",
    "SigmoidRowSum",
    "TargetLogSoftmax",
    "check_gamma",
    "check_multilabel_weight",
    "class_dim_view",
    "log1mexp",
    "prepare",
    "reduce_loss",
    "sample_weights",
    "sigmoid_loss",
    "sigmoid_terms",
    "softmax_loss",
    "softmax_terms",
]
