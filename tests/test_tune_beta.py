"""tune_beta and `longtail tune-beta` (beyond the paper): one CE run, heads refit on cached features, the choice on
validation, the report and its file; the vectorised refit against separate ones."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import longtail
from longtail.cli import main
from longtail.tune import (
    Candidate,
    HeadSettings,
    TEMPERATURES,
    TuneResult,
    balanced_accuracy,
    calibrated_balanced_nll,
    choose,
    choose_row,
    paper_grid,
    per_class_beta_search,
    refit_heads,
    tune_beta,
)

CLI_FAST = ["--dataset", "synthetic", "--imbalance", "10", "--n-max", "60", "--epochs", "2", "--batch-size", "32",
            "--width", "8", "--val-per-class", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_config(tiny_config):
    """The tiny run as CLI_FAST gives it: 5 validation images per class (tune_beta chooses on them), on the CPU."""
    return functools.partial(tiny_config, val_per_class=5, device="cpu")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`longtail tune-beta` once on the synthetic set (the CE run is the expensive part: other tests reuse it)."""
    out = tmp_path_factory.mktemp("tune") / "out"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["tune-beta", *CLI_FAST, "--out", str(out), "--head-epochs", "4", "--per-class-beta",
                     "--quiet"]) == 0
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
    nll = [c["val_balanced_nll"] for c in result.candidates]
    # The best accuracy; among those tied with it, the lowest calibrated NLL, then the earliest.
    best = min((i for i, s in enumerate(scores) if s >= max(scores) - 1e-9), key=lambda i: (nll[i], i))
    assert result.chosen == result.candidates[best] and result.chosen["index"] == best
    # The same rule within the paper grid alone, and within the per-class betas alone (the radius it reports).
    in_grid = [i for i in range(20) if scores[i] >= max(scores[:20]) - 1e-9]
    assert result.grid_chosen == result.candidates[min(in_grid, key=lambda i: (nll[i], i))]
    assert result.per_class_beta["best_radius"] == choose_row(result.candidates, ("per_class_beta",))["radius"]
    if result.grid_chosen["index"] != result.chosen["index"]:
        assert "within the paper grid: " + result.grid_chosen["label"] in text
    assert all(0.0 <= s <= 1.0 for s in scores) and all(0.0 <= v < math.inf for v in nll)
    assert all(r["val_balanced_nll"] >= 0.0 and r["test_balanced_nll"] >= 0.0 for r in result.references)
    assert "val nll" in text.splitlines()[0] or any("val nll" in line for line in text.splitlines())
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


def test_an_existing_file_is_refused_without_overwrite_and_the_ce_run_is_reused(cli_run, capsys, tiny_config):
    out, _ = cli_run
    before = (out / "tune_beta.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["tune-beta", *CLI_FAST, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tune_beta.json" in err and "--overwrite" in err
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tune_beta(tiny_config(), out_dir=out)
    assert (out / "tune_beta.json").read_text() == before
    # With overwrite: the finished CE run is reused (not retrained), the file replaced.
    result = tune_beta(tiny_config(), out_dir=out, overwrite=True, head_epochs=2,
                       candidates=[("softmax", 0.99), ("focal", 0.999, 2.0)])
    assert result.per_class_beta is None  # the per-class candidates are opt-in
    assert result.cost["ce_run_reused"] is True
    assert [c["label"] for c in result.candidates] == ["softmax beta 0.99", "focal beta 0.999 gamma 2"]
    assert result.grid_chosen == result.chosen  # no per-class candidates: the two choices are one
    assert json.loads((out / "tune_beta.json").read_text()) == json.loads(json.dumps(result.to_dict()))
    # Another configuration's CE run is not reused silently.
    with pytest.raises(ValueError, match=r"out_dir must hold no CE run or one of this configuration; got .*seed"):
        tune_beta(tiny_config(seed=1), out_dir=out, overwrite=True, head_epochs=1)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(loss="cb_softmax"), r"config.loss must be 'ce' .*; got 'cb_softmax'"),
        (dict(val_per_class=0), r"config.val_per_class must be >= 1 .*; got 0"),
        (dict(drw_epoch=1), r"config.drw_epoch must be None .*; got 1"),
    ],
)
def test_bad_configurations_are_refused_before_any_work(fields, match, tiny_config):
    with pytest.raises(ValueError, match=match):
        tune_beta(tiny_config(**fields))


