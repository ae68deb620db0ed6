"""Weighting, reduction and the softmax / sigmoid losses shared by every loss in :mod:`longtail.functional`.

Inputs come from :func:`longtail.functional._prepare.prepare` (a
:class:`~longtail.functional._prepare.Prepared`: logits ``(N, C)`` or ``(N, C, d1, ...)`` with the
class dimension at 1, per-sample tensors ``(N, d1, ...)``). Class-index targets go through the
hand-written autograd functions of :mod:`longtail.functional._kernels` (:class:`TargetLogSoftmax`,
:class:`SigmoidRowSum`), float targets through the same formulas in autograd
(:func:`softmax_terms`, :func:`sigmoid_terms`), and the softmax focal term through
:class:`FocalNLL` for both. This module weighs the per-sample terms (:func:`sample_weights`),
applies the mask, the per-sample weights and the reduction (:func:`reduce_loss`) and composes them into
:func:`softmax_loss` (with its ``label_smoothing``) and :func:`sigmoid_loss` (with its ``pos_weight``).
The exact definitions are in ``docs/conventions.md``.

Everything is computed in float32 (float64 inputs stay float64) and returned in the input's dtype.
No ``.item()``, numpy or Python loops over labels: these functions compile under ``torch.compile``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_choice
from ._kernels import FocalNLL, SigmoidRowSum, TargetLogSoftmax
from ._prepare import Prepared, class_dim_view

MULTILABEL_WEIGHTINGS = ("average", "by_class")


def softmax_terms(p: Prepared, gamma: float | None) -> torch.Tensor:
    """Unweighted per-sample softmax cross-entropy, or softmax focal loss when ``gamma`` is given.

    Focal: ``-(1 - p_y)**gamma * log p_y``; the modulator is ``exp(gamma * log(1 - p_y))`` with
    ``log(1 - p_y)`` from :func:`~longtail.functional._kernels.log1mexp`, so ``gamma < 1`` and
    ``p_y -> 1`` stay finite.
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


