"""Hypothesis property tests over shapes, dtypes, targets and extreme logits."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from longtail.functional import class_balanced_loss, sigmoid_focal_loss

LOSSES = ["softmax", "sigmoid", "focal", "softmax_focal"]
FOCAL = ("focal", "softmax_focal")


def _gamma(loss, gamma):
    """The drawn gamma for a focal loss; 0 for softmax / sigmoid, which have no focal term and refuse one."""
    return gamma if loss in FOCAL else 0.0
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@st.composite
def problems(draw):
    n = draw(st.integers(1, 6))
    c = draw(st.integers(2, 6))
    extra = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1.0, 10.0, 100.0, 1e4, 1e6]))
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((n, c, *extra), generator=gen, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n, *extra), generator=gen)
    if draw(st.booleans()):
        y = torch.where(torch.rand(y.shape, generator=gen) < 0.2, torch.full_like(y, -100), y)
    w = torch.rand(c, generator=gen, dtype=torch.float64) * 3
    return z, y, w


@given(
    problem=problems(),
    loss=st.sampled_from(LOSSES),
    gamma=st.floats(0.0, 5.0),
    dtype=st.sampled_from(DTYPES),
    reduction=st.sampled_from(["mean", "weighted_mean", "sum", "none"]),
)
def test_finite_nonnegative_in_input_dtype(problem, loss, gamma, dtype, reduction):
    z, y, w = problem
    gamma = _gamma(loss, gamma)
    largest = torch.finfo(dtype).max
    z = z.clamp(-largest, largest).to(dtype).requires_grad_(True)  # a finite input in every dtype
    out = class_balanced_loss(z, y, w.float(), loss=loss, gamma=gamma, reduction=reduction)
    assert out.dtype == dtype
    if reduction == "none":
        assert out.shape == y.shape
        assert (out[y == -100] == 0).all()
    out.float().sum().backward()
    # The float32 value may not fit a float16 result (a loss of 1e5); where it fits, it must be finite.
    ref = class_balanced_loss(z.detach().float(), y, w.float(), loss=loss, gamma=gamma, reduction=reduction)
    assert torch.isfinite(ref).all() and (ref >= 0).all()
    fits = ref.abs() < largest / 2
    assert torch.isfinite(out.float()[fits]).all() and (out.float() >= 0).all()
    assert z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()


@given(problem=problems(), loss=st.sampled_from(LOSSES), gamma=st.floats(0.0, 5.0), dtype=st.sampled_from(DTYPES[2:]))
def test_half_inputs_equal_float32_on_the_same_values(problem, loss, gamma, dtype):
    z, y, w = problem
    gamma = _gamma(loss, gamma)
    half = z.clamp(-1e4, 1e4).to(dtype)
    got = class_balanced_loss(half, y, w.float(), loss=loss, gamma=gamma, reduction="none")
    ref = class_balanced_loss(half.float(), y, w.float(), loss=loss, gamma=gamma, reduction="none")
    torch.testing.assert_close(got, ref.to(dtype))


@given(problem=problems(), loss=st.sampled_from(LOSSES), gamma=st.floats(0.0, 5.0))
def test_reductions_are_consistent(problem, loss, gamma):
    z, y, w = problem
    gamma = _gamma(loss, gamma)
    none = class_balanced_loss(z, y, w, loss=loss, gamma=gamma, reduction="none")
    valid = y != -100
    total = class_balanced_loss(z, y, w, loss=loss, gamma=gamma, reduction="sum")
    torch.testing.assert_close(total, none.sum(), rtol=1e-10, atol=1e-10)
    mean = class_balanced_loss(z, y, w, loss=loss, gamma=gamma, reduction="mean")
    expected = none.sum() / valid.sum() if valid.any() else torch.zeros((), dtype=z.dtype)
    torch.testing.assert_close(mean, expected, rtol=1e-10, atol=1e-10)


@given(problem=problems(), gamma=st.floats(0.0, 5.0))
def test_focal_never_exceeds_its_gamma_zero_loss(problem, gamma):
    # (1 - p_t)**gamma <= 1, so each focal term is bounded by its cross-entropy term.
    z, y, w = problem
    for focal, plain in [("focal", "sigmoid"), ("softmax_focal", "softmax")]:
        a = class_balanced_loss(z, y, w, loss=focal, gamma=gamma, reduction="none")
        b = class_balanced_loss(z, y, w, loss=plain, reduction="none")
        assert (a <= b * (1 + 1e-12) + 1e-300).all()


@given(
    n=st.integers(1, 8),
    c=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1.0, 30.0, 300.0]),
)
def test_sigmoid_focal_gamma_zero_is_bce_on_multi_hot_targets(n, c, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * scale
    t = (torch.rand(n, c, generator=gen) < 0.5).double()
    got = sigmoid_focal_loss(z, t, gamma=0.0, reduction="none")
    ref = F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@given(
    n=st.integers(1, 8), c=st.integers(2, 8), seed=st.integers(0, 2**31 - 1), gamma=st.floats(0.0, 5.0)
)
def test_sigmoid_focal_matches_plain_formula_on_moderate_logits(n, c, seed, gamma):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * 5
    t = torch.rand(n, c, generator=gen, dtype=torch.float64)
    p = torch.sigmoid(z)
    p_t = p * t + (1 - p) * (1 - t)
    ref = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * (1 - p_t) ** gamma).sum(1)
    got = sigmoid_focal_loss(z, t, gamma=gamma, reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_weight_scaling_is_linear(loss):
    z, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 4, (10,))
    w = torch.rand(4, dtype=torch.float64)
    gamma = _gamma(loss, 1.0)
    a = class_balanced_loss(z, y, 3 * w, loss=loss, gamma=gamma)
    torch.testing.assert_close(a, 3 * class_balanced_loss(z, y, w, loss=loss, gamma=gamma))
    wm = class_balanced_loss(z, y, 3 * w, loss=loss, gamma=gamma, reduction="weighted_mean")
    torch.testing.assert_close(wm, class_balanced_loss(z, y, w, loss=loss, gamma=gamma, reduction="weighted_mean"))


# --- sample_weight and label_smoothing over shapes and dtypes (docs/conventions.md) ---------------------------


def _sample_weights(y, seed, dtype):
    """Per-sample weights of the target's shape in [0, 3), about a quarter of them 0."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(y.shape, generator=gen, dtype=torch.float64) * 3
    return torch.where(torch.rand(y.shape, generator=gen) < 0.25, 0.0, s).to(dtype)


