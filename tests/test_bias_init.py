import math

import pytest
import torch
from torch import nn

from longtail import init_prior_bias


def test_default_prior_is_one_over_c():
    layer = nn.Linear(4, 10)
    init_prior_bias(layer)
    assert layer.bias.tolist() == pytest.approx([-math.log(9)] * 10, rel=1e-6)
    assert torch.sigmoid(layer.bias).tolist() == pytest.approx([0.1] * 10, rel=1e-6)
    assert layer.bias.requires_grad


def test_scalar_and_per_class_priors():
    bias = torch.zeros(3)
    init_prior_bias(bias, prior=0.01)
    assert bias.tolist() == pytest.approx([math.log(0.01 / 0.99)] * 3, rel=1e-6)
    counts = torch.tensor([70.0, 20.0, 10.0])
    init_prior_bias(bias, prior=counts / counts.sum())
    assert torch.sigmoid(bias).tolist() == pytest.approx([0.7, 0.2, 0.1], rel=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="linear_or_bias must be .*; got a Linear that has no bias"):
        init_prior_bias(nn.Linear(2, 3, bias=False))
    with pytest.raises(ValueError, match=r"prior must be in \(0, 1\); got 1.0"):
        init_prior_bias(torch.zeros(3), prior=1.0)
    with pytest.raises(ValueError, match=r"prior must have one value per class \(3\); got 2 values"):
        init_prior_bias(torch.zeros(3), prior=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"prior must be in \(0, 1\) for every class; got \[0.0, 1.0\]"):
        init_prior_bias(torch.zeros(2), prior=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"prior must be in \(0, 1\); got 0.0"):
        init_prior_bias(torch.zeros(3), prior=0)
    with pytest.raises(ValueError, match=r"bias must be 1-D \(one value per class\); got shape \(2, 3\)"):
        init_prior_bias(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="prior must be given for a bias with fewer .*; got prior=None with C=1"):
        init_prior_bias(torch.zeros(1))
