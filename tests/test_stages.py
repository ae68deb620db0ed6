"""Two-stage training: cRT, LWS, classifier fine-tuning with MaxNorm, post-hoc tau-norm and logit adjustment."""

import functools
import hashlib
import json
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from longtail.functional import class_log_prior, logit_adjust
from longtail.io import load_checkpoint
from longtail.models import PriorAdjusted, ScaledClassifier, TauNormalized
from longtail.train import POSTHOC, STAGES, train
from longtail.train.stages import MaxNorm


@pytest.fixture(scope="module")
def tiny_config(tiny_config):
    """The tiny run with 5 validation images per class, for the stages and post-hoc methods that tune on them."""
    return functools.partial(tiny_config, val_per_class=5)


def _backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


@pytest.fixture(scope="module")
def parent(tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("stage1")
    result = train(tiny_config(), folder, verbose=0)
    return folder, result, load_checkpoint(folder / "checkpoint.pt")["model"]


def _child(parent, tmp_path, tiny_config, **fields):
    folder, _, _ = parent
    config = tiny_config(init_from=str(folder), **fields)
    result = train(config, tmp_path, verbose=0)
    return result, load_checkpoint(tmp_path / "checkpoint.pt")


# --- heads and the constraint, by hand -------------------------------------------------------------


def test_tau_normalized_by_hand():
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        linear.bias.fill_(5.0)
    x = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(TauNormalized(linear, 1.0)(x), torch.tensor([[0.6 + 0.8, 1.0]]))
    torch.testing.assert_close(TauNormalized(linear, 0.5)(x), torch.tensor([[7 / 5**0.5, 2 / 2**0.5]]))
    torch.testing.assert_close(TauNormalized(linear, 0.0)(x), torch.tensor([[7.0, 2.0]]))  # the bias is dropped


def test_prior_adjusted_is_logit_adjust_and_scaled_classifier_folds():
    linear = nn.Linear(3, 4)
    x = torch.randn(5, 3)
    counts = torch.tensor([50, 20, 5, 1])
    adjusted = PriorAdjusted(linear, class_log_prior(counts), 0.75)
    torch.testing.assert_close(adjusted(x), logit_adjust(linear(x), counts, 0.75))
    scaled = ScaledClassifier(linear, 4)
    with torch.no_grad():
        scaled.scales.copy_(torch.tensor([0.5, 2.0, 1.0, 3.0]))
    torch.testing.assert_close(scaled(x), linear(x) * torch.tensor([0.5, 2.0, 1.0, 3.0]))
    torch.testing.assert_close(scaled.fold()(x), scaled(x))


def test_max_norm_by_hand():
    weight = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.6, 0.8]])  # row norms 5, 1, 1
    constraint = MaxNorm(weight, 0.5)  # delta = 1 + 0.5 * (5 - 1) = 3
    assert constraint.delta.item() == pytest.approx(3.0)
    constraint.project_(weight)
    torch.testing.assert_close(weight, torch.tensor([[1.8, 2.4], [0.0, 1.0], [0.6, 0.8]]))


# --- the stages ----------------------------------------------------------------------------------


def test_crt_retrains_a_new_classifier_on_the_frozen_backbone(parent, tmp_path, tiny_config):
    folder, _, parent_model = parent
    result, checkpoint = _child(parent, tmp_path, tiny_config, stage="crt")
    assert result["status"] == "complete" and result["config"]["sampler"] == "class_balanced"
    digest = hashlib.sha256((folder / "checkpoint.pt").read_bytes()).hexdigest()
    assert result["parent"] == {**result["parent"], "path": str(folder.resolve()), "loss": "ce", "stage": "joint",
                                "checkpoint_sha256": digest}
    model = checkpoint["model"]
    for key, value in _backbone(parent_model).items():  # BatchNorm statistics included: the backbone is frozen
        assert torch.equal(model[key], value), key
    assert not torch.allclose(model["fc.weight"], parent_model["fc.weight"])


def test_lws_learns_only_the_per_class_scales(parent, tmp_path, tiny_config):
    _, _, parent_model = parent
    # float32: under bfloat16 autocast the folded classifier (s * W, then rounded) and the LWS head (W x rounded, then
    # scaled by s) round differently, and one test image's prediction flipped (an Intel AMX CPU, one thread).
    result, checkpoint = _child(parent, tmp_path, tiny_config, stage="lws", amp="off")
    model = checkpoint["model"]
    assert torch.equal(model["fc.classifier.weight"], parent_model["fc.weight"])
    assert torch.equal(model["fc.classifier.bias"], parent_model["fc.bias"])
    assert not torch.equal(model["fc.scales"], torch.ones(10))
    for key, value in _backbone(parent_model).items():
        assert torch.equal(model[key], value), key
    # A child of the LWS run sees its classifier with the scales folded in: evaluated as it is, the same result.
    again = train(tiny_config(init_from=str(tmp_path), epochs=0, amp="off"), tmp_path / "eval", verbose=0)
    assert again["final"]["per_class_accuracy"] == result["final"]["per_class_accuracy"]


