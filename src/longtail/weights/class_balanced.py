"""Effective number of samples and class-balanced weights (Cui et al., CVPR 2019), with one beta or one per class.

Beyond the paper: :func:`class_balanced_weights` warns (:class:`BetaRangeWarning`) when a beta makes the
weights nearly uniform or nearly inverse frequency for the given counts, and :func:`beta_range` /
:func:`beta_regime` say where beta does interpolate between the two; :func:`per_class_weights` takes one beta per
class (e.g. from :func:`longtail.prototypes.per_class_betas`). See ``docs/beta_from_data.md``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..checks import as_counts, as_real_vector, check_beta, check_choice

ZERO_COUNT_POLICIES = ("error", "ignore")


def _one_minus_beta_pow(counts: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """``1 - beta**n`` in float64 without cancellation: ``-expm1(n * log(beta))``, for one ``beta`` (a float) or
    one per class (a ``(C,)`` float64 tensor): the one kernel of the effective number.

    ``beta**n`` rounds to 1 long before beta does when beta is close to 1, so the naive form loses
    every digit; expm1/log1p keep full relative precision for any beta in [0, 1).
    """
    betas = torch.as_tensor(beta, dtype=torch.float64)
    log_beta = torch.log1p(-(1.0 - betas))  # -inf at beta 0
    # At beta 0, n * log(beta) is -inf for n > 0 and 0 * -inf = NaN at n = 0, where 0**0 = 1 (a class with no
    # samples covers nothing). The per-class form has always returned -0.0 there and the one-beta form +0.0: kept
    # bit for bit (both forms checked bit-identical to their old kernels over 15 million counts and betas).
    zero = 0.0 if betas.dim() else -0.0
    t = torch.where(betas > 0, counts * log_beta, torch.where(counts > 0, -math.inf, zero))
    return -torch.expm1(t)


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


#: Weights whose largest / smallest ratio is below this are "nearly uniform" (the loss is almost unweighted).
UNIFORM_RATIO = 1.1
#: Weights within this relative distance of the inverse-frequency weights, for every class, are "nearly inverse
#: frequency" (both normalised to the same sum).
INVERSE_FREQUENCY_TOLERANCE = 0.05

REGIMES = ("uniform", "inverse_frequency", "nearly_uniform", "nearly_inverse_frequency", "interpolating", "balanced")


class BetaRangeWarning(UserWarning):
    """A class-balanced ``beta`` that gives nearly uniform or nearly inverse-frequency weights for these counts.

    Raised (as a warning, once per call) by :func:`class_balanced_weights` and :class:`longtail.ClassBalancedLoss`;
    the message names the range of beta where the weights interpolate (:func:`beta_range`). A check beyond the
    paper. Silence it with the standard filters, e.g.
    ``warnings.filterwarnings("ignore", category=longtail.BetaRangeWarning)``.
    """


def beta_range(counts: Any) -> tuple[float, float]:
    r"""The betas where :math:`1 / (1 - \beta)` lies between the smallest and the largest positive count:
    ``(max(0, 1 - 1 / n_min), 1 - 1 / n_max)``.

    An extension beyond the paper. :math:`E(n) \approx n` while :math:`n \ll 1 / (1 - \beta)` and saturates at
    :math:`1 / (1 - \beta)` for :math:`n \gg 1 / (1 - \beta)`, so a beta below this range gives every class about
    the same effective number (nearly uniform weights) and a beta above it gives :math:`E(n) \approx n` for every
    class (nearly inverse frequency). Inside it, and a little beyond its ends, the weights interpolate; whether a
    given beta is *nearly* uniform / inverse frequency is :func:`beta_regime`'s question.

    Example:
        >>> beta_range([5000, 500, 50])
        (0.98, 0.9998)
    """
    n = as_counts(counts)
    present = n[n > 0]
    if present.numel() == 0:
        raise ValueError("counts must have at least one positive class; got all zeros")
    n_min, n_max = float(present.min()), float(present.max())
    return max(0.0, 1.0 - 1.0 / n_min), max(0.0, 1.0 - 1.0 / n_max)


def _regime(n: torch.Tensor, beta: float, weight: torch.Tensor) -> tuple[str, float]:
    """The regime of float64 ``weight`` (any scale) for counts ``n`` at ``beta``, and the number it was judged by
    (the largest / smallest weight ratio, or the largest relative distance to inverse frequency)."""
    if beta == 0.0:
        return "uniform", 1.0
    if beta == 1.0:
        return "inverse_frequency", 0.0
    present = n > 0
    counts, w = n[present], weight[present]
    if counts.numel() < 2 or not bool(torch.isfinite(w).all()) or not bool((w > 0).all()):
        return "balanced", 1.0
    if float(counts.max() / counts.min()) < UNIFORM_RATIO:
        # The counts are nearly balanced: inverse frequency itself is nearly uniform, no beta changes much.
        return "balanced", float(counts.max() / counts.min())
    ratio = float(w.max() / w.min())
    if ratio < UNIFORM_RATIO:
        return "nearly_uniform", ratio
    inverse = 1.0 / counts
    deviation = float(((w / w.sum()) / (inverse / inverse.sum()) - 1.0).abs().max())
    if deviation <= INVERSE_FREQUENCY_TOLERANCE:
        return "nearly_inverse_frequency", deviation
    return "interpolating", ratio


def beta_regime(counts: Any, beta: float, *, zero_counts: str = "error") -> str:
    """What ``beta`` makes of the class-balanced weights for ``counts`` (an extension beyond the paper):

    - ``"uniform"`` (``beta == 0``) and ``"inverse_frequency"`` (``beta == 1``): the deliberate ends;
    - ``"nearly_uniform"``: largest / smallest weight below :data:`UNIFORM_RATIO` (1.1), the loss almost
      unweighted;
    - ``"nearly_inverse_frequency"``: every weight within :data:`INVERSE_FREQUENCY_TOLERANCE` (5 %) of the
      inverse-frequency weights (both normalised to the same sum);
    - ``"interpolating"``: neither;
    - ``"balanced"``: fewer than two present classes, or counts within a factor 1.1 of each other, where every
      beta gives nearly the same weights.

    The two "nearly" regimes are the ones :class:`BetaRangeWarning` warns about.

    Example:
        >>> beta_regime([10_000_000, 2_000_000, 50_000], 0.9999)
        'nearly_uniform'
        >>> beta_regime([5000, 500, 50], 0.9999)
        'interpolating'
    """
    n = as_counts(counts)
    beta = check_beta(beta)
    weight = _class_balanced_weights(n, beta, normalize=True, zero_counts=zero_counts)
    return _regime(n, beta, weight)[0]


def _format_beta(value: float, digits: int) -> str:
    return f"{value:.{digits}g}"


def _message(n: torch.Tensor, beta: float, regime: str, measure: float) -> str:
    present = n[n > 0]
    n_min, n_max = float(present.min()), float(present.max())
    low, high = beta_range(n)
    digits = max(3, int(math.floor(math.log10(max(n_max, 1.0)))) + 2)
    where = (f"with counts from {n_min:.10g} to {n_max:.10g} the weights interpolate between uniform and inverse "
             f"frequency where 1/(1 - beta) lies between the smallest and the largest count: beta in "
             f"[1 - 1/{n_min:.10g}, 1 - 1/{n_max:.10g}] = [{_format_beta(low, digits)}, {_format_beta(high, digits)}]")
    if regime == "nearly_uniform":
        what = (f"class-balanced weights are nearly uniform at beta={beta!r} (largest / smallest weight "
                f"{measure:.4g} < {UNIFORM_RATIO:g}): the loss is almost unweighted")
    elif regime == "nearly_inverse_frequency":
        what = (f"class-balanced weights are nearly inverse frequency at beta={beta!r} (every weight within "
                f"{100 * measure:.2g}% of the inverse-frequency weights; pass beta=1 for exactly that)")
    elif regime == "interpolating":
        what = (f"class-balanced weights at beta={beta!r} still interpolate (largest / smallest weight {measure:.4g}; "
                f"uniform 1, inverse frequency {n_max / n_min:.4g})")
    else:
        what = f"class-balanced weights at beta={beta!r} are {regime.replace('_', ' ')}"
    return f"{what}; {where}"


def beta_range_message(counts: Any, beta: float, *, zero_counts: str = "error") -> str:
    """The sentence that says what ``beta`` makes of the weights for ``counts`` (:func:`beta_regime`) and where the
    weights interpolate (:func:`beta_range`): the :class:`BetaRangeWarning`'s, and ``longtail weights``'s."""
    n = as_counts(counts)
    beta = check_beta(beta)
    regime, measure = _regime(n, beta, _class_balanced_weights(n, beta, normalize=True, zero_counts=zero_counts))
    return _message(n, beta, regime, measure)


def _warn_beta_range(n: torch.Tensor, beta: float, weight: torch.Tensor, stacklevel: int) -> None:
    """Warns once (:class:`BetaRangeWarning`) when ``weight`` (float64) is nearly uniform or nearly inverse
    frequency; never for ``beta`` 0 or 1 or a single class."""
    regime, measure = _regime(n, beta, weight)
    if regime in ("nearly_uniform", "nearly_inverse_frequency"):
        message = _message(n, beta, regime, measure)
        warnings.warn(f"{message} (a check beyond the paper; silence it with warnings.filterwarnings('ignore', "
                      "category=longtail.BetaRangeWarning))", BetaRangeWarning, stacklevel=stacklevel + 1)


def present_classes(n: torch.Tensor, zero_counts: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes with a positive count (a bool mask) and the counts with the absent ones set to 1 (safe to divide
    by), after the ``zero_counts`` policy: ``"error"`` refuses an absent class, ``"ignore"`` lets it through (its
    weight is then set to 0 by the caller); all-zero counts are refused either way."""
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
    return present, torch.where(present, n, torch.ones_like(n))


