"""Hypothesis fuzzing of the public API and the CLI: bad input ends in a clear ValueError/TypeError (CLI: one line,
exit status 2), never another exception, a traceback or a silent acceptance of a value outside its bounds."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longtail import (
    BalancedSoftmaxLoss,
    CDBLoss,
    ClassBalancedLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    SigmoidFocalLoss,
    cdb_weights,
    class_balanced_weights,
)
from longtail.cli import main
from longtail.train import TrainConfig

# Anything a user or a config file might pass.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-5, max_value=300), max_size=4),
    st.sampled_from(["dynamic", "auto", "cpu", "cuda:abc", "mps", "mean", "ce", "1.5", "-1", "nan", ""]),
)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


@pytest.mark.slow
@settings(max_examples=300)
@given(field=st.sampled_from(FIELDS), value=ANY_VALUE)
def test_a_configuration_field_takes_a_value_or_names_what_it_expected(field, value):
    try:
        config = TrainConfig(**{"dataset": "synthetic", field: value})
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith(field) or field in str(exc), str(exc)
        return
    stored = getattr(config, field)
    if isinstance(stored, float):
        assert math.isfinite(stored), (field, stored)
    assert TrainConfig.from_dict(config.to_dict()) == config  # what was accepted round-trips


FLAG_VALUES = st.one_of(st.text(max_size=8), st.sampled_from(["nan", "inf", "-inf", "1e400", "-3", "0", "2", "x,y"]))
VALUE_FLAGS = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)
               if f.type not in ("bool",) and f.name not in ("download", "augment", "nesterov", "compile")]


@pytest.mark.slow
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(VALUE_FLAGS), text=FLAG_VALUES)
def test_the_cli_refuses_a_bad_option_value_in_one_line(flag, text, capsys, monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr("longtail.train.train", lambda config, out, **kwargs: ran.append(config) or {
        "final": {"accuracy": 0.0, "balanced_accuracy": 0.0}, "train_seconds": 0.0})
    try:
        status = main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "run"), flag, text])
    except SystemExit as exc:  # argparse's own errors: one line too, exit 2
        err = capsys.readouterr().err.strip()
        assert exc.code == 2 and len(err.splitlines()) == 1 and err.startswith("longtail train: error: "), err
        return
    err = capsys.readouterr().err.strip()
    if status == 0:
        assert ran and not err  # accepted: the configuration was valid
    else:
        assert status == 2 and len(err.splitlines()) == 1 and err.startswith("longtail train: error: ")


COUNTS = st.lists(st.one_of(st.integers(min_value=-3, max_value=10**6), st.floats(allow_nan=True, allow_infinity=True)),
                  min_size=0, max_size=5)
HYPER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 10), st.booleans(), st.text(max_size=4))
CONSTRUCTORS = {
    "ClassBalancedLoss": lambda c, h: ClassBalancedLoss(c, beta=h),
    "ClassBalancedLoss.gamma": lambda c, h: ClassBalancedLoss(c, beta=0.9, loss="focal", gamma=h),
    "FocalLoss": lambda c, h: FocalLoss(gamma=h, weight=c),
    "SigmoidFocalLoss": lambda c, h: SigmoidFocalLoss(gamma=2.0, alpha=h, weight=c),
    "CDBLoss": lambda c, h: CDBLoss(max(1, len(c)), tau=h),
    "LDAMLoss": lambda c, h: LDAMLoss(c, max_margin=h),
    "LogitAdjustedLoss": lambda c, h: LogitAdjustedLoss(c, tau=h),
    "BalancedSoftmaxLoss": lambda c, h: BalancedSoftmaxLoss(c),
    "class_balanced_weights": lambda c, h: class_balanced_weights(c, h),
    "cdb_weights": lambda c, h: cdb_weights(c, tau=h),
}


@pytest.mark.slow
@settings(max_examples=400)
@given(name=st.sampled_from(sorted(CONSTRUCTORS)), counts=COUNTS, hyper=HYPER)
def test_losses_and_weights_are_built_or_refused_with_a_message(name, counts, hyper):
    try:
        out = CONSTRUCTORS[name](counts, hyper)
    except (ValueError, TypeError) as exc:
        assert " must " in str(exc) or "got" in str(exc), str(exc)
        return
    weights = out if isinstance(out, torch.Tensor) else getattr(out, "weight")
    assert bool(torch.isfinite(weights).all()) and bool((weights >= 0).all()), (name, counts, hyper, weights)


@pytest.mark.parametrize("text", ["", ",", "a,b", "nan", "0.5,x"])
def test_the_weights_command_refuses_bad_lists_in_one_line(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "--counts", "5,1", "--beta", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("longtail weights: error: "), err


# Per-sample weights as a caller might pass them: any shape, dtype and value (NaN, inf, negative), or no tensor at all.
SAMPLE_WEIGHTS = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=5).map(
        lambda values: torch.tensor(values, dtype=torch.float32)),
    st.lists(st.floats(min_value=0, max_value=1e6), min_size=3, max_size=3).map(torch.tensor),
    st.lists(st.integers(-3, 3), min_size=3, max_size=3).map(torch.tensor),
    st.lists(st.floats(min_value=0, max_value=10), min_size=6, max_size=6).map(lambda v: torch.tensor(v).reshape(3, 2)),
    ANY_VALUE,
)
FORWARDS = {
    "ClassBalancedLoss": lambda: ClassBalancedLoss([50, 5, 1], beta=0.99, label_smoothing=0.1),
    "ClassBalancedLoss.sigmoid": lambda: ClassBalancedLoss([50, 5, 1], beta=0.99, loss="sigmoid", pos_weight=[1, 2, 3]),
    "FocalLoss": lambda: FocalLoss(gamma=2.0, num_classes=3),
    "SigmoidFocalLoss": lambda: SigmoidFocalLoss(gamma=2.0, pos_weight=[0.5, 1.0, 4.0]),
    "CDBLoss": lambda: CDBLoss(3, tau=1.0),
    "LDAMLoss": lambda: LDAMLoss([50, 5, 1], label_smoothing=0.2),
    "LogitAdjustedLoss": lambda: LogitAdjustedLoss([50, 5, 1]),
}


@pytest.mark.slow
@settings(max_examples=150)
@given(name=st.sampled_from(sorted(FORWARDS)), sample_weight=SAMPLE_WEIGHTS,
       reduction=st.sampled_from(["mean", "weighted_mean", "sum", "none"]))
def test_a_sample_weight_is_taken_or_refused_with_a_message_naming_it(name, sample_weight, reduction):
    criterion = FORWARDS[name]()
    criterion.reduction = reduction
    z, y = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 2, 1])
    try:
        out = criterion(z, y, sample_weight)
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith("sample_weight must "), str(exc)
        return
    if sample_weight is None:  # no per-sample weights
        return
    # Accepted: a float tensor of shape (3,), finite and non-negative; the loss is non-negative, and finite unless
    # a weight near float32's largest value overflows it.
    assert isinstance(sample_weight, torch.Tensor) and sample_weight.is_floating_point()
    assert sample_weight.shape == (3,) and bool(torch.isfinite(sample_weight).all()) and bool((sample_weight >= 0).all())
    assert not bool(torch.isnan(out).any()) or float(sample_weight.max()) > 1e30
    assert bool((out >= 0).all()) or float(sample_weight.max()) > 1e30
    if float(sample_weight.max()) < 1e30:
        assert bool(torch.isfinite(out).all())


NEW_ARGUMENTS = {
    "label_smoothing": lambda v: ClassBalancedLoss([50, 5, 1], beta=0.99, label_smoothing=v),
    "label_smoothing.FocalLoss": lambda v: FocalLoss(label_smoothing=v),
    "label_smoothing.sigmoid": lambda v: ClassBalancedLoss([50, 5, 1], loss="sigmoid", label_smoothing=v),
    "pos_weight": lambda v: ClassBalancedLoss([50, 5, 1], loss="focal", gamma=1.0, pos_weight=v),
    "pos_weight.SigmoidFocalLoss": lambda v: SigmoidFocalLoss(pos_weight=v, num_classes=3),
    "pos_weight.softmax": lambda v: ClassBalancedLoss([50, 5, 1], pos_weight=v),
}


@pytest.mark.slow
@settings(max_examples=200)
@given(name=st.sampled_from(sorted(NEW_ARGUMENTS)),
       value=st.one_of(HYPER, st.lists(st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True)),
                                       min_size=0, max_size=4)))
def test_label_smoothing_and_pos_weight_are_taken_or_refused_with_a_message_naming_them(name, value):
    argument = name.split(".")[0]
    try:
        criterion = NEW_ARGUMENTS[name](value)
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith(argument + " must "), str(exc)
        return
    out = criterion(torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]), torch.tensor([0, 2]))
    assert bool(torch.isfinite(out)) and bool(out >= 0), (name, value, out)
