"""effective_number and class_balanced_weights against hand-computed values and the paper's limits."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import longtail
from longtail import (
    BetaRangeWarning,
    ClassBalancedLoss,
    beta_range,
    beta_regime,
    class_balanced_weights,
    effective_number,
)
from longtail.cli import main


def test_effective_number_hand_computed():
    # E(n) = (1 - 0.9**n) / 0.1
    expected = [1.0, (1 - 0.9**10) / 0.1, (1 - 0.9**100) / 0.1]
    got = effective_number([1, 10, 100], beta=0.9)
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx(expected, rel=1e-14)


def test_effective_number_limits():
    counts = [0, 1, 7, 1000]
    assert effective_number(counts, 0.0).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert effective_number(counts, 1.0).tolist() == [0.0, 1.0, 7.0, 1000.0]
    # E(n) -> n as beta -> 1, from below, continuously
    near = effective_number(counts, 1 - 1e-12)
    assert near.tolist() == pytest.approx([0.0, 1.0, 7.0, 1000.0], rel=1e-8)


def test_weights_hand_computed_three_classes():
    counts, beta = [100, 10, 1], 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    expected = [3 * r / sum(raw) for r in raw]
    got = class_balanced_weights(counts, beta, dtype=torch.float64)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    assert got.tolist() == pytest.approx([0.04223747, 0.28004361, 2.67771892], rel=1e-6)
    unnormalized = class_balanced_weights(counts, beta, normalize=False, dtype=torch.float64)
    assert unnormalized.tolist() == pytest.approx(raw, rel=1e-12)


def test_weights_sum_to_num_classes_and_default_dtype():
    w = class_balanced_weights(torch.tensor([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]), 0.9999)
    assert w.dtype == torch.float32 and w.shape == (10,)
    assert float(w.sum()) == pytest.approx(10.0, rel=1e-6)
    assert bool((w[1:] > w[:-1]).all())  # rarer class, larger weight


def test_beta_zero_gives_ones_and_beta_one_gives_inverse_frequency():
    counts = [100, 10, 1]
    assert class_balanced_weights(counts, 0.0).tolist() == [1.0, 1.0, 1.0]
    inverse = np.array([1 / 100, 1 / 10, 1.0])
    expected = 3 * inverse / inverse.sum()
    assert class_balanced_weights(counts, 1.0, dtype=torch.float64).numpy() == pytest.approx(expected, rel=1e-14)


@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # betas next to 1, on purpose
def test_beta_near_one_is_stable_and_continuous():
    counts = [100000, 1000, 10]
    at_one = class_balanced_weights(counts, 1.0, dtype=torch.float64)
    for eps in [1e-6, 1e-9, 1e-12, 1e-15]:
        w = class_balanced_weights(counts, 1.0 - eps, dtype=torch.float64)
        assert torch.isfinite(w).all()
        assert w.numpy() == pytest.approx(at_one.numpy(), rel=max(eps * 1e5, 1e-9))


@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # beta 1 - 1e-8, on purpose
def test_naive_float32_form_fails_where_ours_does_not():
    # The naive 1 - beta**n in float32 rounds beta = 1 - 1e-8 to 1: weights become inf/NaN.
    beta32 = torch.tensor(1 - 1e-8, dtype=torch.float32)
    naive = (1 - beta32) / (1 - beta32 ** torch.tensor([10.0, 100.0]))
    assert not torch.isfinite(naive).all()
    ours = class_balanced_weights([10, 100], 1 - 1e-8, dtype=torch.float64)
    assert ours.tolist() == pytest.approx([2 * 10 / 11, 2 * 1 / 11], rel=1e-6)


@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # nearly inverse frequency, irrelevant here
@pytest.mark.parametrize("make", [list, np.array, torch.tensor, lambda c: torch.tensor(c, dtype=torch.float32)])
def test_counts_containers(make):
    expected = class_balanced_weights([30, 20, 10], 0.999)
    assert torch.equal(class_balanced_weights(make([30, 20, 10]), 0.999), expected)


@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # nearly inverse frequency, irrelevant here
def test_zero_counts_error_and_ignore():
    with pytest.raises(ValueError, match=r"got 0 for classes \[1\]"):
        class_balanced_weights([10, 0, 5], 0.99)
    w = class_balanced_weights([10, 0, 5], 0.99, zero_counts="ignore", dtype=torch.float64)
    assert w[1] == 0
    assert float(w.sum()) == pytest.approx(2.0, rel=1e-12)
    present = class_balanced_weights([10, 5], 0.99, dtype=torch.float64)
    assert w[[0, 2]].tolist() == pytest.approx(present.tolist(), rel=1e-12)
    with pytest.raises(ValueError, match="at least one positive"):
        class_balanced_weights([0, 0], 0.99, zero_counts="ignore")


@pytest.mark.parametrize(
    "counts, beta, error, match",
    [
        ([10, 5], -0.1, ValueError, r"beta must be in \[0, 1\]; got -0.1"),
        ([10, 5], 1.5, ValueError, r"beta must be in \[0, 1\]; got 1.5"),
        ([10, 5], float("nan"), ValueError, "beta must be a number; got NaN"),
        ([10, 5], "0.9", TypeError, "beta must be a real number; got str"),
        ([10, 5], True, TypeError, "beta must be a real number; got bool"),
        ([[10, 5]], 0.9, ValueError, r"counts must be 1-D .* got shape \(1, 2\)"),
        ([], 0.9, ValueError, "at least one class"),
        ([10, -1], 0.9, ValueError, r"non-negative; got negative counts for classes \[1\]"),
        ([10, float("nan")], 0.9, ValueError, "counts must be finite"),
        ("abc", 0.9, TypeError, "counts must be a list"),
        ([10, 5], 0.9, None, None),
    ],
)
def test_bad_arguments(counts, beta, error, match):
    if error is None:
        class_balanced_weights(counts, beta)
        return
    with pytest.raises(error, match=match):
        class_balanced_weights(counts, beta)
    with pytest.raises(error, match=match):
        effective_number(counts, beta)


def test_zero_counts_policy_name_checked():
    with pytest.raises(ValueError, match="zero_counts must be one of 'error', 'ignore'; got 'skip'"):
        class_balanced_weights([1, 2], 0.9, zero_counts="skip")


def test_paper_weights_cifar10_lt_rho100():
    # CIFAR-10-LT, imbalance 100 (n_max 5000): int(5000 * 100 ** (-i / 9)).
    counts = [int(5000 * 100 ** (-i / 9)) for i in range(10)]
    assert sum(counts) == 12406
    w = class_balanced_weights(counts, 0.9999, dtype=torch.float64)
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in counts]
    assert w.tolist() == pytest.approx([10 * r / math.fsum(raw) for r in raw], rel=1e-12)


# --- subnormal counts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.9, 0.5, 1 - 1e-12, 1.0])
def test_subnormal_count_gets_the_limit_not_nan(beta):
    # The weight of a count of 1e-320 is ~1e320 (inf in float64); the rescaling inf / inf gave [nan, 0].
    # The limit as the count goes to 0: all the weight on the smallest count.
    assert class_balanced_weights([1e-320, 1], beta).tolist() == [2.0, 0.0]
    assert class_balanced_weights([1e-320, 1e-320, 0, 3], beta, zero_counts="ignore").tolist() == [1.5, 1.5, 0.0, 0.0]
    # Two subnormal counts keep their ratio: w ~ 1 / n near 0 (5e-324 and 1e-323 are 1 and 2 times the smallest).
    w = class_balanced_weights([5e-324, 1e-323, 1.0], beta, dtype=torch.float64)
    assert w.tolist()[:2] == pytest.approx([2.0, 1.0], rel=1e-12)
    assert 0 <= float(w[2]) < 1e-300


def test_ordinary_counts_are_unchanged_bit_for_bit():
    # The log-space form is used only where a denominator is subnormal; ordinary counts keep the direct form.
    n = torch.tensor([5000.0, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50, 0.5, 1e-300], dtype=torch.float64)
    for beta in [0.0, 0.9, 0.999, 0.9999, 1.0]:
        if beta == 1.0:
            raw = 1.0 / n
        elif beta == 0.0:
            raw = torch.ones_like(n)
        else:
            raw = (1.0 - beta) / -torch.expm1(n * torch.log1p(torch.tensor(beta - 1.0, dtype=torch.float64)))
        expected = raw * (torch.tensor(len(n)) / raw.sum())  # tensor / tensor, as the library rescales
        assert torch.equal(class_balanced_weights(n, beta, dtype=torch.float64), expected)


COUNT = st.one_of(
    st.floats(0.0, 1e12),
    st.floats(5e-324, 1e-300, allow_subnormal=True),
    st.sampled_from([0.0, 5e-324, 1e-320, 2.2250738585072014e-308, 1e-308, 1.0, 1e12]),
)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # any beta, on purpose
@settings(max_examples=300, deadline=None)
@given(counts=st.lists(COUNT, min_size=1, max_size=8), beta=st.floats(0.0, 1.0))
def test_weights_are_finite_non_negative_and_sum_to_the_present_classes(counts, beta):
    assume(any(c > 0 for c in counts))
    w = class_balanced_weights(counts, beta, zero_counts="ignore", dtype=torch.float64)
    present = sum(c > 0 for c in counts)
    assert bool(torch.isfinite(w).all()) and bool((w >= 0).all())
    assert float(w.sum()) == pytest.approx(present, rel=1e-9)
    assert all(float(w[i]) == 0.0 for i, c in enumerate(counts) if c == 0)
    # Rarer classes never get less weight (1 / E(n) falls as n grows).
    order = sorted((c, float(w[i])) for i, c in enumerate(counts) if c > 0)
    assert all(a[1] >= b[1] * (1 - 1e-9) for a, b in zip(order, order[1:]))


# --- BetaRangeWarning: nearly uniform / nearly inverse-frequency weights (beyond the paper) ----------------------

CIFAR10_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _no_beta_warning():
    """A context in which a BetaRangeWarning fails the test."""
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("error", BetaRangeWarning)
    return context


def test_large_counts_at_beta_0_9999_warn_nearly_uniform_with_the_range():
    with pytest.warns(BetaRangeWarning) as record:
        w = class_balanced_weights([1e7, 2e6, 5e4], 0.9999, dtype=torch.float64)
    assert len(record) == 1  # once per call
    assert w.tolist() == pytest.approx([0.998, 0.998, 1.005], abs=1e-3)  # the measured example: all about 1
    message = str(record[0].message)
    assert "nearly uniform at beta=0.9999" in message and "largest / smallest weight 1.007 < 1.1" in message
    assert "beta in [1 - 1/50000, 1 - 1/10000000] = [0.99998, 0.9999999]" in message
    assert record[0].filename == __file__  # attributed to the caller
    assert issubclass(BetaRangeWarning, UserWarning) and longtail.BetaRangeWarning is BetaRangeWarning


def test_cifar10_lt_at_the_papers_betas_does_not_warn_but_beta_0_9_does():
    context = _no_beta_warning()
    try:
        for beta in (0.99, 0.999, 0.9999):  # 0.9999 is outside [0.98, 0.9998] yet still interpolates (ratio 79)
            class_balanced_weights(CIFAR10_LT, beta)
            ClassBalancedLoss(CIFAR10_LT, beta=beta)
    finally:
        context.__exit__(None, None, None)
    assert beta_regime(CIFAR10_LT, 0.9999) == "interpolating"
    with pytest.warns(BetaRangeWarning, match=r"nearly uniform at beta=0.9 .*\[0.98, 0.9998\]"):
        class_balanced_weights(CIFAR10_LT, 0.9)


def test_small_counts_at_a_large_beta_warn_nearly_inverse_frequency():
    counts = [60, 40, 30, 20, 15, 11, 9, 8, 7, 6]
    with pytest.warns(BetaRangeWarning, match=r"nearly inverse frequency at beta=0.9999 \(every weight within 0.24% "
                      r"of the inverse-frequency weights; pass beta=1 .*\[1 - 1/6, 1 - 1/60\] = \[0.833, 0.983\]"):
        class_balanced_weights(counts, 0.9999)
    assert beta_regime(counts, 0.9999) == "nearly_inverse_frequency"
    assert beta_regime(counts, 0.9) == "interpolating"


def test_deliberate_ends_single_classes_and_balanced_counts_do_not_warn():
    context = _no_beta_warning()
    try:
        for counts in ([1e7, 2e6, 5e4], [5, 10, 0], CIFAR10_LT):
            for beta in (0.0, 1.0):
                class_balanced_weights(counts, beta, zero_counts="ignore")
                ClassBalancedLoss(counts, beta=beta, zero_counts="ignore")
        class_balanced_weights([1000], 0.5)  # one class
        class_balanced_weights([1000, 0], 0.5, zero_counts="ignore")  # one present class
        class_balanced_weights([1000, 1050, 1020], 0.9)  # within 1.1 of each other: every beta is about uniform
        class_balanced_weights([1000, 1050, 1020], 0.99999)
    finally:
        context.__exit__(None, None, None)
    assert beta_regime([1000, 1050], 0.9) == "balanced" and beta_regime([7], 0.9) == "balanced"
    assert beta_regime([5, 1], 0.0) == "uniform" and beta_regime([5, 1], 1.0) == "inverse_frequency"


def test_class_balanced_loss_warns_once_at_construction_from_the_callers_line():
    with pytest.warns(BetaRangeWarning, match="nearly uniform at beta=0.9999") as record:
        criterion = ClassBalancedLoss([1e7, 2e6, 5e4], beta=0.9999, loss="focal", gamma=1.0)
    assert len(record) == 1 and record[0].filename == __file__
    assert criterion.weight.tolist() == pytest.approx([0.998, 0.998, 1.005], abs=1e-3)
    with pytest.raises(ValueError, match="loss must be one of"):  # a refused call raises and does not warn first
        context = _no_beta_warning()
        try:
            ClassBalancedLoss([1e7, 2e6, 5e4], beta=0.9999, loss="nope")
        finally:
            context.__exit__(None, None, None)


def test_the_warning_is_silenced_by_the_standard_filters():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=BetaRangeWarning)
        class_balanced_weights([1e7, 2e6, 5e4], 0.9999)
        ClassBalancedLoss([1e7, 2e6, 5e4], beta=0.9999)
    assert record == []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="class-balanced weights are nearly")
        class_balanced_weights([1e7, 2e6, 5e4], 0.9999)
    assert record == []


def test_the_warning_leaves_the_weights_bit_for_bit():
    n = torch.tensor([1e7, 2e6, 5e4], dtype=torch.float64)
    raw = (1.0 - 0.9999) / -torch.expm1(n * torch.log1p(torch.tensor(0.9999 - 1.0, dtype=torch.float64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaRangeWarning)
        got = class_balanced_weights(n, 0.9999, dtype=torch.float64)
        loss_weight = ClassBalancedLoss(n, beta=0.9999).weight
    assert torch.equal(got, raw * (torch.tensor(3) / raw.sum()))
    assert torch.equal(loss_weight, got.float())


def test_beta_range():
    assert beta_range([5000, 500, 50]) == (0.98, 0.9998)
    assert beta_range([1, 10, 0]) == (0.0, 0.9)
    assert beta_range([0.5, 4]) == (0.0, 0.75)
    with pytest.raises(ValueError, match="at least one positive class"):
        beta_range([0, 0])


def test_weights_command_prints_the_range_for_each_beta_outside_it(capsys):
    assert main(["weights", "--counts", "10000000,2000000,50000", "--beta", "0.99999,0.9999"]) == 0
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["1e+07", "2e+06", "50000"]  # the table is unchanged
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longtail weights: beta 0.9999 is outside the range: ")
    assert "nearly uniform" in lines[0] and "[0.99998, 0.9999999]" in lines[0]
    # Inside the range, or deliberate (0, 1): no line.
    assert main(["weights", "--counts", "500,50,5", "--beta", "0,0.99,1"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["weights", "--counts", "5000,2997,1796,1077,645,387,232,139,83,50"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[3] for line in lines] == ["0.9", "0.9999"]
    assert "nearly uniform" in lines[0] and "still interpolate (largest / smallest weight 78.89" in lines[1]


def test_weights_whose_sum_overflows_float64_still_sum_to_the_classes():
    # Four counts at the smallest normal float64 and beta 1: each weight 1/n = 4.5e307 is finite but their sum is
    # not, and the plain rescaling gave weights of 0 (found by the property test below, 2026-12-08).
    counts = [2.2250738585072014e-308] * 4
    w = class_balanced_weights(counts, 1.0, zero_counts="ignore", dtype=torch.float64)
    assert w.tolist() == [1.0, 1.0, 1.0, 1.0]