def _class_balanced_weights(n: torch.Tensor, beta: float, *, normalize: bool, zero_counts: str) -> torch.Tensor:
    """:func:`class_balanced_weights` of checked counts ``n`` and ``beta`` in float64, without the warning."""
    present, safe_n = present_classes(n, zero_counts)
    denominator = safe_n if beta == 1.0 else _one_minus_beta_pow(safe_n, beta)
    weight = (1.0 - beta if beta < 1.0 else 1.0) / denominator
    weight = torch.where(present, weight, torch.zeros_like(weight))
    overflows = not bool(torch.isfinite(weight.sum()))
    if normalize and (overflows or not bool((denominator >= torch.finfo(torch.float64).tiny).all())):
        # A denominator below the smallest normal float64 (a subnormal count, e.g. 1e-320) makes its weight
        # overflow to inf, and the rescaling inf / inf gives NaN; finite weights near the largest float64 (four
        # counts of 2.2e-308 at beta 1: weights 4.5e307) have a sum that overflows, and the rescaling gives 0. The
        # normalised weights are ratios of weights, so compute them in log space, shifted by the largest: the
        # limit puts all the weight on the smallest counts. (Ordinary counts keep the direct form above, bit for
        # bit.)
        log_weight = -torch.log(safe_n) if beta == 1.0 else math.log1p(-beta) - _log_one_minus_beta_pow(safe_n, beta)
        log_weight = torch.where(present, log_weight, torch.full_like(log_weight, -math.inf))
        weight = torch.exp(log_weight - log_weight.max())
    if normalize:
        weight = weight * (present.sum() / weight.sum())
    return weight


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

    Warns (:class:`BetaRangeWarning`, once per call; an extension beyond the paper) when the weights come out
    nearly uniform (largest / smallest below 1.1) or nearly inverse frequency (every weight within 5 % of it),
    naming the range of beta where they interpolate (:func:`beta_range`); with large counts a beta such as
    0.9999 gives weights of about 1 for every class. ``beta`` 0 and 1 (deliberate) and a single class never warn.

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
    weight = _class_balanced_weights(n, beta, normalize=normalize, zero_counts=zero_counts)
    _warn_beta_range(n, beta, weight, stacklevel=2)
    return weight.to(dtype)


