"""Tests for longtail.models: shapes, parameter counts, heads, initialisation, registry, a tiny overfit."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from longtail.models import (
    CifarResNet,
    NormedLinear,
    SmallCNN,
    available_models,
    build_model,
    resnet32,
)
from longtail.models.resnet_cifar import _PadShortcut


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _resnet32_params(num_classes: int) -> int:
    """Count from the architecture: stem, 3 stages x 5 blocks of two conv3x3+BN, option-A shortcuts, fc."""

    def conv_bn(cin: int, cout: int) -> int:
        return cin * cout * 9 + 2 * cout

    stem = conv_bn(3, 16)
    stage1 = 5 * 2 * conv_bn(16, 16)
    stage2 = conv_bn(16, 32) + conv_bn(32, 32) + 4 * 2 * conv_bn(32, 32)
    stage3 = conv_bn(32, 64) + conv_bn(64, 64) + 4 * 2 * conv_bn(64, 64)
    return stem + stage1 + stage2 + stage3 + 64 * num_classes + num_classes


def _small_cnn_params(num_classes: int, in_channels: int, w: int) -> int:
    convs = 9 * (in_channels * w + w * 2 * w + 2 * w * 4 * w + 4 * w * 8 * w)
    bns = 2 * (w + 2 * w + 4 * w + 8 * w)
    return convs + bns + 8 * w * num_classes + num_classes


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # The CPU is shared with other test runs; one intra-op thread is far less sensitive to oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------
# Shapes and parameter counts
# ---------------------------------------------------------------------------------------------------------------


def test_resnet32_parameter_count() -> None:
    assert _resnet32_params(10) == 464_154
    assert _n_params(resnet32(10)) == 464_154  # the "0.46M" of He et al.
    assert _n_params(resnet32(100)) == _resnet32_params(100)
    # option-A shortcuts have no parameters, use_norm drops only the fc bias
    assert _n_params(resnet32(10, use_norm=True)) == 464_154 - 10


@pytest.mark.parametrize("width", [8, 16, 32])
def test_small_cnn_parameter_count(width: int) -> None:
    assert _n_params(SmallCNN(10, 1, width=width)) == _small_cnn_params(10, 1, width)


@pytest.mark.parametrize("use_norm", [False, True])
def test_resnet32_output_shape(use_norm: bool) -> None:
    model = resnet32(num_classes=7, use_norm=use_norm).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    assert model.forward_features(x).shape == (2, 64)


@pytest.mark.parametrize("use_norm", [False, True])
def test_small_cnn_output_shape(use_norm: bool) -> None:
    model = SmallCNN(num_classes=10, in_channels=1, use_norm=use_norm).eval()
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert model.forward_features(x).shape == (3, 128)
    # other sizes / channels work thanks to global pooling
    assert SmallCNN(5, in_channels=3, width=8).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_resnet32_on_grey_28x28() -> None:
    assert resnet32(10, in_channels=1).eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_wrong_input_channels_message() -> None:
    with pytest.raises(ValueError, match=r"input must have shape \(N, 1, H, W\); got \(2, 3, 28, 28\)"):
        SmallCNN()(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"input must have shape \(N, 3, H, W\); got \(3, 32, 32\)"):
        resnet32()(torch.randn(3, 32, 32))


# ---------------------------------------------------------------------------------------------------------------
# Classifier attribute, heads, shortcuts, init
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small_cnn", "resnet32"])
def test_fc_attribute_and_classifier_property(name: str) -> None:
    model = build_model(name, num_classes=4, in_channels=1 if name == "small_cnn" else 3)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 4 and model.fc.bias is not None
    assert model.classifier is model.fc
    normed = build_model(name, 4, 3, use_norm=True)
    assert isinstance(normed.fc, NormedLinear) and normed.classifier is normed.fc


def test_normed_linear_outputs_cosines() -> None:
    torch.manual_seed(0)
    head = NormedLinear(16, 5)
    assert head.weight.shape == (5, 16)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(5), atol=1e-5)  # renormed rows
    assert head.weight.abs().max() <= 1.0
    x = torch.randn(64, 16) * 100
    out = head(x)
    assert out.shape == (64, 5)
    assert out.abs().max() <= 1.0 + 1e-5
    expected = F.cosine_similarity(x[:, None, :], head.weight[None, :, :], dim=2)
    assert torch.allclose(out, expected, atol=1e-5)
    # a sample aligned with a class vector scores exactly 1 for it
    assert head(head.weight[2:3].detach() * 7)[0, 2].item() == pytest.approx(1.0, abs=1e-5)
    # scale multiplies; zero input gives zeros, not NaN
    scaled = NormedLinear(16, 5, scale=30.0)
    scaled.load_state_dict(head.state_dict())
    assert torch.allclose(scaled(x), 30 * out, atol=1e-4)
    assert torch.equal(head(torch.zeros(2, 16)), torch.zeros(2, 5))


def test_normed_linear_gradients_flow() -> None:
    head = NormedLinear(8, 3)
    x = torch.randn(4, 8, requires_grad=True)
    head(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_normed_linear_bad_args() -> None:
    with pytest.raises(ValueError, match="in_features must be an integer >= 1; got 0"):
        NormedLinear(0, 3)
    with pytest.raises(TypeError, match="out_features must be an integer; got float 3.0"):
        NormedLinear(3, 3.0)
    with pytest.raises(ValueError, match=r"scale must be in \(0, inf\]; got -1.0"):
        NormedLinear(3, 3, scale=-1.0)
    with pytest.raises(ValueError, match="scale must be finite; got inf"):
        NormedLinear(3, 3, scale=float("inf"))


def test_small_cnn_bad_dropout() -> None:
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\); got 1.5"):
        SmallCNN(dropout=1.5)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\); got 1.0"):
        SmallCNN(dropout=1.0)
    with pytest.raises(TypeError, match="dropout must be a real number; got str '0.1'"):
        SmallCNN(dropout="0.1")


def test_cifar_resnet_bad_stages() -> None:
    with pytest.raises(ValueError, match=r"num_blocks and widths must have 3 stages each; got num_blocks=\[1, 1\]"):
        CifarResNet(num_blocks=(1, 1))
    with pytest.raises(ValueError, match=r"num_blocks\[1\] must be an integer >= 1; got 0"):
        CifarResNet(num_blocks=(1, 0, 1))
    with pytest.raises(TypeError, match=r"widths\[2\] must be an integer; got float 64.0"):
        CifarResNet(widths=(16, 32, 64.0))
    with pytest.raises(ValueError, match=r"widths must be non-decreasing \(option-A shortcuts\); got \[32, 16, 64\]"):
        CifarResNet(widths=(32, 16, 64))


def test_option_a_shortcut_is_subsample_plus_zero_channels() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = _PadShortcut(stride=2, extra_channels=16)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    model = resnet32()
    assert isinstance(model.layer2[0].shortcut, _PadShortcut)
    assert isinstance(model.layer3[0].shortcut, _PadShortcut)
    assert isinstance(model.layer2[1].shortcut, nn.Identity)


def test_resnet32_kaiming_normal_init() -> None:
    torch.manual_seed(0)
    model = resnet32()
    w = model.layer3[1].conv1.weight  # fan_in = 64 * 9
    assert w.std().item() == pytest.approx((2.0 / (64 * 9)) ** 0.5, rel=0.05)
    assert w.mean().abs().item() < 0.005


@pytest.mark.parametrize("name", ["small_cnn", "resnet32"])
def test_deterministic_init(name: str) -> None:
    torch.manual_seed(123)
    a = build_model(name, 10, 3)
    torch.manual_seed(123)
    b = build_model(name, 10, 3)
    torch.manual_seed(124)
    c = build_model(name, 10, 3)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["fc.weight"], sc["fc.weight"])


def test_models_pickle_and_deepcopy() -> None:
    model = resnet32().eval()
    x = torch.randn(1, 3, 16, 16)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(clone(x), model(x))


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------


def test_build_model_registry() -> None:
    assert {"small_cnn", "resnet32"} <= set(available_models())
    assert isinstance(build_model("small_cnn", 10, 1), SmallCNN)
    model = build_model("resnet32", 100, 3)
    assert isinstance(model, CifarResNet) and model.fc.out_features == 100
    assert build_model("small_cnn", 10, 1, width=8).feature_dim == 64


def test_build_model_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError,
                       match=r"model must be one of 'mlp', 'resnet20', .*'resnet32'.*'small_cnn'; got 'resnet18'"):
        build_model("resnet18", 10, 3)


def test_build_model_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1; got 0"):
        build_model("resnet32", 0, 3)
    with pytest.raises(TypeError, match="in_channels must be an integer; got bool True"):
        build_model("small_cnn", 10, True)
    with pytest.raises(TypeError):
        build_model("small_cnn", 10, 1, depth=3)


_SIZE_ARGS = [
    (SmallCNN, "num_classes"),
    (SmallCNN, "in_channels"),
    (SmallCNN, "width"),
    (resnet32, "num_classes"),
    (resnet32, "in_channels"),
    (CifarResNet, "num_classes"),
    (CifarResNet, "in_channels"),
]
_BAD_SIZES = [
    (True, TypeError, "must be an integer; got bool True"),
    (2.0, TypeError, "must be an integer; got float 2.0"),
    (0, ValueError, "must be an integer >= 1; got 0"),
]


@pytest.mark.parametrize(("value", "exc", "message"), _BAD_SIZES, ids=["bool", "float", "zero"])
@pytest.mark.parametrize(("build", "arg"), _SIZE_ARGS, ids=[f"{b.__name__}-{a}" for b, a in _SIZE_ARGS])
def test_bad_size_arguments(build, arg: str, value: object, exc: type[Exception], message: str) -> None:  # noqa: ANN001
    with pytest.raises(exc, match=f"^{arg} {message}$"):
        build(**{arg: value})


@pytest.mark.parametrize(("value", "exc", "message"), _BAD_SIZES, ids=["bool", "float", "zero"])
@pytest.mark.parametrize("arg", ["num_classes", "in_channels"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet32"])
def test_build_model_bad_size_arguments(name: str, arg: str, value: object, exc: type[Exception], message: str) -> None:
    sizes = {"num_classes": 10, "in_channels": 3} | {arg: value}
    with pytest.raises(exc, match=f"^{arg} {message}$"):
        build_model(name, **sizes)


# ---------------------------------------------------------------------------------------------------------------
# Training sanity
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "use_norm"),
    # ResNet-32 at 16x16 (global pooling allows it) keeps the test fast; the architecture is the same.
    [("small_cnn", (1, 28, 28), False), ("small_cnn", (1, 28, 28), True),
     pytest.param("resnet32", (3, 16, 16), False, marks=pytest.mark.slow)],
)
def test_tiny_overfit_reduces_loss(name: str, shape: tuple[int, int, int], use_norm: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(32, *shape)
    y = torch.randint(0, 10, (32,))
    model = build_model(name, 10, shape[0], use_norm=use_norm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # cosine logits live in [-1, 1]; CE needs a scale to move (LDAM uses s = 30 in its loss)
    scale = 16.0 if use_norm else 1.0

    def loss_fn() -> torch.Tensor:
        return F.cross_entropy(scale * model(x), y)

    model.train()
    first = loss_fn()
    for _ in range(6):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    assert loss_fn().item() < 0.7 * first.item()


def test_a_model_derived_from_classifier_gets_the_convention_from_its_backbone_and_fc():
    from longtail.models import Classifier, linear_head

    class Tiny(Classifier):
        def __init__(self, num_classes=3, in_channels=2, use_norm=False):
            super().__init__()
            self.in_channels, self.num_classes, self.feature_dim = in_channels, num_classes, 4
            self.body = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))
            self.fc = linear_head(4, num_classes, use_norm)

        def embed(self, x):
            return self.body(x)

    model, x = Tiny(), torch.randn(5, 2, 6, 6)
    assert torch.equal(model(x), model.forward_head(model.forward_features(x)))
    assert model.classifier is model.fc and isinstance(Tiny(use_norm=True).fc, NormedLinear)
    with pytest.raises(ValueError, match=r"input must have shape \(N, 2, H, W\); got \(5, 3, 6, 6\)"):
        model(torch.randn(5, 3, 6, 6))