def sigmoid_terms(p: Prepared, gamma: float | None, alpha: float | None = None) -> torch.Tensor:
    """Unweighted one-vs-all terms ``(N, C, *)``: BCE, times ``(1 - p_t)**gamma`` when gamma is given.

    For float targets only (``p.hard`` False): class-index targets go through :class:`SigmoidRowSum`
    in :func:`sigmoid_loss`, which sums their terms over classes with a hand-written backward.
    A float target ``t`` uses ``p_t = p t + (1 - p)(1 - t)`` (as torchvision), i.e.
    ``log(1 - p_t) = logaddexp(log t + logsigmoid(-z), log(1 - t) + logsigmoid(z))``, which is the
    class-index form for ``t`` in {0, 1}. ``alpha`` (torchvision's) weighs positives by alpha and
    negatives by 1 - alpha. ``p.pos_weight`` (``BCEWithLogitsLoss``'s) multiplies the positive part of
    BCE, ``-[pw_c t log sigma(z) + (1 - t) log(1 - sigma(z))]``, before the modulator: for ``t = 1`` the
    focal term ``pw_c (1 - p)**gamma (-log p)``.
    """
    t = p.target
    if p.pos_weight is None:
        terms = F.binary_cross_entropy_with_logits(p.logits, t, reduction="none")
    else:
        pos_weight = class_dim_view(p.pos_weight, t.dim())
        terms = F.binary_cross_entropy_with_logits(p.logits, t, reduction="none", pos_weight=pos_weight)
    if gamma is not None:
        log_p, log_q = F.logsigmoid(p.logits), F.logsigmoid(-p.logits)
        # t = 0 and t = 1 take their exact one-sided forms; only 0 < t < 1 goes through logaddexp, fed a
        # safe t elsewhere. log(0) = -inf inside logaddexp gives NaN second derivatives (gradient penalties,
        # Hessian-vector products), even where the first derivative is right.
        negative, positive = t == 0, t == 1
        t_mid = torch.where(negative | positive, 0.5, t)
        mixed = torch.logaddexp(torch.log(t_mid) + log_q, torch.log1p(-t_mid) + log_p)
        log_one_minus_pt = torch.where(negative, log_p, torch.where(positive, log_q, mixed))
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
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Applies weights and the mask, then the reduction.

    ``mean`` divides the weighted sum by the number of non-ignored samples (the official CB code);
    ``weighted_mean`` by the sum of their weights (``F.cross_entropy(weight=...)``), or of
    ``normalizer`` when the weights were applied before (per class). A batch with nothing to
    average (every sample ignored, or every weight 0) gives 0, not NaN.

    ``sample_weight`` ``s_i`` multiplies each sample's loss together with its class weight ``w_i``:
    ``none`` gives ``s_i w_i l_i``, ``sum`` their sum, ``mean`` that sum over the number of non-ignored
    samples (Keras' ``sum_over_batch_size``), ``weighted_mean`` over ``sum_i s_i w_i`` (the
    weighted average of scikit-learn and PyTorch).
    """
    if normalizer is None:
        normalizer = weight_of_sample
    if sample_weight is not None:
        weight_of_sample = sample_weight if weight_of_sample is None else weight_of_sample * sample_weight
        normalizer = sample_weight if normalizer is None else normalizer * sample_weight
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


def softmax_loss(
    p: Prepared, gamma: float | None, reduction: str, out_dtype: torch.dtype, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Weighted, reduced softmax cross-entropy (``gamma=None``) or softmax focal loss.

    ``label_smoothing`` ``eps > 0`` goes through :func:`smoothed_softmax_loss`; ``eps = 0`` takes the
    paths below unchanged (bit for bit the loss without the argument).
    """
    if label_smoothing != 0.0:
        return smoothed_softmax_loss(p, gamma, reduction, out_dtype, label_smoothing)
    s = p.sample_weight
    if p.hard and gamma is None and reduction != "none":
        # The reductions are linear: reduce log p_y and negate the scalar, a pass over the samples fewer.
        log_prob = TargetLogSoftmax.apply(p.logits, p.target)
        return -reduce_loss(log_prob, sample_weights(p), p.valid, reduction, out_dtype, sample_weight=s)
    if p.hard or p.weight is None:
        return reduce_loss(softmax_terms(p, gamma), sample_weights(p), p.valid, reduction, out_dtype, sample_weight=s)
    # Soft targets with class weights: linear in the target, each class term weighted by its own
    # class (PyTorch's soft-target convention); weighted_mean divides by sum_c t_c w_c.
    weighted = p._replace(target=p.target * class_dim_view(p.weight, p.target.dim()))
    per_sample = softmax_terms(weighted, gamma)
    return reduce_loss(per_sample, None, None, reduction, out_dtype, normalizer=weighted.target.sum(1), sample_weight=s)


def smoothed_softmax_loss(
    p: Prepared, gamma: float | None, reduction: str, out_dtype: torch.dtype, label_smoothing: float
) -> torch.Tensor:
    """The softmax losses with label smoothing ``eps``: ``sum_c q_c term_c`` times the sample's weight.

    ``q = (1 - eps) onehot(y) + eps / C`` (probability targets ``t``: ``(1 - eps) t + eps / C``, as
    PyTorch), ``term_c = -log p_c`` or the focal ``-(1 - p_c)**gamma log p_c``. The sample's weight is
    that of its *unsmoothed* target: ``w_y`` for class indices, so each sample's loss is minimised at
    ``q`` whatever the class weights (PyTorch weighs the smoothing term of class ``c`` by ``w_c``
    instead, pytorch/pytorch#104776). Probability targets with class weights keep the soft-target
    form for the label mass and give the smoothing mass the sample's weight ``W = sum_c t_c w_c``:
    ``(1 - eps) sum_c t_c w_c term_c + eps / C * W * sum_c term_c``, normalised (``weighted_mean``) by
    ``W`` as without smoothing. Computed through ``log_softmax`` in autograd (no hand-written kernel).
    """
    eps = label_smoothing
    smooth = eps / p.logits.shape[1]
    log_prob = F.log_softmax(p.logits, dim=1)
    nll = -log_prob if gamma is None else FocalNLL.apply(log_prob, gamma)
    s = p.sample_weight
    if p.hard:
        at_target = nll.gather(1, p.target.unsqueeze(1)).squeeze(1)
        per_sample = (1.0 - eps) * at_target + smooth * nll.sum(1)
        return reduce_loss(per_sample, sample_weights(p), p.valid, reduction, out_dtype, sample_weight=s)
    if p.weight is None:
        smoothed = (1.0 - eps) * p.target + smooth
        return reduce_loss((smoothed * nll).sum(1), None, None, reduction, out_dtype, sample_weight=s)
    weighted_target = p.target * class_dim_view(p.weight, p.target.dim())
    mass = weighted_target.sum(1)  # W = sum_c t_c w_c, the sample's weight and weighted_mean's normaliser
    per_sample = (1.0 - eps) * (weighted_target * nll).sum(1) + smooth * mass * nll.sum(1)
    return reduce_loss(per_sample, None, None, reduction, out_dtype, normalizer=mass, sample_weight=s)


