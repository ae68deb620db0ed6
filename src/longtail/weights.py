"""Effective number of samples and class-balanced weights (Cui et al., CVPR 2019)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .checks import as_counts, check_beta, check_choice

ZERO_COUNT_POLICIES = ("error", "ignore")


def _one_minus_beta_pow(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """``1 - beta**n`` in float64 without cancellation: ``-expm1(n * log(beta))``.

    ``beta**n`` rounds to 1 long before beta does when beta is close to 1, so the naive form loses
    every digit; expm1/log1p keep full relative precision for any beta in [0, 1).
    """
    if beta == 0.0:
        # 0**0 = 1 (a class with no samples covers nothing); log(0) would give 0 * -inf = NaN.
        return (counts > 0).to(torch.float64)
    log_beta = torch.log1p(torch.tensor(-(1.0 - beta), dtype=torch.float64))
    return -torch.expm1(counts * log_beta)


def _log_one_minus_beta_pow(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """``log(1 - beta**n)`` for counts ``n > 0`` and ``beta`` in ``(0, 1)``, finite even where ``1 - beta**n`` is
    subnormal or underflows to 0 (a subnormal count such as 1e-320).

    ``1 - beta**n = -expm1(t)`` with ``t = n log(beta)``. For tiny ``|t|`` it equals ``-t`` to within ``|t| / 2``
    relative, and ``log(-t) = log(n) + log(-log(beta))`` is taken from the two factors, so the product ``t``, which
    may be subnormal or 0, never enters.
    """
    log_beta = math.log1p(beta - 1.0)
    t = counts * log_beta
    tiny = t.abs() < 1e-150
    return torch.where(tiny, torch.log(counts) + math.log(-log_beta), torch.log(-torch.expm1(t)))


def effective_number(counts: Any, beta: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Effective number of samples per class, :math:`E(n) = (1 - \beta^n) / (1 - \beta)`.

    :math:`E(n) = 1` for :math:`n \ge 1` at ``beta = 0`` (all samples overlap) and
    :math:`E(n) \to n` as :math:`\beta \to 1`; ``beta = 1`` returns that limit, ``n`` itself.
    Computed in float64 with the stable form of ``1 - beta**n``.

    Args:
        counts: per-class sample counts, shape ``(C,)`` (list, numpy array or tensor), non-negative.
        beta: in ``[0, 1]``; the paper writes ``beta = (N - 1) / N`` for ``N`` unique prototypes.
        dtype: floating dtype of the result.

    Returns:
        Tensor of shape ``(C,)``.

    Example:
        >>> effective_number([1, 10, 100], beta=0.9)
        tensor([1.0000, 6.5132, 9.9997], dtype=torch.float64)
    """
    n = as_counts(counts)
    beta = check_beta(beta)
    if beta == 1.0:
        return n.to(dtype)
    return (_one_minus_beta_pow(n, beta) / (1.0 - beta)).to(dtype)


def class_balanced_weights(
    counts: Any,
    beta: float,
    *,
    normalize: bool = True,
    zero_counts: str = "error",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Class-balanced weights :math:`w_c = (1 - \beta) / (1 - \beta^{n_c}) = 1 / E(n_c)`.

    With ``normalize=True`` (the paper's section 4 and the official code) the weights are rescaled
    to sum to the number of classes, so the loss keeps the scale of the unweighted loss:
    ``beta = 0`` gives all ones and ``beta = 1`` gives inverse frequency rescaled to sum to ``C``.

    Args:
        counts: per-class training counts, shape ``(C,)``. Counts over the whole training set,
            never a batch (see :func:`longtail.class_counts`).
        beta: in ``[0, 1]``.
        normalize: rescale to ``sum(w) == C`` (or the number of present classes, see below).
        zero_counts: what to do with a class that has no samples (its weight would be infinite):
            ``"error"`` raises; ``"ignore"`` gives it weight 0 and normalises over the present
            classes only, so the weights sum to the number of present classes.
        dtype: floating dtype of the result (computed in float64).

    Returns:
        Tensor of shape ``(C,)``.

    Example:
        >>> class_balanced_weights([100, 10, 1], beta=0.99)
        tensor([0.0422, 0.2800, 2.6777])
    """
    n = as_counts(counts)
    beta = check_beta(beta)
    check_choice("zero_counts", zero_counts, ZERO_COUNT_POLICIES)
    present = n > 0
    if not bool(present.all()):
        if zero_counts == "error":
            missing = torch.nonzero(~present).flatten().tolist()
            raise ValueError(
                f"counts must be positive for every class, got 0 for classes {missing}; pass "
                "zero_counts='ignore' to give absent classes weight 0"
            )
        if not bool(present.any()):
            raise ValueError("counts must have at least one positive class; got all zeros")
    safe_n = torch.where(present, n, torch.ones_like(n))
    denominator = safe_n if beta == 1.0 else _one_minus_beta_pow(safe_n, beta)
    weight = (1.0 - beta if beta < 1.0 else 1.0) / denominator
    weight = torch.where(present, weight, torch.zeros_like(weight))
    if normalize and not bool((denominator >= torch.finfo(torch.float64).tiny).all()):
        # A denominator below the smallest normal float64 (a subnormal count, e.g. 1e-320) makes its weight
        # overflow to inf, and the rescaling inf / inf gives NaN. The normalised weights are ratios of weights,
        # so compute them in log space, shifted by the largest: the limit puts all the weight on the smallest
        # counts. (Ordinary counts keep the direct form above, bit for bit.)
        log_weight = -torch.log(safe_n) if beta == 1.0 else math.log1p(-beta) - _log_one_minus_beta_pow(safe_n, beta)
        log_weight = torch.where(present, log_weight, torch.full_like(log_weight, -math.inf))
        weight = torch.exp(log_weight - log_weight.max())
    if normalize:
        weight = weight * (present.sum() / weight.sum())
    return weight.to(dtype)
