"""tune_beta and `longtail tune-beta` (beyond the paper): one CE run, heads refit on cached features, the choice on
validation, the report and its file; the vectorised refit against separate ones."""

from __future__ import annotations

import json
import math

import pytest
import torch

import longtail
from longtail.cli import main
from longtail.train import TrainConfig
from longtail.tune import (
    Candidate,
    HeadSettings,
    TuneResult,
    balanced_accuracy,
    paper_grid,
    per_class_beta_search,
    refit_heads,
    tune_beta,
)

FAST = dict(dataset="synthetic", imbalance=10, n_max=60, epochs=2, batch_size=32, width=8, val_per_class=5,
            device="cpu")
CLI_FAST = ["--dataset", "synthetic", "--imbalance", "10", "--n-max", "60", "--epochs", "2", "--batch-size", "32",
            "--width", "8", "--val-per-class", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`longtail tune-beta` once on the synthetic set (the CE run is the expensive part: other tests reuse it)."""
    out = tmp_path_factory.mktemp("tune") / "out"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["tune-beta", *CLI_FAST, "--out", str(out), "--head-epochs", "4", "--quiet"]) == 0
    return out, stdout.getvalue()


def test_paper_grid_order():
    grid = paper_grid()
    assert len(grid) == 20 and len(set(grid)) == 20
    assert grid[:4] == [("softmax", b, 0.0) for b in (0.9, 0.99, 0.999, 0.9999)]
    assert grid[4:8] == [("sigmoid", b, 0.0) for b in (0.9, 0.99, 0.999, 0.9999)]
    assert grid[8:11] == [("focal", 0.9, g) for g in (0.5, 1.0, 2.0)] and grid[-1] == ("focal", 0.9999, 2.0)


def test_the_cli_prints_the_table_and_the_choice_and_writes_the_file(cli_run):
    out, text = cli_run
    data = json.loads((out / "tune_beta.json").read_text())
    result = TuneResult(**data)
    assert [c["label"] for c in result.candidates[:20]] == [Candidate(*g).label for g in paper_grid()]
    assert all(c["kind"] == "per_class_beta" and c["beta"] is None for c in result.candidates[20:])
    assert len(result.candidates) == 20 + len(result.per_class_beta["radii"])
    scores = [c["val_balanced_accuracy"] for c in result.candidates]
    best = scores.index(max(scores))  # the first of the best: ties go to the earlier candidate
    assert result.chosen == result.candidates[best] and result.chosen["index"] == best
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [r["label"] for r in result.references] == ["CE-trained head, as it is", "softmax beta 0", "softmax beta 1"]
    cost = result.cost
    assert cost["num_candidates"] == len(result.candidates) and cost["num_refits"] == len(result.candidates) + 2
    parts = ("data_seconds", "ce_wall_seconds", "feature_seconds", "cover_seconds", "refit_seconds")
    assert cost["total_seconds"] == pytest.approx(sum(cost[k] for k in parts))
    assert cost["full_grid_seconds_estimate"] == pytest.approx(cost["num_candidates"] * cost["ce_wall_seconds"])
    assert cost["ratio"] == pytest.approx(cost["total_seconds"] / cost["full_grid_seconds_estimate"])
    assert result.train_counts == [60, 46, 35, 27, 21, 16, 12, 10, 7, 6]
    assert (out / "ce" / "result.json").exists() and result.ce_run == str(out / "ce")
    # The chosen candidate's class weights are those of the library for its beta.
    if result.chosen["beta"] is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", longtail.BetaRangeWarning)
            expected = longtail.class_balanced_weights(result.train_counts, result.chosen["beta"])
        assert result.chosen["weights"] == pytest.approx(expected.tolist())
    assert "* " + result.chosen["label"] in text and "chosen: " + result.chosen["label"] in text
    assert "(ratio " in text and f"wrote {out / 'tune_beta.json'}" in text
    n_c = result.per_class_beta["prototypes"]
    assert all(1 <= n <= c for row in n_c for n, c in zip(row, result.train_counts))
    assert result.per_class_beta["betas"][0] == pytest.approx([(n - 1) / n for n in n_c[0]])


def test_an_existing_file_is_refused_without_overwrite_and_the_ce_run_is_reused(cli_run, capsys):
    out, _ = cli_run
    before = (out / "tune_beta.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["tune-beta", *CLI_FAST, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tune_beta.json" in err and "--overwrite" in err
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tune_beta(TrainConfig(**FAST), out_dir=out)
    assert (out / "tune_beta.json").read_text() == before
    # With overwrite: the finished CE run is reused (not retrained), the file replaced.
    result = tune_beta(TrainConfig(**FAST), out_dir=out, overwrite=True, head_epochs=2, per_class_beta=False,
                       candidates=[("softmax", 0.99), ("focal", 0.999, 2.0)])
    assert result.cost["ce_run_reused"] is True
    assert [c["label"] for c in result.candidates] == ["softmax beta 0.99", "focal beta 0.999 gamma 2"]
    assert json.loads((out / "tune_beta.json").read_text()) == json.loads(json.dumps(result.to_dict()))
    # Another configuration's CE run is not reused silently.
    with pytest.raises(ValueError, match=r"out_dir must hold no CE run or one of this configuration; got .*seed"):
        tune_beta(TrainConfig(**{**FAST, "seed": 1}), out_dir=out, overwrite=True, head_epochs=1)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(loss="cb_softmax"), r"config.loss must be 'ce' .*; got 'cb_softmax'"),
        (dict(val_per_class=0), r"config.val_per_class must be >= 1 .*; got 0"),
        (dict(drw_epoch=1), r"config.drw_epoch must be None .*; got 1"),
    ],
)
def test_bad_configurations_are_refused_before_any_work(fields, match):
    with pytest.raises(ValueError, match=match):
        tune_beta(TrainConfig(**{**FAST, **fields}))


def test_bad_candidates_and_settings_are_refused():
    config = TrainConfig(**FAST)
    with pytest.raises(ValueError, match=r"gamma is used only with loss='focal' or 'softmax_focal'"):
        tune_beta(config, candidates=[("softmax", 0.9, 1.0)])
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got 1.5"):
        tune_beta(config, candidates=[("softmax", 1.5)])
    with pytest.raises(ValueError, match=r"candidates\[0\] loss must be one of"):
        tune_beta(config, candidates=[("ldam", 0.9)])
    with pytest.raises(ValueError, match=r"head_epochs must be an integer >= 1; got 0"):
        tune_beta(config, head_epochs=0)
    with pytest.raises(TypeError, match="config must be a longtail.train.TrainConfig"):
        tune_beta({"loss": "ce"})


def _blobs(seed=0, n_per_class=(80, 30, 8), dim=6):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per_class), dim, generator=gen) * 2.0
    x = torch.cat([centres[c] + torch.randn(n, dim, generator=gen) for c, n in enumerate(n_per_class)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return x, y


def test_the_vectorised_refit_equals_separate_refits():
    x, y = _blobs()
    xv, yv = _blobs(seed=1, n_per_class=(20, 20, 20))
    counts = torch.bincount(y)
    candidates = [Candidate("softmax", 0.9), Candidate("sigmoid", 0.99), Candidate("focal", 0.999, 2.0),
                  Candidate("softmax", None, betas=(0.9, 0.5, 0.0), radius=1.0, kind="per_class_beta")]
    settings = HeadSettings(epochs=5, batch_size=16, lr=0.05, weight_decay=1e-3)
    together = refit_heads(x, y, candidates, counts, {"val": (xv, yv)}, settings)["val"]
    alone = [refit_heads(x, y, [c], counts, {"val": (xv, yv)}, settings)["val"][0] for c in candidates]
    assert together == pytest.approx(alone, abs=1.5 / 60)  # at most one validation image apart (float round-off)
    assert all(s > 0.6 for s in together)  # overlapping blobs: chance is 1/3


def test_balanced_accuracy_and_ties():
    labels = torch.tensor([0, 0, 0, 1, 2])
    predictions = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 1], [0, 2]])
    got = balanced_accuracy(predictions, labels, 4)  # class 3 absent: left out of the mean
    assert got.tolist() == pytest.approx([(2 / 3 + 1 + 0) / 3, (1 / 3 + 1 + 1) / 3])


def test_per_class_beta_search_as_a_function():
    x, y = _blobs()
    xv, yv = _blobs(seed=1, n_per_class=(20, 20, 20))
    found = per_class_beta_search(x, y, xv, yv, torch.bincount(y), radii=[0.05, 0.5, 2.0],
                                  settings=HeadSettings(epochs=3, batch_size=32))
    assert found["radii"] == [0.05, 0.5, 2.0] and len(found["val_balanced_accuracy"]) == 3
    assert found["prototypes"][-1] == [1, 1, 1] and found["betas"][-1] == [0.0, 0.0, 0.0]  # r = 2: the sphere
    assert found["prototypes"][0] == [80, 30, 8]  # a tiny radius: every sample its own prototype
    best = max(range(3), key=lambda i: (found["val_balanced_accuracy"][i], -i))
    assert found["radius"] == found["radii"][best] and math.isclose(sum(found["weights"]), 3.0, rel_tol=1e-5)


def test_tune_beta_is_exported():
    assert longtail.tune_beta is tune_beta and longtail.TuneResult is TuneResult
    assert "tune-beta" in main.__globals__["build_parser"]().format_help()
