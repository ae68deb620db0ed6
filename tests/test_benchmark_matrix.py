"""The accuracy benchmark's grid (benchmarks/accuracy/matrix.py): every cell a valid configuration, tune-beta's
choices trained by a grid cell of the same configuration, derived per-class betas read from the tuning cell."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy"))

import matrix  # noqa: E402
from report import grid_cell_of  # noqa: E402

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


def test_the_quick_subset_is_four_short_runs():
    quick = matrix.quick_cells()
    assert len(quick) == 4
    for cell in quick:
        assert cell.overrides["epochs"] == matrix.QUICK_EPOCHS == cell.overrides["eval_every"]
        assert cell.parent is None
