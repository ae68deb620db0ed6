"""effective_number and class_balanced_weights against hand-computed values and the paper's limits."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from longtail import class_balanced_weights, effective_number


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


def test_beta_near_one_is_stable_and_continuous():
    counts = [100000, 1000, 10]
    at_one = class_balanced_weights(counts, 1.0, dtype=torch.float64)
    for eps in [1e-6, 1e-9, 1e-12, 1e-15]:
        w = class_balanced_weights(counts, 1.0 - eps, dtype=torch.float64)
        assert torch.isfinite(w).all()
        assert w.numpy() == pytest.approx(at_one.numpy(), rel=max(eps * 1e5, 1e-9))


def test_naive_float32_form_fails_where_ours_does_not():
    # The naive 1 - beta**n in float32 rounds beta = 1 - 1e-8 to 1: weights become inf/NaN.
    beta32 = torch.tensor(1 - 1e-8, dtype=torch.float32)
    naive = (1 - beta32) / (1 - beta32 ** torch.tensor([10.0, 100.0]))
    assert not torch.isfinite(naive).all()
    ours = class_balanced_weights([10, 100], 1 - 1e-8, dtype=torch.float64)
    assert ours.tolist() == pytest.approx([2 * 10 / 11, 2 * 1 / 11], rel=1e-6)


@pytest.mark.parametrize("make", [list, np.array, torch.tensor, lambda c: torch.tensor(c, dtype=torch.float32)])
def test_counts_containers(make):
    expected = class_balanced_weights([30, 20, 10], 0.999)
    assert torch.equal(class_balanced_weights(make([30, 20, 10]), 0.999), expected)


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
