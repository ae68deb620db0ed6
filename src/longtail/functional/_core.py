"""Per-sample loss terms and reductions shared by every loss in :mod:`longtail.functional`.

Layout: logits ``z`` are ``(N, C)`` or ``(N, C, d1, ...)`` with the class dimension at 1 (as in
``F.cross_entropy``); no transpose is made, so dense inputs cost no copy. A "sample" is one
position ``(n, d1, ...)``: per-sample tensors have shape ``(N, d1, ...)``.

Everything is computed in float32 (float64 inputs stay float64) and returned in the input's dtype.
No ``.item()``, numpy or Python loops over labels: these functions compile under ``torch.compile``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._validation import (
    REDUCTIONS,
    check_choice,
    check_class_weight,
    check_gamma,
    check_label_values,
    check_logits,
    check_target,
    check_target_values,
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
        check_label_values(target, num_classes, ignore_index)
        target = target.long()
        valid = target != ignore_index
        # Ignored positions get a valid index (0) so gathers stay in range; their loss is masked out.
        return Prepared(z, torch.where(valid, target, torch.zeros_like(target)), valid, weight, True)
    check_target_values(target)
    return Prepared(z, target.to(dtype), None, weight, False)


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


def softmax_terms(p: Prepared, gamma: float | None) -> torch.Tensor:
    """Unweighted per-sample softmax cross-entropy, or softmax focal loss when ``gamma`` is given.

    Focal: ``-(1 - p_y)**gamma * log p_y``; the modulator is ``exp(gamma * log(1 - p_y))`` with
    ``log(1 - p_y)`` from :func:`log1mexp`, so ``gamma < 1`` and ``p_y -> 1`` stay finite.
    Soft targets: ``sum_c t_c * term(c)``, the loss is linear in the target.
    """
    log_prob = F.log_softmax(p.logits, dim=1)
    if p.hard:
        log_prob = log_prob.gather(1, p.target.unsqueeze(1)).squeeze(1)
    nll = -log_prob
    if gamma is not None:
        nll = torch.exp(gamma * log1mexp(log_prob)) * nll
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
    if p.hard:
        return p.weight[p.target]
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
        per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return per_sample.to(out_dtype)
    total = per_sample.sum()
    if reduction == "sum":
        return total.to(out_dtype)
    if reduction == "mean":
        denominator = valid.sum().to(total.dtype) if valid is not None else torch.tensor(
            float(per_sample.numel()), dtype=total.dtype, device=total.device
        )
    else:  # weighted_mean
        norm = torch.ones_like(per_sample) if normalizer is None else normalizer.expand_as(per_sample)
        if valid is not None:
            norm = torch.where(valid, norm, torch.zeros_like(norm))
        denominator = norm.sum()
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return (total / safe).to(out_dtype)


def softmax_loss(p: Prepared, gamma: float | None, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    """Weighted, reduced softmax cross-entropy (``gamma=None``) or softmax focal loss."""
    if gamma is None and p.hard:
        # Native kernel: w_y * CE_n per sample, 0 where ignored; only the reduction is ours.
        per_sample = F.cross_entropy(p.logits, p.target, weight=p.weight, reduction="none")
        return reduce_loss(per_sample, None, p.valid, reduction, out_dtype, normalizer=sample_weights(p))
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
    terms = sigmoid_terms(p, gamma, alpha)
    if p.weight is not None and not p.hard and multilabel_weight == "by_class":
        per_sample = (terms * class_dim_view(p.weight, terms.dim())).sum(1)
        return reduce_loss(per_sample, None, None, reduction, out_dtype, normalizer=p.weight.mean())
    return reduce_loss(terms.sum(1), sample_weights(p), p.valid, reduction, out_dtype)


def check_multilabel_weight(value: str) -> str:
    return check_choice("multilabel_weight", value, MULTILABEL_WEIGHTINGS)


__all__ = [
    "Prepared",
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