def test_weight_balancing_stage_two_keeps_every_class_inside_the_max_norm_ball(parent, tmp_path, tiny_config):
    _, _, parent_model = parent
    result, checkpoint = _child(parent, tmp_path, tiny_config, stage="classifier", loss="cb_softmax",
                                weight_decay=0.1, max_norm=0.1)
    norms = torch.linalg.vector_norm(parent_model["fc.weight"].double(), dim=1)
    delta = norms.min() + 0.1 * (norms.max() - norms.min())
    assert checkpoint["constraint"]["delta"].item() == pytest.approx(delta.item(), rel=1e-6)
    trained = torch.linalg.vector_norm(checkpoint["model"]["fc.weight"].double(), dim=1)
    assert torch.all(trained <= delta + 1e-5)
    assert result["config"]["sampler"] == "instance"
    for key, value in _backbone(parent_model).items():
        assert torch.equal(checkpoint["model"][key], value), key


def test_evaluating_the_parent_with_zero_epochs_reproduces_its_result(parent, tmp_path, tiny_config):
    _, parent_result, _ = parent
    result, checkpoint = _child(parent, tmp_path, tiny_config, epochs=0)
    assert result["history"] == [] and result["status"] == "complete"
    assert result["final"]["per_class_accuracy"] == parent_result["final"]["per_class_accuracy"]
    assert checkpoint["epoch"] == -1  # the model is saved: later commands read it like any run's
    assert train(tiny_config(init_from=str(parent[0]), epochs=0), tmp_path, resume=True,
                 verbose=0)["final"] == result["final"]


@pytest.mark.parametrize("method", list(POSTHOC))
def test_posthoc_tau_is_chosen_on_validation(parent, tmp_path, method, tiny_config):
    _, parent_result, _ = parent
    result, _ = _child(parent, tmp_path, tiny_config, epochs=0, posthoc=method)
    posthoc = result["final"]["posthoc"]
    scores = posthoc["val_balanced_accuracy"]
    assert posthoc["grid"] == list(POSTHOC[method].grid) and len(scores) == len(posthoc["grid"])
    assert posthoc["tau"] == posthoc["grid"][scores.index(max(scores))]  # the best, the earliest on ties
    assert posthoc["unadjusted"]["balanced_accuracy"] == parent_result["final"]["balanced_accuracy"]
    if method == "logit_adjust":  # tau = 0 is no adjustment: the parent's validation score
        assert scores[0] == pytest.approx(parent_result["history"][-1]["val"]["balanced_accuracy"])


def test_a_crt_run_resumes_to_the_same_result_without_its_parent(parent, tmp_path, interrupted, tiny_config):
    folder, _, _ = parent
    copy = tmp_path / "parent"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".lock"))
    config = tiny_config(epochs=3, init_from=str(copy), stage="crt")
    full = train(config, tmp_path / "full", verbose=0)
    interrupted(train, config, tmp_path / "part", verbose=0, at=2)
    shutil.rmtree(copy)  # the checkpoint holds everything the resumed run needs, the parent's record included
    again = train(config, tmp_path / "part", resume=True, verbose=0)
    assert again["history"] == full["history"] and again["final"] == full["final"]
    assert again["parent"] == full["parent"]


# --- what is refused -----------------------------------------------------------------------------


def test_parents_that_do_not_fit_are_refused(parent, tmp_path, tiny_config):
    folder, _, _ = parent
    with pytest.raises(ValueError, match="init_from must be the folder of a finished run .*has no checkpoint.pt"):
        train(tiny_config(init_from=str(tmp_path / "nothing"), stage="crt"), tmp_path / "a", verbose=0)
    with pytest.raises(ValueError, match=r"same split and architecture.*imbalance: parent 10.0, this run 20.0; "
                                         r"width: parent 8, this run 16"):
        train(tiny_config(imbalance=20, width=16, init_from=str(folder), stage="crt"), tmp_path / "b", verbose=0)
    cosine = tmp_path / "ldam"
    train(tiny_config(epochs=1, loss="ldam"), cosine, verbose=0)
    with pytest.raises(ValueError, match="cosine head"):
        train(tiny_config(init_from=str(cosine), stage="classifier"), tmp_path / "c", verbose=0)
    # crt re-initialises the classifier: a linear head on the cosine run's backbone is fine.
    assert train(tiny_config(init_from=str(cosine), stage="crt"), tmp_path / "d", verbose=0)["status"] == \
        "complete"