def test_bad_candidates_and_settings_are_refused(tiny_config):
    config = tiny_config()
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
    alone = [refit_heads(x, y, [c], counts, {"val": (xv, yv)}, settings)["val"] for c in candidates]
    accuracy = together["balanced_accuracy"]
    assert accuracy == pytest.approx([a["balanced_accuracy"][0] for a in alone], abs=1.5 / 60)  # one image apart
    assert together["balanced_nll"] == pytest.approx([a["balanced_nll"][0] for a in alone], rel=1e-3)
    assert all(s > 0.6 for s in accuracy)  # overlapping blobs: chance is 1/3
    assert all(0.0 < v < math.log(3) for v in together["balanced_nll"])  # better than the uniform guess


def test_balanced_accuracy():
    labels = torch.tensor([0, 0, 0, 1, 2])
    predictions = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 1], [0, 2]])
    got = balanced_accuracy(predictions, labels, 4)  # class 3 absent: left out of the mean
    assert got.tolist() == pytest.approx([(2 / 3 + 1 + 0) / 3, (1 / 3 + 1 + 1) / 3])


def test_equal_counts_in_another_order_tie():
    """Two heads that count the same images right in other classes: the float means can differ in the last bit (the
    rho-50 seed-1 run had 0.9080000000000001 against 0.908), and must still tie."""
    labels = torch.arange(10).repeat_interleave(25)
    right = [torch.tensor([23, 24, 25, 22, 21, 25, 24, 23, 25, 15]),
             torch.tensor([15, 25, 23, 24, 21, 22, 25, 25, 24, 23])]
    predictions = torch.stack([
        torch.where(torch.arange(250) % 25 < right[k][labels], labels, (labels + 1) % 10) for k in range(2)
    ], 1)
    scores = balanced_accuracy(predictions, labels, 10).tolist()
    assert scores[0] != scores[1] and scores[0] == pytest.approx(scores[1], abs=1e-12)  # 0.908 and 0.9079999999999998
    assert choose(scores, [0.5, 0.4]) == 1 and choose(scores, [0.4, 0.5]) == 0


@given(st.lists(st.tuples(st.sampled_from([0.5, 0.7, 0.9, 0.9 + 1e-15, 0.9 - 1e-15]),
                          st.floats(0.0, 3.0) | st.just(math.nan)), min_size=1, max_size=12))
def test_choose_picks_a_best_score_and_the_lowest_loss_among_the_tied(pairs):
    scores, losses = [p[0] for p in pairs], [p[1] for p in pairs]
    i = choose(scores, losses)
    tied = [j for j, v in enumerate(scores) if v >= max(scores) - 1e-9]
    assert i in tied
    key = [math.inf if math.isnan(losses[j]) else losses[j] for j in range(len(losses))]
    assert all(key[i] < key[j] or (key[i] == key[j] and i < j) for j in tied if j != i)
    assert choose(scores) == tied[0]


def test_choose_row_picks_among_the_kinds_asked_for():
    rows = [{"kind": "grid", "val_balanced_accuracy": 0.8, "val_balanced_nll": 0.5, "label": "a"},
            {"kind": "grid", "val_balanced_accuracy": 0.8, "val_balanced_nll": 0.4, "label": "b"},
            {"kind": "per_class_beta", "val_balanced_accuracy": 0.9, "val_balanced_nll": 0.9, "label": "c"}]
    assert choose_row(rows)["label"] == "c"
    assert choose_row(rows, ("grid",))["label"] == "b"  # the tie at 0.8 to the lower NLL
    with pytest.raises(ValueError, match=r"rows must hold a candidate of kind \['reference'\]; got none"):
        choose_row(rows, ("reference",))