# --- one beta per class (an extension beyond the paper; betas from data: longtail.prototypes) ----------


def _as_betas(betas: Any, num_classes: int) -> torch.Tensor:
    b = as_real_vector(betas, "betas")
    if b.numel() != num_classes:
        raise ValueError(f"betas must have shape ({num_classes},), one per class; got {tuple(b.shape)}")
    if bool(torch.isnan(b).any()) or bool(((b < 0) | (b > 1)).any()):
        raise ValueError(f"betas must be in [0, 1] for every class; got {b.tolist()}")
    return b


def per_class_effective_number(counts: Any, betas: Any) -> torch.Tensor:
    """``E_c = (1 - beta_c ** n_c) / (1 - beta_c)`` (float64 ``(C,)``); ``n_c`` itself where ``beta_c = 1``."""
    n = as_counts(counts)
    b = _as_betas(betas, n.numel())
    one = b == 1.0
    e = _one_minus_beta_pow(n, b) / torch.where(one, torch.ones_like(b), 1.0 - b)
    return torch.where(one, n, e)


def per_class_weights(
    counts: Any,
    betas: Any,
    *,
    normalize: bool = True,
    zero_counts: str = "error",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Class-balanced weights with one beta per class, ``w_c = (1 - beta_c) / (1 - beta_c ** n_c) = 1 / E_c``,
    rescaled to sum to the number of (present) classes. An extension beyond the paper.

    With every ``beta_c`` equal to one ``beta`` this equals :func:`longtail.class_balanced_weights` (to float64
    round-off). ``zero_counts``: ``"error"`` refuses a class with count 0, ``"ignore"`` gives it weight 0.

    Example:
        >>> per_class_weights([100, 10, 1], [0.99, 0.9, 0.0], dtype=torch.float64)
        tensor([0.0405, 0.3939, 2.5656], dtype=torch.float64)
    """
    n = as_counts(counts)
    b = _as_betas(betas, n.numel())
    present, safe_n = present_classes(n, zero_counts)
    effective = per_class_effective_number(safe_n, b)
    weight = torch.where(present, 1.0 / effective, torch.zeros_like(effective))
    if normalize and not bool(torch.isfinite(weight.sum())):
        # A weight or the sum of the weights past the largest float64 (counts near or below the smallest normal
        # float64) would rescale to NaN or 0: the normalised weights are ratios, E_min / E_c. (Ordinary counts keep
        # the direct form, bit for bit.)
        effective = torch.where(present, effective, torch.full_like(effective, math.inf))
        weight = torch.where(present, effective.min() / effective, torch.zeros_like(effective))
    if normalize:
        weight = weight * (present.sum() / weight.sum())
    return weight.to(dtype)
