"""ldam_margins / ldam_loss / LDAMLoss: hand-computed values, the official formula, F.cross_entropy on shifted logits."""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longtail.functional.ldam import ldam_loss, ldam_margins
from longtail.losses.ldam import LDAMLoss

# A 3-class example small enough to follow on paper; cosine logits in [-1, 1] as from a normalised head.
Z = [[0.8, 0.1, -0.3], [0.2, -0.5, 0.6], [-0.1, 0.4, 0.0]]
Y = [0, 2, 1]
COUNTS = [100, 10, 1]


def _hand(scale, max_margin, weight=None, reduction="mean"):
    """The loss of the 3-class example with the math module only."""
    raw = [n ** -0.25 for n in COUNTS]
    m = [r * max_margin / max(raw) for r in raw]
    w = weight or [1.0, 1.0, 1.0]
    total = 0.0
    for z, y in zip(Z, Y):
        shifted = [scale * (v - (m[y] if i == y else 0.0)) for i, v in enumerate(z)]
        ce = math.log(sum(math.exp(v) for v in shifted)) - shifted[y]
        total += w[y] * ce
    if reduction == "sum":
        return total
    if reduction == "weighted_mean":
        return total / sum(w[y] for y in Y)
    return total / len(Y)


def _official(z, y, counts, max_m, s, weight=None):
    """The authors' LDAMLoss.forward (numpy float64): x_m = x - m_y at the true class, CE(s * output, weight)."""
    z = np.asarray(z, dtype=np.float64)
    m_list = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, dtype=np.float64)))
    m_list = m_list * (max_m / np.max(m_list))
    index = np.eye(z.shape[1], dtype=bool)[y]
    batch_m = (m_list[None, :] @ index.T.astype(np.float64)).reshape(-1, 1)
    output = np.where(index, z - batch_m, z) * s
    shifted = output - output.max(axis=1, keepdims=True)
    ce = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]
    w = np.ones(z.shape[1]) if weight is None else np.asarray(weight, dtype=np.float64)
    return float((w[y] * ce).sum() / w[y].sum())  # F.cross_entropy(weight=w)'s mean


def _shifted(z, y, margins, scale, ignore_index=-100):
    """s * (z - m_y onehot(y)) written directly, class dimension at 1."""
    safe = torch.where(y == ignore_index, torch.zeros_like(y), y)
    onehot = F.one_hot(safe, z.shape[1]).movedim(-1, 1).to(z.dtype)
    return scale * (z - margins[safe].unsqueeze(1) * onehot)


def _value_and_grad(fn, z):
    z = z.detach().clone().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


# --- margins -------------------------------------------------------------------------------------