def sigmoid_loss(
    p: Prepared,
    gamma: float | None,
    reduction: str,
    out_dtype: torch.dtype,
    multilabel_weight: str = "average",
    alpha: float | None = None,
) -> torch.Tensor:
    """Weighted, reduced one-vs-all BCE (``gamma=None``) or sigmoid focal loss, summed over classes.

    With ``p.pos_weight``, class-index targets keep the :class:`SigmoidRowSum` kernel and add
    ``(pw_y - 1)`` times the target class's positive term (:func:`_extra_positive_term`).
    """
    s = p.sample_weight
    if p.hard:
        per_sample = SigmoidRowSum.apply(p.logits, p.target, gamma, alpha)
        if p.pos_weight is not None:
            per_sample = per_sample + _extra_positive_term(p, gamma, alpha)
        return reduce_loss(per_sample, sample_weights(p), p.valid, reduction, out_dtype, sample_weight=s)
    terms = sigmoid_terms(p, gamma, alpha)
    if p.weight is not None and multilabel_weight == "by_class":
        per_sample = (terms * class_dim_view(p.weight, terms.dim())).sum(1)
        return reduce_loss(per_sample, None, None, reduction, out_dtype, normalizer=p.weight.mean(), sample_weight=s)
    return reduce_loss(terms.sum(1), sample_weights(p), p.valid, reduction, out_dtype, sample_weight=s)


def _extra_positive_term(p: Prepared, gamma: float | None, alpha: float | None) -> torch.Tensor:
    """``(pw_y - 1) * a * m * (-log sigma(z_y))`` ``(N, *)``: what ``pos_weight`` adds to a class-index sample.

    The positive (target-class) term of :class:`SigmoidRowSum` is ``a m (-log sigma(z_y))`` with the
    modulator ``m = exp(gamma * logsigmoid(-z_y))`` (1 for BCE) and ``a = alpha`` (1 without); scaling it
    by ``pw_y`` adds ``(pw_y - 1)`` times it. Through autograd, on ``(N, *)`` only.
    """
    assert p.pos_weight is not None
    z_y = p.logits.gather(1, p.target.unsqueeze(1)).squeeze(1)
    term = -F.logsigmoid(z_y)
    if gamma is not None:
        term = torch.exp(gamma * F.logsigmoid(-z_y)) * term
    if alpha is not None:
        term = alpha * term
    pos_weight = p.pos_weight.index_select(0, p.target.reshape(-1)).view(p.target.shape)
    return (pos_weight - 1.0) * term


def check_multilabel_weight(value: str) -> str:
    return check_choice("multilabel_weight", value, MULTILABEL_WEIGHTINGS)


__all__ = [
    "MULTILABEL_WEIGHTINGS",
    "check_multilabel_weight",
    "reduce_loss",
    "sample_weights",
    "sigmoid_loss",
    "sigmoid_terms",
    "smoothed_softmax_loss",
    "softmax_loss",
    "softmax_terms",
]
