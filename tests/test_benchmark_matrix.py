"""The accuracy benchmark's grid (benchmarks/accuracy/matrix.py): every cell a valid configuration, tune-beta's
choices trained by a grid cell of the same configuration, derived per-class betas read from the tuning cell."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy"))

import matrix  # noqa: E402
from report import grid_cell_of  # noqa: E402

from longtail import BetaRangeWarning, class_balanced_weights  # noqa: E402
from longtail.data import long_tailed_counts  # noqa: E402
from longtail.train import TrainConfig  # noqa: E402
from longtail.train.presets import PRESETS  # noqa: E402
from longtail.tune import paper_grid  # noqa: E402


@pytest.mark.parametrize("grid", sorted(matrix.GRIDS))
def test_every_cell_is_a_valid_configuration_with_a_unique_name(grid, tmp_path):
    cells = matrix.GRIDS[grid]()
    names = [c.name for c in cells]
    assert len(names) == len(set(names))
    by_name = {c.name: c for c in cells}
    for cell in cells:
        assert cell.parent is None or cell.parent in by_name, cell.name
        TrainConfig(**matrix.config_for(cell, 100, 0, tmp_path))


def test_the_recipe_is_the_preset_and_the_plateau():
    assert {k: matrix.RECIPE[k] for k in PRESETS["fmnist-lt"]} == PRESETS["fmnist-lt"]
    assert (matrix.RECIPE["width"], matrix.RECIPE["epochs"], matrix.RECIPE["eval_every"]) == (16, 80, 80)
    assert matrix.DRW_EPOCH == 64 and matrix.STAGE2_EPOCHS == 20


def test_tune_beta_choices_are_grid_cells_of_the_same_configuration(tmp_path):
    by_name = {c.name: c for c in matrix.cells()}
    for loss, beta, gamma in paper_grid():
        name = grid_cell_of({"loss": loss, "beta": beta, "gamma": gamma})
        config = TrainConfig(**matrix.config_for(by_name[name], 100, 0, tmp_path))
        assert config.loss == {"softmax": "cb_softmax", "sigmoid": "cb_sigmoid", "focal": "cb_focal"}[loss]
        assert config.beta == beta and config.reduction == "mean" and config.class_betas is None
        if loss == "focal":
            assert config.gamma == gamma
    assert grid_cell_of({"loss": "softmax", "beta": None, "gamma": 0.0}) == "cb_softmax_per_class_beta"
    assert len({grid_cell_of({"loss": l, "beta": b, "gamma": g}) for l, b, g in paper_grid()}) == 20


def test_the_per_class_beta_cell_reads_its_tuning_cells_choice(tmp_path):
    cell = {c.name: c for c in matrix.cells()}["cb_softmax_per_class_beta"]
    assert matrix.config_for(cell, 100, 1, tmp_path)["class_betas"] is None  # before the tuning cell ran
    folder = matrix.run_folder(tmp_path, 100, "tune_beta", 1)
    folder.mkdir(parents=True)
    (folder / matrix.TUNE_FILE).write_text(json.dumps(
        {"per_class_beta": {"radii": [0.1, 0.2], "betas": [[0.9, 0.5], [0.99, 0.8]], "best_radius": 0.2}}))
    config = matrix.config_for(cell, 100, 1, tmp_path)
    assert config["class_betas"] == [0.99, 0.8] and "init_from" not in config
    tune = {c.name: c for c in matrix.cells()}["tune_beta"]
    assert tune.kind == "tune_beta" and "init_from" not in matrix.config_for(tune, 100, 1, tmp_path)
    crt = {c.name: c for c in matrix.cells()}["crt"]
    assert matrix.config_for(crt, 100, 1, tmp_path)["init_from"] == str(matrix.run_folder(tmp_path, 100, "ce", 1))


def test_a_tuning_file_of_an_older_selection_rule_or_recipe_is_not_current(tmp_path):
    from longtail.tune import SELECTION_RULE

    tune = {c.name: c for c in matrix.cells()}["tune_beta"]
    expected = TrainConfig(**matrix.config_for(tune, 100, 1, tmp_path)).to_dict()
    assert matrix.tuning_is_current({"config": expected, "order": SELECTION_RULE}, expected)
    old_rule = "paper grid order ...; ties go to the earlier"  # files written before the NLL tie-break
    assert not matrix.tuning_is_current({"config": expected, "order": old_rule}, expected)
    assert not matrix.tuning_is_current({"config": {**expected, "epochs": 3}, "order": SELECTION_RULE}, expected)


def test_the_quick_subset_is_four_short_runs():
    quick = matrix.quick_cells()
    assert len(quick) == 4
    for cell in quick:
        assert cell.overrides["epochs"] == matrix.QUICK_EPOCHS == cell.overrides["eval_every"]
        assert cell.parent is None


def _run(error, val_error, seconds=100.0, loss="ce", autocast="bfloat16"):
    return {"autocast": autocast, "final": {"accuracy": 1 - error / 100, "shot_accuracy": {"many": 0.9, "medium": 0.8, "few": 0.7}}, "history": [{"val": {"accuracy": 1 - val_error / 100}}],
            "wall_seconds": seconds, "config": {"stage": "joint", "epochs": matrix.RECIPE["epochs"], "loss": loss}}


def test_the_acceptance_section_by_hand():
    from report import cdb_and_beta_section, paired_difference

    runs = {
        (100.0, "ce"): {s: _run(e, 10) for s, e in enumerate([13.5, 13.3, 13.6])},
        # the best class-balanced cell by validation (val 7) is not the best on test (cb_sigmoid is): val decides
        (100.0, "cb_softmax_b0.9999"): {s: _run(e, 7) for s, e in enumerate([11.2, 11.4, 11.3])},
        (100.0, "cb_sigmoid_b0.9999"): {s: _run(e, 8) for s, e in enumerate([10.0, 10.1, 10.2])},
        (100.0, "cdb_stable"): {s: _run(e, 9) for s, e in enumerate([12.1, 12.0, 12.3])},
        (100.0, "cdb_tau1.5"): {s: _run(e, 20) for s, e in enumerate([20.0, 25.0, 13.0])},
    }
    grid = [{"kind": "grid", "loss": "softmax", "beta": 0.9999, "gamma": 0.0, "val_balanced_accuracy": 0.9,
             "val_balanced_nll": 0.3, "test_balanced_accuracy": 0.88},
            {"kind": "grid", "loss": "sigmoid", "beta": 0.9999, "gamma": 0.0, "val_balanced_accuracy": 0.9,
             "val_balanced_nll": 0.2, "test_balanced_accuracy": 0.89}]
    per_class = {"kind": "per_class_beta", "loss": "softmax", "beta": None, "gamma": 0.0, "val_balanced_accuracy": 0.92,
                 "val_balanced_nll": 0.25, "test_balanced_accuracy": 0.87}
    tuning = {(100.0, s): {"chosen": per_class, "candidates": [*grid, per_class],
                           "cost": {"total_seconds": 50.0, "ce_wall_seconds": 100.0}} for s in range(3)}
    runs[(100.0, "cb_softmax_per_class_beta")] = {s: _run(e, 9) for s, e in enumerate([11.5, 11.6, 11.7])}
    text = "\n".join(cdb_and_beta_section(runs, tuning, [100.0]))
    assert "`cb_softmax_b0.9999` (best class-balanced by val)" in text
    # stable vs CE: gains 1.4, 1.3, 1.3 (mean 1.333) against 2 x max(std 0.153, std 0.153)
    assert "yes (+1.33 vs 2 x 0.15)" in text
    # paper CDB with seeds all over the place: the gain is negative, and the spread is large
    assert "no (-5.87 vs 2 x 6.03)" in text  # CE 13.47 - mean(20, 25, 13) = -5.87; std(20, 25, 13) = 6.03
    assert paired_difference(runs[(100.0, "cdb_stable")], runs[(100.0, "cb_softmax_b0.9999")], "error") in text
    # tune-beta (the paper grid, its default): the tie at 0.9 goes to the lower NLL, cb_sigmoid_b0.9999 (10.1 on
    # average) against the paper grid's best by validation (cb_softmax_b0.9999, 11.3): -1.20
    assert "| `cb_sigmoid_b0.9999` (0.900 / 0.8900) | 10.00 | `cb_softmax_per_class_beta` | 11.50 |" in text
    assert "tune-beta's choices (the paper grid, its default) trained end to end average 10.10 % test error" in text
    assert "difference -1.20 points" in text
    # with the per-class candidates too it chose the per-class betas (0.92 on validation; 11.6 on average): +0.30
    assert ("its choices with the per-class candidates too (`--per-class-beta`) trained end to end average 11.60 % "
            "test error") in text
    assert "difference +0.30 points" in text
    # its cost 50 s against 20 x 100 s; 2 of the grid's 20 runs are finished: too few to bound the ratio
    assert "0.025 against 20 x the CE run's time; 2 of the grid's 20 runs are finished in its precision" in text
    # with half the grid finished (100 s each) their sum bounds the ratio from above
    focal = [c.name for c in matrix.cells() if c.family in ("cb_focal",)][:8]
    for name in focal:
        runs[(100.0, name)] = {s: _run(12.0, 30) for s in range(3)}
    text = "\n".join(cdb_and_beta_section(runs, tuning, [100.0]))
    assert "at most 0.050: 10 of the grid's 20 runs are finished in its precision" in text
    # runs in another precision than the tuning's CE run (float32 on a slower CPU) do not count towards its cost
    for name in focal[:2]:
        runs[(100.0, name)] = {s: _run(12.0, 30, seconds=260.0, autocast="off") for s in range(3)}
    text = "\n".join(cdb_and_beta_section(runs, tuning, [100.0]))
    assert "0.025 against 20 x the CE run's time; 8 of the grid's 20 runs are finished in its precision" in text


def test_the_acceptance_section_says_where_tune_betas_ce_run_is_not_the_tables():
    from report import cdb_and_beta_section

    amd = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "native_bfloat16": False}
    intel = {"cpu": "Intel Xeon", "cpu_capability": "AVX512", "native_bfloat16": True}
    runs = {(200.0, "ce"): {s: {**_run(15.0 + s, 10), "hardware": amd} for s in range(2)},
            (200.0, "cb_softmax_b0.9999"): {s: _run(13.0, 8) for s in range(2)}}
    row = {"kind": "grid", "loss": "softmax", "beta": 0.9999, "gamma": 0.0, "val_balanced_accuracy": 0.9,
           "val_balanced_nll": 0.3, "test_balanced_accuracy": 0.88}
    tuning = {(200.0, s): {"chosen": row, "candidates": [row], "cost": {"total_seconds": 50.0, "ce_wall_seconds": 100.0}}
              for s in range(2)}
    tuning[(200.0, 0)]["ce_result"] = runs[(200.0, "ce")][0]  # a copy of the table's run: nothing to say
    tuning[(200.0, 1)]["ce_result"] = {**_run(15.4, 10), "hardware": intel}  # trained again elsewhere
    text = "\n".join(cdb_and_beta_section(runs, tuning, [200.0]))
    assert ("- Imbalance 200, seed 1: its CE run was trained again on Intel Xeon (AVX512, native bfloat16) (15.40 % "
            "test error), the table's CE run on AMD EPYC (AVX2, no native bfloat16) (16.00 %)") in text
    assert "seed 0: its CE run" not in text


def test_the_cost_estimate_scales_by_training_set_size():
    from report import _train_size, cost_estimate

    assert _train_size(100) == 14824 and _train_size(10) == 24415  # the counts in the result files
    runs = {(100.0, "ce"): {0: _run(13, 10, seconds=14824 * 0.02)}}
    text = cost_estimate(runs)
    joint = [c for c in matrix.cells() if c.kind == "train" and not c.starts_from_parent]
    # the cells left out at an imbalance (uniform weights) are not trained there: 14 at 10, 5 at 50 and 100
    trained = {10: len(joint) - 14, 50: len(joint) - 5, 100: len(joint) - 5, 200: len(joint)}
    hours = 0.02 * sum(_train_size(r) * trained[r] for r in matrix.IMBALANCES) * len(matrix.SEEDS) / 2 / 3600
    assert f"**{hours:.0f} hours in bfloat16 autocast** on a 2-core machine" in text
    # float32 runs (a CPU without native bfloat16) get their own rate, not one average over both machines
    runs[(100.0, "cdb_stable")] = {0: _run(12, 9, seconds=14824 * 0.05, autocast="off")}
    text = cost_estimate(runs)
    assert f"**{hours:.0f} hours in bfloat16 autocast** or **{hours * 2.5:.0f} hours in float32**" in text
    assert "over the 1 finished in float32 (50.00 ms per training image" in text


def test_cdb_weight_swings_by_hand():
    from report import weight_swings

    result = {"history": [{"cdb_weights": [1.0, 1.0]}, {"cdb_weights": [0.0, 2.0]}, {"cdb_weights": [2.0, 0.0]}]}
    assert weight_swings(result) == (1.5, 2 / 6)  # moves 1 and 2; two weights of six exactly 0
    assert weight_swings({"history": [{"val": {}}]}) == (None, None)


def test_the_priority_script_names_every_acceptance_cell_and_only_known_cells():
    import re

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy" / "run_matrix.sh").read_text()
    listed = set()
    lists = {}
    for name in ("FIRST", "ACCEPTANCE", "NEAR_UNIFORM"):
        value = re.search(rf"^{name}=(.*?)(?:\n(?!\S*,)|\n[A-Z])", text.replace("\\\n", ""), re.M).group(1)
        lists[name] = set(value.split(","))
        listed |= lists[name]
    known = {c.name for c in matrix.cells()}
    assert listed <= known, listed - known
    assert set(matrix.acceptance_cells()) | {"tune_beta", "cb_softmax_per_class_beta"} <= listed
    # The beta-0.9 cells wait until both imbalances' acceptance cells are done, for the reason the script gives:
    # at imbalance 100 and 50 their weights are uniform to 0.2 %, so they are the unweighted losses.
    def beta(name: str) -> str:
        return name.split("_b")[-1].split("_")[0] if "_b" in name else ""

    assert lists["NEAR_UNIFORM"] and {beta(name) for name in lists["NEAR_UNIFORM"]} == {"0.9"}
    assert "0.9" not in {beta(name) for name in lists["ACCEPTANCE"]}
    for rho in (100, 50):
        counts = long_tailed_counts(10, 5975, rho)
        with pytest.warns(BetaRangeWarning, match="nearly uniform"):  # the library says so too
            weights = class_balanced_weights(counts, beta=0.9)
        assert float(weights.max() / weights.min()) < 1.0025


def test_the_quick_ldam_drw_reweights_from_80_percent_of_its_epochs():
    (ldam,) = [c for c in matrix.quick_cells() if c.overrides.get("loss") == "ldam"]
    assert ldam.overrides["drw_epoch"] == 16 == matrix.QUICK_EPOCHS * 4 // 5


def test_the_headline_cells_are_ce_and_each_familys_best_by_validation():
    from report import headline_cells

    runs = {
        (100.0, "ce"): {0: _run(13.0, 10)},
        (100.0, "cb_softmax_b0.9999"): {0: _run(11.0, 8)},
        (100.0, "cb_sigmoid_b0.9999"): {0: _run(10.0, 9)},  # better on test, worse on validation: not chosen
        (100.0, "cdb_dynamic"): {0: _run(16.0, 14)},
        (100.0, "cdb_stable"): {0: _run(12.0, 10)},
        (100.0, "ce_posthoc_la"): {0: _run(12.5, 9)},
    }
    assert headline_cells(runs, 100.0) == ["ce", "cb_softmax_b0.9999", "cdb_dynamic", "cdb_stable", "ce_posthoc_la"]
    assert headline_cells({}, 50.0) == ["ce"]


def test_the_claims_section_by_hand():
    from report import _verdict, claims_section

    assert _verdict(None) == "not run yet"
    assert _verdict((-1.0, -1.5, -0.5)) == "holds" and _verdict((1.0, 0.5, 1.5)) == "does not hold"
    assert _verdict((-0.2, -0.9, 0.5)) == "not settled (the interval holds 0)"
    assert _verdict((0.3, -0.4, 1.0), "no worse") == "not refuted (the interval holds 0)"
    assert _verdict((0.9, 0.2, 1.6), "no worse") == "does not hold"
    runs = {
        (10.0, "ce"): {s: _run(e, 10) for s, e in enumerate([8.0, 8.2, 8.1])},
        (10.0, "cb_softmax_b0.999"): {s: _run(e, 9) for s, e in enumerate([7.9, 8.2, 8.0])},  # gain 0.07
        (100.0, "ce"): {s: _run(e, 10) for s, e in enumerate([13.5, 13.3, 13.6])},
        # by validation the sigmoid is chosen (val 7), although the softmax is better on test
        (100.0, "cb_sigmoid_b0.99"): {s: _run(e, 7) for s, e in enumerate([11.5, 11.4, 11.6])},
        (100.0, "cb_softmax_b0.9999"): {s: _run(e, 8) for s, e in enumerate([10.0, 10.1, 10.2])},
        (100.0, "cdb_tau1.5"): {s: _run(e, 12) for s, e in enumerate([14.5, 14.3, 14.6])},  # CE + 1.0 each seed
        (100.0, "cdb_dynamic"): {s: _run(e, 12) for s, e in enumerate([14.5, 15.3, 13.6])},
        # focal: gamma 1 chosen by validation (11) over gamma 2 (12); the class-balanced focal's best is beta 0.999
        (100.0, "focal_g1"): {s: _run(e, 11) for s, e in enumerate([13.0, 13.2, 13.1])},
        (100.0, "focal_g2"): {s: _run(e, 12) for s, e in enumerate([12.0, 12.0, 12.0])},
        (100.0, "cb_focal_b0.999_g1"): {s: _run(e, 9) for s, e in enumerate([12.0, 12.4, 12.2])},
        (100.0, "cb_focal_b0.9999_g2"): {s: _run(e, 9.5) for s, e in enumerate([10.0, 10.0, 10.0])},
    }
    text = "\n".join(claims_section(runs, [10.0, 100.0]))
    assert "| 100 | `cb_focal_b0.999_g1` - `focal_g1` | -0.90 [-1.15, -0.65] | holds |" in text
    assert "`focal_g2`" not in text and "| 10 | `None`" not in text
    assert "| 10 | `cb_softmax_b0.999` - `ce` | -0.07 [-0.21, +0.08] | not settled (the interval holds 0) |" in text
    assert "| 100 | `cb_sigmoid_b0.99` - `ce` | -1.97 [-2.11, -1.82] | holds |" in text
    assert "| 100 | `cdb_tau1.5` - `ce` | +1.00 [+1.00, +1.00] | does not hold |" in text
    assert "| 100 | `cdb_tau1.5` - `cb_sigmoid_b0.99` | +2.97 [+2.82, +3.11] | does not hold |" in text
    assert "`cdb_dynamic` - `cdb_tau1.5` | +0.00 [-2.48, +2.48] | not refuted (the interval holds 0) |" in text
    assert "(beta 0.99; chosen among the finished cells)" in text and "does not hold (beta 0.99" in text
    # the gain at 100 (1.97 [1.82, 2.11]) lies wholly beyond the gain at 10 (0.07 [-0.08, 0.21])
    assert "| 10 and 100 | best class-balanced - `ce` at each |" in text and text.rstrip().endswith("| holds |")
    assert claims_section({}, []) == []
    # one beta finished: no choice of beta, so no verdict on the paper's beta
    one = {(200.0, "ce"): runs[(100.0, "ce")], (200.0, "cb_sigmoid_b0.9999"): runs[(100.0, "cb_softmax_b0.9999")]}
    text = "\n".join(claims_section(one, [200.0]))
    assert "| 200 | `cb_sigmoid_b0.9999` - `ce` |" in text and "best beta" not in text


def test_the_plots_show_the_imbalance_with_the_most_finished_runs():
    from report import plot_imbalance

    three, one = {s: _run(10.0, 9) for s in range(3)}, {0: _run(10.0, 9)}
    runs = {(100.0, "ce"): three, (100.0, "crt"): three, (200.0, "ce"): three, (200.0, "lws"): one}
    assert plot_imbalance(runs, [100.0, 200.0]) == 100.0
    runs[(200.0, "crt")] = three
    assert plot_imbalance(runs, [100.0, 200.0]) == 200.0
    assert plot_imbalance({(50.0, "ce"): one, (100.0, "ce"): one}, [50.0, 100.0]) == 100.0  # a tie: the larger


def test_the_precision_note_names_each_imbalances_precision():
    from report import precision_note

    assert precision_note({"bfloat16"}) == ["Every run trained with bfloat16 autocast.", ""]
    assert precision_note({"off"})[0].startswith("Every run trained in float32")
    assert precision_note({"off", "bfloat16"})[0].startswith("Cells marked *float32*")
    assert precision_note({None}) == []  # results older than the autocast field: nothing claimed


def test_the_reductions_section_pairs_the_two_reductions_by_beta():
    from report import reductions_section

    runs = {
        (100.0, "cb_softmax_b0.9999"): {s: _run(e, 8) for s, e in enumerate([11.2, 11.4, 11.3])},
        (100.0, "cb_softmax_wm_b0.9999"): {s: _run(e, 9) for s, e in enumerate([11.0, 11.1, 11.2])},
        (100.0, "cb_softmax_b0.999"): {s: _run(e, 9) for s, e in enumerate([11.8, 11.7])},  # no wm partner: no row
    }
    text = "\n".join(reductions_section(runs, [100.0]))
    assert "| 100 | 0.9999 | 11.30 ± 0.10 / 8.00 ± 0.00 | 11.10 ± 0.10 / 9.00 ± 0.00 | -0.20 [-0.45, +0.05] |" in text
    assert "| 0.999 |" not in text
    assert reductions_section({}, [100.0]) == []


def test_the_toolbox_table_marks_the_group_with_the_lowest_validation_error():
    from report import toolbox_summary

    runs = {
        (100.0, "ce"): {s: _run(e, 10) for s, e in enumerate([13.5, 13.3, 13.6])},
        (100.0, "cb_softmax_b0.9999"): {s: _run(e, 8) for s, e in enumerate([11.2, 11.4, 11.3])},
        (100.0, "cb_sigmoid_b0.9999"): {s: _run(e, 9) for s, e in enumerate([11.0, 11.1, 11.2])},
        (100.0, "ldam_drw"): {s: _run(e, 7) for s, e in enumerate([11.9, 12.0, 12.1])},  # worse on test, best val
    }
    text = "\n".join(toolbox_summary(runs, matrix.cells(), [100.0]))
    assert "| 100 | class-balanced loss | `cb_softmax_b0.9999` | 3 | 11.30 ± 0.10 | 8.00 ± 0.00 |" in text
    assert "| 100 | LDAM-DRW **(lowest val)** | `ldam_drw` |" in text
    assert text.count("(lowest val)** |") == 1


def test_the_run_log_lists_invocations_that_trained_and_counts_the_idle_ones():
    from report import session_lines

    machine = {"cpu": "x", "cores": 2, "torch": "2.13.0"}
    cells = ",".join(f"c{i}" for i in range(10))
    sessions = [
        {"command": f"run.py --imbalances 50 --only {cells}", "started": "t0", "cells_trained": 3,
         "wall_seconds": 600, "workers": 2, "machine": machine, "finished": False},
        {"command": "run.py --only a,b", "started": "t1", "cells_trained": 0, "wall_seconds": 1, "workers": 2,
         "machine": machine, "finished": True},
        {"command": "run.py --only a,b", "started": "t2", "cells_trained": 0, "wall_seconds": 1, "workers": 2,
         "machine": machine, "finished": True},
    ]
    lines = session_lines(sessions)
    assert len(lines) == 2
    assert "`run.py --imbalances 50 --only c0,c1,c2,... (10 cells)`" in lines[0]
    assert "3 runs in 10 min wall" in lines[0] and "Stopped part-way" in lines[0]
    assert lines[1] == "- 2 more invocations found every cell they asked for finished and trained nothing."
    assert session_lines(sessions[:1]) == lines[:1]


def _write_result(out, rho, cell, seed, **changes):
    import run as runner

    folder = matrix.run_folder(out, rho, cell.name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**TrainConfig(**matrix.config_for(cell, rho, seed, out)).to_dict(), **changes.pop("config", {})}
    result = {"status": "complete", "autocast": "bfloat16", "config": config, **changes}
    (folder / "result.json").write_text(json.dumps(result))
    return runner


def test_run_state_tells_finished_stopped_and_stale_runs_apart(tmp_path):
    by_name = {c.name: c for c in matrix.cells()}
    ce, tune = by_name["ce"], by_name["tune_beta"]
    runner = _write_result(tmp_path, 100, ce, 0)
    assert runner.run_state(100, 0, ce, tmp_path) == "finished"
    assert runner.run_state(100, 1, ce, tmp_path) == "todo"  # nothing there
    _write_result(tmp_path, 100, ce, 1, status="running")
    assert runner.run_state(100, 1, ce, tmp_path) == "todo"  # stopped part-way: resumes
    _write_result(tmp_path, 100, ce, 2, config={"lr": 0.1})
    assert runner.run_state(100, 2, ce, tmp_path) == "stale"
    assert runner.run_state(100, 0, tune, tmp_path) == "todo"
    from longtail.tune import SELECTION_RULE

    folder = matrix.run_folder(tmp_path, 100, "tune_beta", 0)
    folder.mkdir(parents=True)
    config = TrainConfig(**matrix.config_for(tune, 100, 0, tmp_path)).to_dict()
    (folder / matrix.TUNE_FILE).write_text(json.dumps({"order": SELECTION_RULE, "config": config}))
    assert runner.run_state(100, 0, tune, tmp_path) == "finished"
    (folder / matrix.TUNE_FILE).write_text(json.dumps({"order": "an older rule", "config": config}))
    assert runner.run_state(100, 0, tune, tmp_path) == "todo"
    assert runner.needs_checkpoint(tune) and not runner.needs_checkpoint(ce)
    assert not runner.needs_checkpoint(by_name["cb_softmax_per_class_beta"])  # reads tune_beta.json, not weights
    assert runner.finished_precisions(tmp_path, 100) == {"bfloat16": 2}  # the running one is not counted


@pytest.mark.parametrize("reproduced", [True, False])
def test_a_parent_retrained_for_its_checkpoint_never_replaces_its_recorded_run(tmp_path, monkeypatch, capsys,
                                                                                reproduced):
    import longtail.train as lt

    ce = {c.name: c for c in matrix.cells()}["ce"]
    recorded = {"accuracy": 0.8651, "balanced_accuracy": 0.8651, "per_class_accuracy": [0.9, 0.8]}
    runner = _write_result(tmp_path, 100, ce, 0, final=recorded)
    folder = matrix.run_folder(tmp_path, 100, "ce", 0)
    saved = (folder / "result.json").read_text()

    def fake_train(config, out_dir, **kwargs):  # a retrain on another CPU: same seed, other rounding
        out_dir.mkdir(parents=True)
        (out_dir / "checkpoint.pt").write_bytes(b"weights")
        final = recorded if reproduced else {**recorded, "accuracy": 0.8623}
        result = {"status": "complete", "autocast": "bfloat16", "config": config.to_dict(), "final": final}
        (out_dir / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(lt, "train", fake_train)
    monkeypatch.setattr(lt, "prepare_data", lambda config, device: None)
    runner._DATA_CACHE.clear()
    runner._run_cell((100, 0, ce, str(tmp_path), True))
    out = capsys.readouterr().out
    assert (folder / "checkpoint.pt").exists() == reproduced  # children start only from the recorded run's weights
    assert [p.name for p in folder.parent.iterdir()] == ["seed0"]  # nothing set aside is left behind
    if reproduced:
        assert "reproduced" in out and "NOT" not in out
    else:
        assert (folder / "result.json").read_text() == saved  # the recorded run is back, unchanged
        assert "NOT reproduced, test accuracy 0.8651 recorded, 0.8623 now" in out


def test_a_parent_recorded_on_other_hardware_is_not_retrained(tmp_path, monkeypatch, capsys):
    import longtail.train as lt
    from longtail.train.device import describe_hardware, hardware

    ce = {c.name: c for c in matrix.cells()}["ce"]
    # a machine that is none of the real ones (an AMD EPYC with AVX2 was this test's 'other' until it ran on one)
    here = hardware(torch.device("cpu"))
    other = {**here, "cpu": f"not {here['cpu']}", "native_bfloat16": not here["native_bfloat16"]}
    runner = _write_result(tmp_path, 100, ce, 0, final={"accuracy": 0.8651}, hardware=other)
    folder = matrix.run_folder(tmp_path, 100, "ce", 0)
    saved = (folder / "result.json").read_text()

    def no_train(*args, **kwargs):
        raise AssertionError("a run recorded on other hardware was retrained")

    monkeypatch.setattr(lt, "train", no_train)
    monkeypatch.setattr(lt, "prepare_data", no_train)
    assert runner._run_cell((100, 0, ce, str(tmp_path), True)) is None
    out = capsys.readouterr().out
    assert f"it ran on {describe_hardware(other)}, this machine is {describe_hardware(here)}" in out
    assert describe_hardware(dict(cpu="AMD EPYC", cpu_capability="AVX2", native_bfloat16=False)) == \
        "AMD EPYC (AVX2, no native bfloat16)"
    assert (folder / "result.json").read_text() == saved and not (folder / "checkpoint.pt").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["seed0"]


@pytest.mark.parametrize("copied_before", [False, True])
def test_tune_beta_trains_its_own_ce_run_when_its_parent_cannot_be_reproduced_here(tmp_path, monkeypatch, capsys,
                                                                                  copied_before):
    import longtail
    from longtail.train.device import hardware

    by_name = {c.name: c for c in matrix.cells()}
    ce, tune = by_name["ce"], by_name["tune_beta"]
    here = hardware(torch.device("cpu"))
    other = {**here, "cpu": f"not {here['cpu']}"}
    runner = _write_result(tmp_path, 100, ce, 0, final={"accuracy": 0.8651}, hardware=other)
    parent = matrix.run_folder(tmp_path, 100, "ce", 0)
    saved = (parent / "result.json").read_text()
    folder = matrix.run_folder(tmp_path, 100, "tune_beta", 0)
    if copied_before:  # an earlier session copied the recorded run (with a checkpoint it no longer has)
        (folder / "ce").mkdir(parents=True)
        (folder / "ce" / "result.json").write_text(saved)
    calls = []

    def fake_tune(config, out_dir, **kwargs):
        ce_dir = Path(out_dir) / "ce"
        calls.append(sorted(p.name for p in ce_dir.iterdir()) if ce_dir.exists() else None)
        ce_dir.mkdir(parents=True, exist_ok=True)  # tune_beta trains the CE run itself
        (ce_dir / "checkpoint.pt").write_bytes(b"weights")
        (ce_dir / "result.json").write_text(json.dumps({"status": "complete", "final": {"accuracy": 0.8623}}))
        return types.SimpleNamespace(chosen={"label": "softmax beta=0.9999"})

    monkeypatch.setattr(longtail, "tune_beta", fake_tune)
    assert runner._tune_cell(100, 0, tune, str(tmp_path), folder) is not None
    assert calls == [None]  # no copy of the recorded run was left for tune_beta to reuse
    out = capsys.readouterr().out
    assert "chose softmax beta=0.9999  (its own CE run, trained here" in out
    assert "test accuracy 0.8623 here, 0.8651 recorded" in out
    assert (parent / "result.json").read_text() == saved and not (parent / "checkpoint.pt").exists()
    assert (folder / "ce" / "checkpoint.pt").exists()  # its own run's weights (not committed) are kept


def test_tune_beta_fails_with_a_line_when_its_parent_has_not_run(tmp_path, monkeypatch, capsys):
    import longtail

    import run as runner

    tune = {c.name: c for c in matrix.cells()}["tune_beta"]
    monkeypatch.setattr(longtail, "tune_beta", lambda *a, **k: (_ for _ in ()).throw(AssertionError("tuned")))
    folder = matrix.run_folder(tmp_path, 100, "tune_beta", 0)
    assert runner._tune_cell(100, 0, tune, str(tmp_path), folder) is None
    assert "tune_beta                FAILED: its parent" in capsys.readouterr().out


def test_the_runner_refuses_to_mix_precisions_within_an_imbalance(tmp_path, monkeypatch, capsys):
    by_name = {c.name: c for c in matrix.cells()}
    runner = _write_result(tmp_path, 100, by_name["ce"], 0)
    monkeypatch.setattr(runner, "precision", lambda cell, rho, seed, out: "off")  # a CPU without native bfloat16
    code = runner.main(["--imbalances", "100", "--seeds", "0", "--only", "ce,cb_softmax_b0.9999", "--out", str(tmp_path)])
    assert code == runner.REFUSED_PRECISION == 3
    err = capsys.readouterr().err
    assert "bfloat16 autocast (1 runs)" in err and "the 1 runs left in float32" in err and "--mixed-precision" in err
    assert not (tmp_path / "manifest.json").exists()  # refused before any work


def test_the_precision_check_takes_every_cell_of_the_matrix(tmp_path):
    # Later stages (post-hoc, 0 epochs; cRT, LWS) are valid configurations only with their parent's folder.
    runner = _write_result(tmp_path, 100, matrix.cells()[0], 0)
    for cell in matrix.cells():
        assert runner.precision(cell, 100, 0, tmp_path) in ("bfloat16", "off"), cell.name


def test_the_precision_section_pairs_float32_runs_with_the_matrix_by_seed():
    from convergence_report import precision_section

    bf16 = {(100.0, "ce"): {s: _run(e, 10) for s, e in enumerate([13.5, 13.3, 13.6])}}
    fp32 = {(100.0, "ce_fp32"): {s: _run(e, 10) for s, e in enumerate([13.4, 13.4, 13.4])},
            (100.0, "cdb_stable_fp32"): {}}
    text = "\n".join(precision_section(fp32, bf16, ["AMD EPYC"], ["Intel(R) Xeon(R) Processor"]))
    # bfloat16 - float32 by seed: +0.1, -0.1, +0.2: mean +0.07, std 0.153, t(0.975, 2) = 4.303: +-0.38
    assert "| `ce` | 3 | 13.40 ± 0.00 | 13.47 ± 0.15 | +0.07 [-0.31, +0.45] |" in text
    assert "float32 runs ran on AMD EPYC, the matrix's on Intel(R) Xeon(R) Processor" in text
    assert "cdb_stable" not in text.split("|---|")[-1]  # no finished float32 run: no row
    assert "pooled" not in text  # one cell: nothing to pool
    bf16[(100.0, "cb_softmax_b0.9999")] = {s: _run(e, 8) for s, e in enumerate([11.0, 11.2])}
    fp32[(100.0, "cb_softmax_b0.9999_fp32")] = {s: _run(e, 8) for s, e in enumerate([11.1, 11.1])}
    text = "\n".join(precision_section(fp32, bf16, [], []))
    # the five pairs' differences: +0.1, -0.1, +0.2, -0.1, +0.1: mean +0.04, std 0.134, t(0.975, 4) = 2.776
    assert "| all 2 cells, pooled | 5 pairs | | | +0.04 [-0.13, +0.21] |" in text
    assert precision_section({}, bf16, [], []) == []


def test_the_machines_of_one_precision_are_named_from_the_manifest(tmp_path):
    from convergence_report import _machines

    def session(cpu, native, trained):
        return {"machine": {"cpu": cpu, "native_bfloat16": native}, "cells_trained": trained}

    sessions = [session("Intel Xeon", True, 30), session("AMD EPYC", False, 4), session("Other", True, 0)]
    (tmp_path / "manifest.json").write_text(json.dumps({"sessions": sessions}))
    assert _machines(tmp_path) == ["AMD EPYC", "Intel Xeon"]  # a session that trained nothing is not named
    assert _machines(tmp_path, native_bfloat16=True) == ["Intel Xeon"]  # not the --mixed-precision float32 runs'
    assert _machines(tmp_path, native_bfloat16=False) == ["AMD EPYC"]
    assert _machines(tmp_path / "absent") == []


def test_the_runner_records_whether_the_machine_has_native_bfloat16():
    import run as runner

    from longtail.train.device import cpu_has_native_bfloat16

    assert runner._machine()["native_bfloat16"] is cpu_has_native_bfloat16()


def test_the_t_quantile_against_published_values():
    from report import t95

    # Student's t, 97.5 % quantile (standard tables): df 1, 11, 20, 25, 30, 60, 120
    for df, value in [(1, 12.706), (11, 2.201), (20, 2.086), (25, 2.060), (30, 2.042), (60, 2.000), (120, 1.980)]:
        assert t95(df) == pytest.approx(value, abs=1.5e-3)


def test_the_pooled_precision_verdict_bounds_the_effect_only_where_every_cell_agrees():
    from convergence_report import _pooled_verdict

    a = {("x", 0): _run(10.1, 5), ("x", 1): _run(9.9, 5), ("y", 0): _run(11.0, 5), ("y", 1): _run(11.2, 5)}
    b = {("x", 0): _run(10.0, 5), ("x", 1): _run(10.0, 5), ("y", 0): _run(11.1, 5), ("y", 1): _run(11.1, 5)}
    (_, text), = [_pooled_verdict(a, b)]
    # differences +0.1, -0.1, -0.1, +0.1: mean 0, std 0.115, t(0.975, 3) = 3.182: +-0.18
    assert text.startswith("Pooled over the 4 pairs, bfloat16 autocast minus float32 is +0.00 [-0.18, +0.18]")
    assert "at most 0.18 points either way" in text
    shifted = {("x", 0): _run(11.0, 5), ("x", 1): _run(11.1, 5), **{k: v for k, v in a.items() if k[0] == "y"}}
    (_, text), = [_pooled_verdict(shifted, b)]  # x: +1.0, +1.1, its own interval excludes 0
    assert "may differ between losses" in text and "at most" not in text
    assert _pooled_verdict({k: v for k, v in a.items() if k[0] == "x"}, b) == []  # one cell: nothing to pool


def test_the_cells_left_out_are_the_uniformly_weighted_ones_each_with_its_stand_in():
    by_name = {c.name: c for c in matrix.cells()}
    ten = matrix.omitted(10)
    # by hand: at imbalance 10 the counts run from 597 to 5975, so w_c = (1 - b) / (1 - b**n_c) is flat for b <= 0.99
    assert matrix.train_counts(10)[-1] == 597 and matrix.train_counts(10)[0] == 5975
    spread = (1 - 0.99 ** 5975) / (1 - 0.99 ** 597) - 1
    assert matrix.weight_spread(0.99, 10) == pytest.approx(spread, rel=1e-9) and 0.0024 < spread < 0.0025
    assert matrix.weight_spread(0.9, 10) == 0.0  # 1 - 0.9**597 rounds to 1 in float64
    assert matrix.weight_spread(0.999, 10) > 1.0 and matrix.weight_spread(0.9, 200) > matrix.UNIFORM_WEIGHTS
    for beta in (0.9, 0.99):
        assert ten[f"cb_softmax_b{beta:g}"] == ten[f"cb_softmax_wm_b{beta:g}"] == "ce"
        for gamma in matrix.GAMMAS:
            assert ten[f"cb_softmax_focal_b{beta:g}_g{gamma:g}"] == f"focal_g{gamma:g}"
    # the sigmoid forms have no unweighted cell: their smallest beta is trained and stands for the others
    assert "cb_sigmoid_b0.9" not in ten and ten["cb_sigmoid_b0.99"] == "cb_sigmoid_b0.9"
    assert all(f"cb_focal_b0.9_g{g:g}" not in ten and ten[f"cb_focal_b0.99_g{g:g}"] == f"cb_focal_b0.9_g{g:g}"
               for g in matrix.GAMMAS)
    assert len(ten) == 14
    assert set(matrix.omitted(100)) == set(matrix.omitted(50)) == {
        "cb_softmax_b0.9", "cb_softmax_wm_b0.9", *(f"cb_softmax_focal_b0.9_g{g:g}" for g in matrix.GAMMAS)}
    assert matrix.omitted(200) == {}
    for rho in matrix.IMBALANCES:
        for name, stand_in in matrix.omitted(rho).items():
            assert stand_in in by_name and stand_in not in matrix.omitted(rho)
            assert matrix.weight_spread(by_name[name].beta, rho) < matrix.UNIFORM_WEIGHTS


@pytest.mark.filterwarnings("ignore::longtail.BetaRangeWarning")  # nearly uniform weights are the point here
def test_a_left_out_cell_trains_its_stand_ins_loss():
    from longtail.train import LOSSES

    counts = torch.tensor(matrix.train_counts(10))
    logits, target = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 10, (64,))
    ce = LOSSES["ce"].build(counts)(logits, target)
    for reduction in ("mean", "weighted_mean"):  # beta 0.9: weights exactly 1, the same loss to the bit
        cb = LOSSES["cb_softmax"].build(counts, beta=0.9, class_betas=None, reduction=reduction)
        assert torch.equal(cb(logits, target), ce)
        near = LOSSES["cb_softmax"].build(counts, beta=0.99, class_betas=None, reduction=reduction)(logits, target)
        assert torch.allclose(near, ce, rtol=matrix.UNIFORM_WEIGHTS, atol=0)
    for gamma in matrix.GAMMAS:
        focal = LOSSES["focal"].build(counts, gamma=gamma)(logits, target)
        cb = LOSSES["cb_softmax_focal"].build(counts, beta=0.9, class_betas=None, reduction="mean", gamma=gamma)
        torch.testing.assert_close(cb(logits, target), focal, rtol=1e-12, atol=0)
    sigmoid = [LOSSES["cb_sigmoid"].build(counts, beta=b, class_betas=None, reduction="mean")(logits, target)
               for b in (0.9, 0.99)]
    assert torch.allclose(sigmoid[1], sigmoid[0], rtol=matrix.UNIFORM_WEIGHTS, atol=0)


def test_the_runner_leaves_out_the_omitted_cells(capsys):
    import run as runner

    by_name = {c.name: c for c in matrix.cells()}
    pairs = [(rho, seed, by_name[name]) for rho in (100.0, 10.0) for seed in (0, 1)
             for name in ("ce", "cb_softmax_b0.9", "cb_sigmoid_b0.99")]
    kept = runner.drop_omitted(pairs)
    assert [(rho, seed, c.name) for rho, seed, c in kept] == [
        (100.0, 0, "ce"), (100.0, 0, "cb_sigmoid_b0.99"), (100.0, 1, "ce"), (100.0, 1, "cb_sigmoid_b0.99"),
        (10.0, 0, "ce"), (10.0, 1, "ce")]
    out = capsys.readouterr().out.splitlines()
    assert out == ["rho   100  left out (uniform class-balanced weights; --include-omitted trains them): "
                   "cb_softmax_b0.9 (= ce)",
                   "rho    10  left out (uniform class-balanced weights; --include-omitted trains them): "
                   "cb_softmax_b0.9 (= ce), cb_sigmoid_b0.99 (= cb_sigmoid_b0.9)"]


def test_imbalance_200_is_pinned_to_float32_and_keeps_its_float32_runs_of_amp_auto(tmp_path):
    by_name = {c.name: c for c in matrix.cells()}
    ce = by_name["ce"]
    amp = {rho: TrainConfig(**matrix.config_for(ce, rho, 0)).amp for rho in matrix.IMBALANCES}
    assert amp == {10: "auto", 50: "auto", 100: "auto", 200: "off"}  # "auto": the trainer's default
    assert matrix.config_for(by_name["focal_g1"], 200, 1)["amp"] == "off"
    pinned = TrainConfig(**matrix.config_for(ce, 200, 0)).to_dict()
    auto = {**pinned, "amp": "auto"}  # how a CPU without native bfloat16 recorded its float32 runs
    assert matrix.same_recipe(auto, pinned, "off") and not matrix.same_recipe(auto, pinned, "bfloat16")
    assert not matrix.same_recipe(auto, pinned) and matrix.same_recipe(pinned, pinned)
    assert not matrix.same_recipe({**pinned, "amp": "bf16"}, pinned, "bfloat16")
    assert not matrix.same_recipe(pinned, auto, "off")  # an "auto" cell is not finished by a pinned run
    assert not matrix.same_recipe({**auto, "lr": 0.1}, pinned, "off")
    runner = _write_result(tmp_path, 200, ce, 0, config={"amp": "auto"}, autocast="off")
    assert runner.run_state(200, 0, ce, tmp_path) == "finished"
    _write_result(tmp_path, 200, ce, 1, config={"amp": "auto"}, autocast="bfloat16")
    assert runner.run_state(200, 1, ce, tmp_path) == "stale"
    assert runner.precision(by_name["cb_sigmoid_b0.9999"], 200, 0, tmp_path) == "off"


def test_the_report_puts_a_left_out_cells_stand_in_in_its_place(tmp_path):
    from report import headline_cells, is_alias, load, omitted_section, shown

    by_name = {c.name: c for c in matrix.cells()}
    final = {"accuracy": 0.9, "balanced_accuracy": 0.9, "per_class_accuracy": [0.9] * 10}
    for seed in range(2):
        for rho, name in ((10, "ce"), (100, "ce"), (100, "cb_softmax_b0.9")):
            _write_result(tmp_path, rho, by_name[name], seed, final=final, history=[{"val": {"accuracy": 0.9}}])
    runs = load(tmp_path)
    assert runs[(10.0, "cb_softmax_b0.9")] is runs[(10.0, "ce")] and is_alias(runs, 10.0, "cb_softmax_wm_b0.99")
    assert not is_alias(runs, 100.0, "cb_softmax_b0.9") and not is_alias(runs, 10.0, "ce")
    assert (10.0, "cb_sigmoid_b0.99") not in runs  # its stand-in has not run
    assert shown(runs, 10.0, "cb_softmax_b0.99") == "`cb_softmax_b0.99` (= `ce`)"
    assert headline_cells(runs, 10.0) == ["ce"]  # the best class-balanced cell by validation is CE's stand-in
    text = "\n".join(omitted_section(runs, [10.0, 100.0]))
    assert "| 10 | `cb_softmax_b0.99` | 0.0025 | `ce` | not run (left out) |" in text
    assert "| 100 | `cb_softmax_b0.9` | 0.002 | `ce` | +0.00 [+0.00, +0.00] |" in text


def test_no_run_starts_after_the_given_time(tmp_path, monkeypatch, capsys):
    import argparse

    import longtail.train as lt
    import run as runner

    assert runner.utc_time("2026-12-06 21:45") == 1796593500.0  # date -u -d '2026-12-06 21:45' +%s
    with pytest.raises(argparse.ArgumentTypeError, match="YYYY-MM-DD HH:MM; got '21:45'"):
        runner.utc_time("21:45")

    def no_train(*args, **kwargs):
        raise AssertionError("a run started past --no-start-after")

    monkeypatch.setattr(lt, "train", no_train)
    monkeypatch.setattr(lt, "prepare_data", no_train)
    by_name = {c.name: c for c in matrix.cells()}
    runner._set_no_start_after(runner.utc_time("2026-01-01 00:00"))
    try:
        assert runner._run_cell((100, 0, by_name["ce"], str(tmp_path), False)) is None
        assert runner._run_cell((100, 0, by_name["tune_beta"], str(tmp_path), False)) is None
        out = capsys.readouterr().out
        assert out.count("not started: past --no-start-after 2026-01-01 00:00 UTC") == 2
        _write_result(tmp_path, 100, by_name["focal_g1"], 0)  # a finished run is skipped without a word
        assert runner._run_cell((100, 0, by_name["focal_g1"], str(tmp_path), False)) is None
        assert capsys.readouterr().out == ""
    finally:
        runner._set_no_start_after(None)
    assert not runner._too_late(100, 0, by_name["ce"])


def test_the_choice_by_validation_scores_every_cell_on_the_matrix_seeds_only():
    from report import best_by_validation

    # seeds 3 and 4 (the headline rows' extra seeds) of the chosen cell must not hand the choice to another cell
    runs = {(100.0, "cb_sigmoid_b0.9999"): {**{s: _run(11.3, 7.0) for s in range(3)},
                                            **{s: _run(11.3, 9.0) for s in (3, 4)}},
            (100.0, "cb_softmax_b0.9999"): {s: _run(11.3, 7.5) for s in range(3)}}
    assert best_by_validation(runs, 100.0, ["cb_softmax_b0.9999", "cb_sigmoid_b0.9999"]) == "cb_sigmoid_b0.9999"
    assert best_by_validation({(100.0, "ce"): {3: _run(13, 7)}}, 100.0, ["ce"]) is None  # no matrix seed yet