def test_margins_literal_and_quarter_power_law():
    # 0.5 / 10000**0.25 = 0.05, 0.5 / 100**0.25 = 0.5 / sqrt(10) = 0.1581139, the rarest class gets 0.5.
    m = ldam_margins([10000, 100, 1], dtype=torch.float64)
    torch.testing.assert_close(m, torch.tensor([0.05, 0.5 / math.sqrt(10), 0.5], dtype=torch.float64), rtol=1e-15, atol=0)
    counts = torch.tensor([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    m = ldam_margins(counts, max_margin=0.3, dtype=torch.float64)
    assert float(m.max()) == pytest.approx(0.3, rel=1e-15)
    ratio = m * counts.double() ** 0.25
    torch.testing.assert_close(ratio, ratio[:1].expand(10), rtol=1e-14, atol=0)
    assert ldam_margins(counts).dtype == torch.float32
    assert torch.equal(ldam_margins([3, 7], max_margin=0.0), torch.zeros(2))


@pytest.mark.parametrize(
    "counts, kwargs, error, match",
    [
        ([[1, 2], [3, 4]], {}, ValueError, r"counts must be 1-D \(one value per class\); got shape \(2, 2\)"),
        ([5, -1, 3], {}, ValueError, r"counts must be non-negative; got negative counts for classes \[1\]"),
        ([5, 0, 3], {}, ValueError, r"counts must be positive for every class .* got 0 for classes \[1\]"),
        ([5, float("nan")], {}, ValueError, "counts must be finite"),
        ([5, 3], dict(max_margin=-0.1), ValueError, r"max_margin must be in \[0, inf\]; got -0.1"),
        ([5, 3], dict(max_margin=float("nan")), ValueError, "max_margin must be a number; got NaN"),
        ([5, 3], dict(max_margin=float("inf")), ValueError, "max_margin must be finite; got inf"),
        ("abc", {}, TypeError, "counts must be a list, numpy array or tensor; got str"),
    ],
)
def test_margins_bad_input(counts, kwargs, error, match):
    with pytest.raises(error, match=match):
        ldam_margins(counts, **kwargs)


# --- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 10.0, 30.0])
@pytest.mark.parametrize("max_margin", [0.5, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "weighted_mean"])
def test_hand_computed_three_classes(scale, max_margin, reduction):
    w = [0.2, 1.0, 2.5]
    m = ldam_margins(COUNTS, max_margin, dtype=torch.float64)
    z, y = torch.tensor(Z, dtype=torch.float64), torch.tensor(Y)
    got = ldam_loss(z, y, m, scale=scale, weight=torch.tensor(w, dtype=torch.float64), reduction=reduction)
    assert float(got) == pytest.approx(_hand(scale, max_margin, w, reduction), rel=1e-12)
    unweighted = ldam_loss(z, y, m, scale=scale, reduction=reduction)
    assert float(unweighted) == pytest.approx(_hand(scale, max_margin, None, reduction), rel=1e-12)


def test_hand_computed_literal_value():
    # First two samples, s = 10, m = [0.158114, 0.281171, 0.5]:
    # sample 0: shifted [6.418861, 1, -3], CE = log(1 + e^-5.418861 + e^-9.418861) = log(1.0045133) = 0.0045031;
    # sample 1: shifted [2, -5, 1], CE = log(7.389056 + 0.006738 + 2.718282) - 1 = 2.313928 - 1 = 1.313928;
    # mean (0.0045031 + 1.313928) / 2 = 0.659216.
    m = ldam_margins(COUNTS)
    got = ldam_loss(torch.tensor(Z[:2]), torch.tensor(Y[:2]), m, scale=10.0)
    assert float(got) == pytest.approx(0.659216, abs=1e-6)
    none = ldam_loss(torch.tensor(Z[:2]), torch.tensor(Y[:2]), m, scale=10.0, reduction="none")
    torch.testing.assert_close(none, torch.tensor([0.0045031, 1.313928]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_official_code_on_random_inputs(weighted):
    gen = torch.Generator().manual_seed(3)
    n, c = 64, 10
    z = torch.rand(n, c, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, c, (n,), generator=gen)
    counts = torch.randint(1, 5000, (c,), generator=gen)
    w = torch.rand(c, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    m = ldam_margins(counts, 0.5, dtype=torch.float64)
    got = ldam_loss(z, y, m, scale=30.0, weight=w, reduction="weighted_mean")
    expected = _official(z.numpy(), y.numpy(), counts.numpy(), 0.5, 30.0, None if w is None else w.numpy())
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
def test_is_cross_entropy_on_shifted_logits_in_value_and_gradient(reduction):
    z, y = torch.randn(32, 7, dtype=torch.float64), torch.randint(0, 7, (32,))
    m = ldam_margins(torch.randint(1, 1000, (7,)), 0.5, dtype=torch.float64)
    w = torch.rand(7, dtype=torch.float64) + 0.1
    native = "mean" if reduction == "weighted_mean" else reduction
    ours = _value_and_grad(lambda t: ldam_loss(t, y, m, scale=30.0, weight=w, reduction=reduction), z)
    ref = _value_and_grad(lambda t: F.cross_entropy(_shifted(t, y, m, 30.0), y, weight=w, reduction=native), z)
    if reduction == "mean":  # ours divides the weighted sum by N, PyTorch by sum_n w_y
        ref = _value_and_grad(lambda t: F.cross_entropy(_shifted(t, y, m, 30.0), y, weight=w, reduction="sum") / 32, z)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_zero_margin_is_scaled_cross_entropy():
    z, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 5, (16,))
    m = ldam_margins([50, 40, 30, 20, 10], max_margin=0.0, dtype=torch.float64)
    torch.testing.assert_close(ldam_loss(z, y, m, scale=4.0), F.cross_entropy(4.0 * z, y), rtol=1e-13, atol=0)


def test_margin_raises_loss_most_for_rare_classes():
    # With equal logits the loss of a sample grows with its class's margin: tail classes get the largest.
    z = torch.zeros(3, 3)
    per_sample = ldam_loss(z, torch.tensor([0, 1, 2]), ldam_margins(COUNTS), reduction="none")
    assert bool(per_sample[0] < per_sample[1] < per_sample[2])


# --- dense inputs, ignore_index ------------------------------------------------------------------


def test_dense_inputs_and_ignore_index_match_cross_entropy():
    z = torch.rand(2, 5, 4, 3, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, 5, (2, 4, 3))
    y[0, 0, :] = 255
    m = ldam_margins([400, 200, 50, 10, 3], dtype=torch.float64)
    w = torch.rand(5, dtype=torch.float64) + 0.1
    for reduction, native in [("weighted_mean", "mean"), ("sum", "sum"), ("none", "none")]:
        ours = _value_and_grad(lambda t: ldam_loss(t, y, m, weight=w, reduction=reduction, ignore_index=255), z)
        ref = _value_and_grad(
            lambda t: F.cross_entropy(_shifted(t, y, m, 30.0, 255), y, weight=w, reduction=native, ignore_index=255), z
        )
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-13)
    valid = (y != 255).sum()
    total = F.cross_entropy(_shifted(z, y, m, 30.0, 255), y, weight=w, reduction="sum", ignore_index=255)
    torch.testing.assert_close(ldam_loss(z, y, m, weight=w, ignore_index=255), total / valid)
    dense = ldam_loss(z, y, m, reduction="none", ignore_index=255)
    assert dense.shape == (2, 4, 3) and bool((dense[0, 0] == 0).all())


# --- gradients and numerics ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 30.0), (torch.bfloat16, 30.0), (torch.float16, 3.0)])
def test_extreme_logits_are_finite(dtype, scale):
    # float16 tops out at 65504, so a loss of 30 * 2e4 is not representable there: scale 3 keeps it below.
    z = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]]) * 1e4
    y = torch.tensor([0, 0, 2, 1])  # confident-right, confident-wrong, tied, all-equal
    zz = z.to(dtype).requires_grad_(True)
    out = ldam_loss(zz, y, ldam_margins(COUNTS), scale=scale, reduction="none")
    out.sum().backward()
    out = out.detach()
    assert out.dtype == dtype and torch.isfinite(out.float()).all() and torch.isfinite(zz.grad.float()).all()
    assert float(out[0]) == 0.0 and float(out[1]) == pytest.approx(scale * 2e4, rel=1e-2)
    # The gradient of a confident-wrong sample is s * (softmax - onehot): exactly -s and +s.
    assert zz.grad[1].float().tolist() == pytest.approx([-scale, scale, 0.0], rel=1e-2)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(target=torch.tensor([0, 1])), ValueError, r"must have shape \(3,\) \(or, for multi-hot or probability targets, the input.s shape\); got \(2,\)"),
        (dict(target=torch.tensor([0, 1, 3])), ValueError, r"labels must be in \[0, 2\] or equal ignore_index=-100; got label 3"),
        (dict(target=torch.eye(3)), TypeError, "ldam_loss needs class-index targets .* got a target of dtype torch.float32"),
        (dict(target=torch.eye(3, dtype=torch.bool)), TypeError, "class-index targets .* torch.bool"),
        (dict(target=[0, 1, 2]), TypeError, "target must be a tensor; got list"),
        (dict(logits=torch.zeros(3, 3, dtype=torch.long)), TypeError, "floating-point tensor of logits; got dtype torch.int64"),
        (dict(logits=torch.zeros(3)), ValueError, r"shape \(N, C\) or \(N, C, d1, ...\); got shape \(3,\)"),
        (dict(margins=torch.ones(4)), ValueError, r"margins must have shape \(3,\), one value per class; got \(4,\)"),
        (dict(margins=torch.ones(3, device="meta")), ValueError, "margins must be on the input's device cpu; got meta"),
        (dict(margins=torch.ones(3, dtype=torch.long)), TypeError, "margins must be a floating-point tensor"),
        (dict(margins=torch.tensor([0.1, float("nan"), 0.5])), ValueError, r"margins must be finite and non-negative; .*bad classes \[1\]"),
        (dict(margins=torch.tensor([0.1, -0.2, 0.5])), ValueError, r"margins must be finite and non-negative"),
        (dict(weight=torch.ones(4)), ValueError, r"weight must have shape \(3,\), one value per class; got \(4,\)"),
        (dict(weight=torch.ones(3, device="meta")), ValueError, "weight must be on the input's device cpu; got meta"),
        (dict(reduction="avg"), ValueError, "reduction must be one of 'mean', 'weighted_mean', 'sum', 'none'; got 'avg'"),
        (dict(scale=float("nan")), ValueError, "scale must be a number; got NaN"),
        (dict(scale=-1.0), ValueError, r"scale must be in \(0, inf\]; got -1.0"),
        (dict(scale=0.0), ValueError, r"scale must be in \(0, inf\]; got 0.0"),
        (dict(scale=float("inf")), ValueError, "scale must be finite; got inf"),
        (dict(scale="30"), TypeError, "scale must be a real number; got str"),
    ],
)
def test_bad_input_messages(kwargs, error, match):
    args = dict(logits=torch.zeros(3, 3), target=torch.tensor([0, 1, 2]), margins=ldam_margins(COUNTS))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ldam_loss(args.pop("logits"), args.pop("target"), args.pop("margins"), **args)