@settings(max_examples=25)
@given(
    problem=problems(),
    loss=st.sampled_from(LOSSES),
    gamma=st.floats(0.0, 3.0),
    dtype=st.sampled_from(DTYPES),
    weight_dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]),
    reduction=st.sampled_from(["mean", "weighted_mean", "sum", "none"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_weight_multiplies_each_sample_with_its_class_weight(problem, loss, gamma, dtype, weight_dtype,
                                                                     reduction, seed):
    z, y, w = problem
    w = w.float().double()  # the float32 weights the loss is given, exactly
    gamma = _gamma(loss, gamma)
    s = _sample_weights(y, seed, weight_dtype)
    # The definitions in float64, from the unweighted-by-sample per-sample losses of the same (rounded) input.
    z_in = z.clamp(-1e4, 1e4).to(dtype)
    z64 = z_in.double()
    per_sample = class_balanced_loss(z64, y, w, loss=loss, gamma=gamma, reduction="none")
    s64, valid = s.double(), y != -100
    w_y = w[torch.where(valid, y, 0)]
    expected = {
        "none": s64 * per_sample,
        "sum": (s64 * per_sample).sum(),
        "mean": (s64 * per_sample).sum() / valid.sum().clamp_min(1),
        "weighted_mean": (s64 * per_sample).sum() / torch.where(valid, s64 * w_y, 0.0).sum().clamp_min(1e-300),
    }[reduction]
    if reduction == "weighted_mean" and not bool((torch.where(valid, s64 * w_y, 0.0) > 0).any()):
        expected = torch.zeros((), dtype=torch.float64)  # nothing to average: 0, not NaN
    got = class_balanced_loss(z_in, y, w.float(), loss=loss, gamma=gamma, reduction=reduction, sample_weight=s)
    assert got.dtype == dtype and got.shape == expected.shape
    if dtype == torch.float64:
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    else:  # computed in float32 from the same values, then rounded to the input's dtype
        ref = class_balanced_loss(z_in.float(), y, w.float(), loss=loss, gamma=gamma, reduction=reduction,
                                  sample_weight=s.float())
        torch.testing.assert_close(got, ref.to(dtype))
        torch.testing.assert_close(ref.double(), expected, rtol=1e-4, atol=1e-4 * (1 + float(z64.abs().max())))


@settings(max_examples=25)
@given(
    problem=problems(),
    loss=st.sampled_from(["softmax", "softmax_focal"]),
    gamma=st.floats(0.0, 3.0),
    eps=st.floats(0.0, 0.99),
    dtype=st.sampled_from(DTYPES),
)
def test_label_smoothing_mixes_the_label_and_the_uniform_terms_under_the_labels_weight(problem, loss, gamma, eps, dtype):
    z, y, w = problem
    gamma = _gamma(loss, gamma)
    c = z.shape[1]
    # In float64: (1 - eps) w_y L_y + eps w_y (1/C) sum_c L_c, the second through the probability-target path.
    label = class_balanced_loss(z, y, w, loss=loss, gamma=gamma, reduction="none")
    uniform = class_balanced_loss(z, torch.full_like(z, 1.0 / c), torch.ones(c, dtype=torch.float64), loss=loss,
                                  gamma=gamma, reduction="none")
    valid = y != -100
    expected = torch.where(valid, (1 - eps) * label + eps * w[torch.where(valid, y, 0)] * uniform, 0.0)
    got = class_balanced_loss(z, y, w, loss=loss, gamma=gamma, label_smoothing=eps, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * (1 + float(z.abs().max())))
    if loss == "softmax":  # without class weights: PyTorch's label smoothing, dense inputs and ignore_index included
        ones = torch.ones(c, dtype=torch.float64)
        torch.testing.assert_close(
            class_balanced_loss(z, y, ones, label_smoothing=eps, reduction="none"),
            F.cross_entropy(z, y, label_smoothing=eps, reduction="none"), rtol=1e-9, atol=1e-9 * (1 + float(z.abs().max())),
        )
    # Every dtype: finite values and gradients, computed in float32 and returned in the input's dtype.
    z_in = z.clamp(-1e4, 1e4).to(dtype).requires_grad_(True)
    out = class_balanced_loss(z_in, y, w.float(), loss=loss, gamma=gamma, label_smoothing=eps, reduction="sum")
    out.float().backward()
    compute = z_in.detach() if dtype == torch.float64 else z_in.detach().float()
    ref = class_balanced_loss(compute, y, w.float(), loss=loss, gamma=gamma, label_smoothing=eps, reduction="sum")
    assert out.dtype == dtype and torch.isfinite(ref) and bool(ref >= 0)
    if float(ref) < torch.finfo(dtype).max / 2:
        torch.testing.assert_close(out, ref.to(dtype))
    assert z_in.grad.dtype == dtype and torch.isfinite(z_in.grad.float()).all()