def test_choose_breaks_ties_by_the_lower_loss_then_the_earlier_index():
    assert choose([0.5, 0.7, 0.7, 0.6]) == 1
    assert choose([0.5, 0.7, 0.7, 0.6], [0.0, 0.3, 0.2, 0.0]) == 2  # the lower NLL among the tied
    assert choose([0.5, 0.7, 0.7, 0.7], [0.0, 0.3, 0.2, 0.2]) == 2  # equal NLL too: the earlier
    assert choose([0.7, 0.69], [1.0, 0.0]) == 0  # the NLL never outranks a better accuracy
    assert choose([0.7, 0.7 - 1e-10], [1.0, 0.0]) == 1  # within the tolerance
    assert choose([0.7, 0.7 - 1e-10], [1.0, 0.0], tolerance=0.0) == 0
    assert choose([0.7, 0.7], [math.nan, 2.0]) == 1  # NaN is the worst
    with pytest.raises(ValueError, match=r"scores must hold at least one score; got none"):
        choose([])
    with pytest.raises(ValueError, match=r"tiebreak must hold one value per score \(2\); got 1"):
        choose([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match=r"tolerance must be"):
        choose([0.1], tolerance=-1.0)


def _calibrated_nll_reference(logits, labels):
    """numpy, one head and one temperature at a time (the loops the vectorised form replaces)."""
    import numpy as np

    z, y = logits.double().numpy(), labels.numpy()
    out = []
    for k in range(z.shape[2]):
        best = math.inf
        for t in TEMPERATURES:
            s = z[:, :, k] / t
            s = s - s.max(1, keepdims=True)
            nll = -(s[np.arange(len(y)), y] - np.log(np.exp(s).sum(1)))
            best = min(best, float(np.mean([nll[y == c].mean() for c in np.unique(y)])))
        out.append(best)
    return out


def test_calibrated_balanced_nll_against_a_reference_and_its_invariances():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 40 + [1] * 7 + [2] * 3 + [4] * 10)  # class 3 absent
    logits = torch.randn(60, 5, 3, generator=gen) * 3
    logits[torch.arange(60), labels] += 2.0
    got = calibrated_balanced_nll(logits, labels, 5, chunk=7)  # chunks that split the classes
    assert got.dtype == torch.float64 and got.shape == (3,)
    assert got.tolist() == pytest.approx(_calibrated_nll_reference(logits, labels), rel=1e-10)
    # The temperature makes it blind to a head's scale (a factor on the grid: 2^(1/6) steps) and to a constant shift.
    scaled = torch.stack([logits[..., 0], logits[..., 0] * 2 ** (1 / 3), logits[..., 0] + 5.0], -1)
    assert calibrated_balanced_nll(scaled, labels, 5).tolist() == pytest.approx([got[0].item()] * 3, rel=1e-6)
    # Balanced: class 0's images repeated three times leave it unchanged (each class counts once).
    more = torch.cat([logits, logits[:40], logits[:40]]), torch.cat([labels, labels[:40], labels[:40]])
    assert calibrated_balanced_nll(*more, 5).tolist() == pytest.approx(got.tolist(), rel=1e-12)
    with pytest.raises(ValueError, match=r"logits must be \(N, C, K\) and labels \(N,\); got \(60, 5\)"):
        calibrated_balanced_nll(logits[..., 0], labels, 5)


def test_per_class_beta_search_as_a_function():
    x, y = _blobs()
    xv, yv = _blobs(seed=1, n_per_class=(20, 20, 20))
    found = per_class_beta_search(x, y, xv, yv, torch.bincount(y), radii=[0.05, 0.5, 2.0],
                                  settings=HeadSettings(epochs=3, batch_size=32))
    assert found["radii"] == [0.05, 0.5, 2.0] and len(found["val_balanced_accuracy"]) == 3
    assert found["prototypes"][-1] == [1, 1, 1] and found["betas"][-1] == [0.0, 0.0, 0.0]  # r = 2: the sphere
    assert found["prototypes"][0] == [80, 30, 8]  # a tiny radius: every sample its own prototype
    best = choose(found["val_balanced_accuracy"], found["val_balanced_nll"])
    assert found["radius"] == found["radii"][best] and math.isclose(sum(found["weights"]), 3.0, rel_tol=1e-5)


def test_tune_beta_is_exported():
    assert longtail.tune_beta is tune_beta and longtail.TuneResult is TuneResult
    assert "tune-beta" in main.__globals__["build_parser"]().format_help()