def test_an_unfinished_parent_is_refused(tmp_path, interrupted, tiny_config):
    interrupted(train, tiny_config(), tmp_path / "p", verbose=0, at=1)
    with pytest.raises(ValueError, match="init_from must be a finished run; .*stopped after epoch 1 of 2"):
        train(tiny_config(init_from=str(tmp_path / "p"), stage="crt"), tmp_path / "c", verbose=0)


@pytest.mark.parametrize("fields,message", [
    (dict(stage="crt"), "init_from must be a finished run's folder for stage='crt'"),
    (dict(stage="lws"), "init_from must be a finished run's folder for stage='lws'"),
    (dict(epochs=0), r"epochs must be >= 1 \(0 only with init_from"),
    (dict(posthoc="tau_norm", val_per_class=0), "val_per_class must be >= 1 for posthoc='tau_norm'"),
    (dict(posthoc="tau_norm", loss="ldam"), "posthoc='tau_norm' needs a linear classifier"),
    (dict(posthoc="tau_norm", stage="lws", init_from="x"), "posthoc='tau_norm' needs a linear classifier"),
    (dict(max_norm=0.1, stage="lws", init_from="x"), "max_norm must be None for a classifier that is not"),
    (dict(max_norm=1.5), r"max_norm must be in \[0, 1\]"),
    (dict(stage="two"), "stage must be one of 'joint', 'crt', 'lws', 'classifier'"),
    (dict(posthoc="temperature"), "posthoc must be one of 'none', 'tau_norm', 'logit_adjust'"),
])
def test_combinations_that_mean_nothing_are_refused(fields, message, tiny_config):
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)


@pytest.mark.slow
def test_every_stage_is_in_the_help_and_the_cli_refuses_in_one_line():
    done = subprocess.run([sys.executable, "-m", "longtail", "train", "--help"], capture_output=True, text=True)
    for name in (*STAGES, *POSTHOC):
        assert f"\n  {name} " in done.stdout
    done = subprocess.run([sys.executable, "-m", "longtail", "train", "--dataset", "synthetic", "--stage", "crt"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "init_from must be" in done.stderr


@pytest.mark.slow
def test_the_cli_trains_a_second_stage(parent, tmp_path):
    folder, _, _ = parent
    out = tmp_path / "crt"
    done = subprocess.run([sys.executable, "-m", "longtail", "train", "--dataset", "synthetic", "--imbalance", "10",
                           "--n-max", "60", "--val-per-class", "5", "--width", "8", "--batch-size", "32",
                           "--epochs", "2", "--stage", "crt", "--init-from", str(folder), "--posthoc", "logit_adjust",
                           "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["stage"] == "crt" and result["parent"]["path"] == str(folder.resolve())
    assert "posthoc" in result["final"]


def test_load_model_predicts_like_the_run_from_raw_pixels(parent, tmp_path, tiny_config):
    """The checkpoint carries the normalisation, class names and post-hoc tau: raw uint8 pixels give the run's
    test predictions."""
    from longtail.data.registry import load_dataset
    from longtail.train import load_model, prepare_data

    result, _ = _child(parent, tmp_path, tiny_config, epochs=0, posthoc="logit_adjust")
    trained = load_model(tmp_path)
    assert trained.classes == tuple(result["classes"]) and trained.posthoc["tau"] == result["final"]["posthoc"]["tau"]
    test = load_dataset("synthetic", None, train=False)
    predicted = trained.predict(test.images)
    per_class = [float((predicted[test.labels == c] == c).float().mean()) for c in range(10)]
    assert per_class == pytest.approx(result["final"]["per_class_accuracy"], abs=1e-6)
    # The trainer's normalised tensors give the same predictions as raw pixels through preprocess.
    data = prepare_data(tiny_config(), torch.device("cpu"))
    torch.testing.assert_close(trained.preprocess(test.images), data.test.images, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 16, 16\) or \(N, 16, 16\); got \(2, 3\)"):
        trained.predict(torch.zeros(2, 3, dtype=torch.uint8))