# --- the module ----------------------------------------------------------------------------------


def test_module_matches_functional_and_keeps_buffers():
    criterion = LDAMLoss(COUNTS, max_margin=0.4, scale=16.0, weight=[0.5, 1.0, 2.0], reduction="sum")
    assert dict(criterion.named_buffers()).keys() == {"margins", "weight"}
    torch.testing.assert_close(criterion.margins, ldam_margins(COUNTS, 0.4))
    z, y = torch.tensor(Z), torch.tensor(Y)
    expected = ldam_loss(z, y, ldam_margins(COUNTS, 0.4), scale=16.0, weight=torch.tensor([0.5, 1.0, 2.0]), reduction="sum")
    torch.testing.assert_close(criterion(z, y), expected)
    double = criterion.double()
    assert double.margins.dtype == torch.float64 and double.weight.dtype == torch.float64
    assert double(z.double(), y).dtype == torch.float64
    assert "max_margin=0.4, scale=16.0" in repr(criterion)


def test_set_weight_switches_weighting_on_and_off():
    criterion = LDAMLoss(COUNTS, reduction="weighted_mean")
    z, y = torch.tensor(Z), torch.tensor(Y)
    unweighted = criterion(z, y)
    criterion.set_weight(np.array([1.0, 2.0, 3.0]))
    assert criterion.weight.dtype == torch.float32 and "weight" in criterion.state_dict()
    w = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(criterion(z, y), ldam_loss(z, y, criterion.margins, weight=w, reduction="weighted_mean"))
    criterion.set_weight(None)  # all ones: the unweighted loss
    assert criterion.weight.tolist() == [1.0, 1.0, 1.0] and "weight" in criterion.state_dict()
    torch.testing.assert_close(criterion(z, y), unweighted)


