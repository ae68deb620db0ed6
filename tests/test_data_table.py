"""Your table as a dataset (``--dataset table``) trained with ``--model mlp``.

Every table here is a CSV the test writes in tmp_path, with a natural tail (200, 80, 30 and 10 rows a class) and 5
numeric features whose mean depends on the class.
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
import torch

from data_helpers import one_line_error
from longtail.cli import _config_from, build_parser, main
from longtail.data import carve_test_split, load_table, read_table, table_counts
from longtail.models import MLP, build_model
from longtail.train import TrainConfig, prepare_data

TAIL = (200, 80, 30, 10)
FEATURES = ("a", "b", "c", "d", "e")
MLP_RUN = ["--model", "mlp", "--no-augment", "--hidden", "32", "--epochs", "3", "--batch-size", "32", "--device",
           "cpu", "--quiet"]
CPU = torch.device("cpu")


def write_table(path, counts=TAIL, labels=None, seed=0, extra=None):
    """A CSV of ``sum(counts)`` rows: features ``a``..``e`` ~ N(2 class, 1), scaled by 10 and shifted by 3 (so
    standardising matters), and the label ``y`` (``labels[c]``, default the class index). ``extra``: (name,
    function of the row index -> cell) of one more column."""
    rng = np.random.default_rng(seed)
    names = labels or [str(c) for c in range(len(counts))]
    lines = [",".join([*FEATURES, "y", *([extra[0]] if extra else [])])]
    row = 0
    for c, n in enumerate(counts):
        for x in rng.normal(2 * c, 1.0, (n, len(FEATURES))) * 10 + 3:
            lines.append(",".join([*(f"{v:.5f}" for v in x), names[c], *([extra[1](row)] if extra else [])]))
            row += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ce_and_the_class_balanced_loss_train_the_mlp_on_a_csv_and_the_report_shows_per_class_figures(tmp_path,
                                                                                                       capsys):
    table = write_table(tmp_path / "rows.csv")
    for loss in ("ce", "cb_softmax"):
        # beta 0.99: class-balanced weights between uniform and inverse frequency for counts 8..160.
        assert main(["train", "--dataset", "table", "--data-dir", str(table), "--target", "y", "--loss", loss,
                     "--beta", "0.99", "--out", str(tmp_path / loss), *MLP_RUN]) == 0
        result = json.loads((tmp_path / loss / "result.json").read_text())
        assert result["status"] == "complete" and result["config"]["imbalance"] == 1  # the tail as it is
        assert result["train_counts"] == [160, 64, 24, 8] and result["final"]["per_class_support"] == [40, 16, 6, 2]
        assert result["final"]["balanced_accuracy"] > 0.5  # chance: 0.25
    capsys.readouterr()
    assert main(["report", str(tmp_path / "ce"), str(tmp_path / "cb_softmax"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| ce | table |" in report and "| cb_softmax | table |" in report and "Per-class test accuracy" in report
    assert (tmp_path / "report" / "per_class_accuracy.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "ce")]) == 0
    assert "test split, 64 images" in capsys.readouterr().out


def test_features_are_standardised_with_the_statistics_of_the_training_rows_only(tmp_path):
    table = write_table(tmp_path / "rows.csv")
    prepared = prepare_data(TrainConfig(dataset="table", data_dir=str(table), target="y", imbalance=1, model="mlp",
                                        augment=False), CPU)
    rows, _ = read_table(table, "y")
    train, test = carve_test_split(rows.labels, 0.2, seed=0)
    x = rows.images.flatten(1).double()
    assert torch.allclose(torch.tensor(prepared.mean, dtype=torch.float64), x[train].mean(0), atol=1e-4)
    assert torch.allclose(torch.tensor(prepared.std, dtype=torch.float64), x[train].std(0), rtol=1e-4)
    assert not torch.allclose(torch.tensor(prepared.mean, dtype=torch.float64), x.mean(0), atol=1e-2)
    standard = prepared.train.images.flatten(1)
    assert torch.allclose(standard.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(standard.std(0), torch.ones(5), atol=1e-5)
    # The test rows with the training rows' statistics, as they are (not divided by 255).
    expected = (x[test] - x[train].mean(0)) / x[train].std(0)
    assert torch.allclose(prepared.test.images.flatten(1).double(), expected, atol=1e-4)


def test_string_labels_are_sorted_classes_as_longtail_counts_reads_them(tmp_path):
    table = write_table(tmp_path / "rows.csv", labels=["zebra", "ant", "cat", "bee"])
    train = load_table(table, train=True, target="y")
    assert train.classes == ("ant", "bee", "cat", "zebra") == table_counts(table, "y").classes
    assert train.class_counts().tolist() == [64, 8, 24, 160]


def test_text_feature_columns_are_one_hot_encoded_when_asked(tmp_path):
    table = write_table(tmp_path / "rows.csv", extra=("colour", lambda i: ("red", "blue", "green")[i % 3]))
    rows, names = read_table(table, "y", encode_categorical=True)
    assert names == [*FEATURES, "colour=blue", "colour=green", "colour=red"]
    assert rows.images.shape == (320, 8, 1, 1) and rows.images[:3, 5:].flatten(1).tolist() == [
        [0, 0, 1], [1, 0, 0], [0, 1, 0]]
    assert main(["train", "--dataset", "table", "--data-dir", str(table), "--target", "y", "--encode-categorical",
                 "--out", str(tmp_path / "run"), *MLP_RUN]) == 0


def test_the_mlp_takes_a_tables_rows_and_refuses_images():
    model = build_model("mlp", 4, 5, hidden=8)
    assert isinstance(model, MLP) and model(torch.zeros(3, 5, 1, 1)).shape == (3, 4) and model.feature_dim == 8
    with pytest.raises(ValueError, match=r"input must be features \(N, 5, 1, 1\), a table's rows; got \(3, 5, 2, 2\)"):
        model(torch.zeros(3, 5, 2, 2))


@pytest.mark.parametrize("case, expected", [
    ("no_target", r"rows.csv: expected a target \(--target COLUMN\), the label column; its columns: a, b, c, d, e, y$"),
    ("wrong_target", r"rows.csv: expected target column 'label'; its columns: a, b, c, d, e, y$"),
    ("text", r"rows.csv: feature columns must be numeric; got text in 'colour' \('red' in row 1\) \(pass "
             r"--encode-categorical"),
    ("nan_feature", r"rows.csv: feature column 'c' must hold a value in every row; got 'nan' in row 4 "),
    ("empty_feature", r"rows.csv: feature column 'c' must hold a value in every row; got '' in row 4 "),
    ("inf_feature", r"rows.csv: feature column 'c' must hold finite numbers; got 'inf' in row 4$"),
    ("no_label", r"rows.csv: target column 'y' must hold a label in every row; got '' in row 2$"),
    ("negative_label", r"rows.csv: target column 'y' must hold class indices >= 0 or class names; got -1 in row 1$"),
    ("float_label", r"rows.csv: target column 'y' must hold integer class indices or class names; got the number 0.5 "
                    r"in row 1$"),
    ("absent_class", r"rows.csv: every class must have training images; got none for class '2'$"),
    ("augment", r"augment must be False for dataset 'table', whose inputs are features, not images .*--no-augment$"),
    ("missing_file", r"nowhere.csv: expected a table file \(.csv, .tsv, .parquet, .pq\); got nothing there$"),
])
def test_each_bad_table_is_one_line_naming_the_file_and_column(tmp_path, capsys, case, expected):
    table = write_table(tmp_path / "rows.csv", counts=(12, 6, 4), extra=("colour", lambda i: "red")
                        if case == "text" else None)
    lines = table.read_text().splitlines()
    if case in ("nan_feature", "empty_feature", "inf_feature"):
        cells = lines[4].split(",")
        cells[2] = {"nan_feature": "nan", "empty_feature": "", "inf_feature": "inf"}[case]
        lines[4] = ",".join(cells)
    elif case in ("no_label", "negative_label", "float_label", "absent_class"):
        row, value = {"no_label": (2, ""), "negative_label": (1, "-1"), "float_label": (1, "0.5")}.get(case, (0, ""))
        if case == "absent_class":  # class 2 has no row: labels 0, 1 and 3
            lines = [line[: line.rindex(",")] + ",3" if line.endswith(",2") else line for line in lines]
        else:
            lines[row] = lines[row][: lines[row].rindex(",")] + "," + value
    table.write_text("\n".join(lines) + "\n")
    target = {"no_target": [], "wrong_target": ["--target", "label"]}.get(case, ["--target", "y"])
    data = str(tmp_path / "nowhere.csv") if case == "missing_file" else str(table)
    run = [("--augment" if case == "augment" and arg == "--no-augment" else arg) for arg in MLP_RUN]  # asked for
    err = one_line_error(["train", "--dataset", "table", "--data-dir", data, *target, "--out", str(tmp_path / "run"),
                          *run], capsys)
    assert re.search(expected, err.strip()), err
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_parquet_table_without_pyarrow_is_one_line_saying_what_to_install(tmp_path, capsys):
    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed")
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    err = one_line_error(["train", "--dataset", "table", "--data-dir", str(tmp_path / "rows.parquet"), "--target",
                          "y", "--out", str(tmp_path / "run"), *MLP_RUN], capsys)
    assert "rows.parquet' (Parquet) needs pyarrow: pip install pyarrow; or save the table as CSV" in err


def test_a_feature_constant_over_the_training_rows_is_centred_not_blown_up(tmp_path):
    # The column is 5 on every row but one, which the carved test split takes; a clamp of its std to 1e-6 alone
    # gave that test row a value of 1e6.
    table = write_table(tmp_path / "rows.csv", extra=("k", lambda row: "5"))
    rows, _ = read_table(table, "y")
    train, test = carve_test_split(rows.labels, 0.2, seed=0)
    lines = table.read_text().splitlines()
    odd = int(test[0]) + 1  # its line in the file (after the header)
    lines[odd] = lines[odd].rsplit(",", 1)[0] + ",7"
    table.write_text("\n".join(lines) + "\n")
    prepared = prepare_data(TrainConfig(dataset="table", data_dir=str(table), target="y", imbalance=1, model="mlp",
                                        augment=False), CPU)
    assert prepared.std[-1] == 1.0 and prepared.mean[-1] == pytest.approx(5.0)
    assert prepared.test.images.flatten(1)[:, -1].abs().max() == pytest.approx(2.0)


def test_a_table_trains_without_augmentation_unless_augment_is_asked_for_which_is_refused(tmp_path, capsys):
    table = write_table(tmp_path / "rows.csv")
    run = [a for a in MLP_RUN if a != "--no-augment"]
    assert main(["train", "--dataset", "table", "--data-dir", str(table), "--target", "y", *run,
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config"]["augment"] is False
    err = one_line_error(["train", "--dataset", "table", "--data-dir", str(table), "--target", "y", *run, "--augment",
                          "--out", str(tmp_path / "asked")], capsys)
    assert "augment" in err
    args = build_parser().parse_args(["train"])
    assert _config_from(args).augment is True  # images keep the declared default


def test_a_table_with_only_a_header_is_one_line(tmp_path, capsys):
    table = tmp_path / "rows.csv"
    table.write_text("a,b,y\n")
    err = one_line_error(["train", "--dataset", "table", "--data-dir", str(table), "--target", "y", *MLP_RUN,
                          "--out", str(tmp_path / "run")], capsys)
    assert err.strip().endswith("rows.csv: expected at least one row under the header; got none"), err