@pytest.mark.parametrize(
    "weight, error, match",
    [
        (torch.ones(4), ValueError, r"weight must have shape \(3,\), one value per class; got \(4,\)"),
        ([1.0, -1.0, 1.0], ValueError, "weight must be finite and non-negative"),
        ([1.0, float("nan"), 1.0], ValueError, "weight must be finite and non-negative"),
        (torch.ones(3, dtype=torch.bool), TypeError, "weight must hold real numbers; got dtype torch.bool"),
        (["a", "b", "c"], TypeError, "weight must hold numbers"),
        (2.0, TypeError, "weight must be a list, numpy array or tensor; got float"),
    ],
)
def test_set_weight_bad_input(weight, error, match):
    with pytest.raises(error, match=match):
        LDAMLoss(COUNTS).set_weight(weight)
    with pytest.raises(error, match=match):
        LDAMLoss(COUNTS, weight=weight)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(counts=[[1, 2]]), ValueError, "counts must be 1-D"),
        (dict(counts=[3, -1, 2]), ValueError, "counts must be non-negative"),
        (dict(counts=[3, 0, 2]), ValueError, "counts must be positive for every class"),
        (dict(max_margin=float("nan")), ValueError, "max_margin must be a number; got NaN"),
        (dict(scale=-2.0), ValueError, r"scale must be in \(0, inf\]; got -2.0"),
        (dict(scale=0.0), ValueError, r"scale must be in \(0, inf\]; got 0.0"),
        (dict(reduction="mean_"), ValueError, "reduction must be one of"),
    ],
)
def test_module_bad_arguments(kwargs, error, match):
    args = dict(counts=COUNTS)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        LDAMLoss(**args)


def test_state_dict_round_trip_takes_margins_and_weight():
    z, y = torch.tensor(Z), torch.tensor(Y)
    weighted = LDAMLoss(COUNTS, max_margin=0.3, weight=[0.2, 1.0, 2.8])
    buffer = io.BytesIO()
    torch.save(weighted.state_dict(), buffer)
    buffer.seek(0)
    restored = LDAMLoss([1, 1, 1], max_margin=0.3)  # other margins and an all-ones weight until loaded
    restored.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(restored.margins, weighted.margins)
    torch.testing.assert_close(restored.weight, weighted.weight)
    torch.testing.assert_close(restored(z, y), weighted(z, y))
    with pytest.raises(RuntimeError, match="size mismatch"):
        LDAMLoss([1, 2]).load_state_dict(restored.state_dict())


def test_trainer_ce_cosine_is_cross_entropy_on_scaled_cosines_with_the_cosine_head():
    """`--loss ce_cosine`: LDAM's head and scale without margins (separates LDAM-DRW's margin from its head)."""
    from longtail.train import LOSSES, TrainConfig

    spec = LOSSES["ce_cosine"]
    assert spec.head == "cosine" and spec.reads == ("scale",)
    criterion = spec.build_loss(TrainConfig(loss="ce_cosine", scale=16.0), torch.tensor([50, 20, 5]))
    cosines = torch.rand(6, 3, dtype=torch.float64) * 2 - 1
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(criterion(cosines, target), F.cross_entropy(16.0 * cosines, target))
