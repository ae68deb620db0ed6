"""`longtail predict` on the kind of input its run was trained on: a folder of image files (or one image file) for a
`--dataset folder` run, a CSV for a `--dataset table` run."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from data_helpers import one_line_error
from longtail.cli import main
from longtail.data import carve_test_split, read_table
from longtail.data.folder import read_image_folder
from longtail.train import TrainConfig, load_model, prepare_data
from test_data_sources import TINY, write_images
from test_data_table import write_table

pytest.importorskip("PIL.Image")


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    data = write_images(root / "data", counts=(6, 4, 3))
    assert main(["train", "--dataset", "folder", "--data-dir", str(data), "--out", str(root / "run"), *TINY]) == 0
    return data, root / "run"


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    table = write_table(root / "rows.csv", counts=(40, 20, 10))
    run = ["--model", "mlp", "--no-augment", "--hidden", "8", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
           "--quiet"]
    assert main(["train", "--dataset", "table", "--data-dir", str(table), "--target", "y", "--out", str(root / "run"),
                 *run]) == 0
    return table, root / "run"


def test_a_folder_run_predicts_its_folder_naming_each_file_as_the_model_does_on_the_decoded_images(folder_run, capsys):
    data, run = folder_run
    capsys.readouterr()
    assert main(["predict", str(run), "--images", str(data)]) == 0
    rows = _rows(capsys.readouterr().out)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    assert list(rows[0]) == ["file", "class_index", "class_name", "probability"]
    assert [r["file"] for r in rows] == files
    trained = load_model(run)
    decoded = read_image_folder(data, trained.image_size[0])["train"].images  # the folder source's own decoding
    assert [int(r["class_index"]) for r in rows] == trained.predict(decoded).tolist()
    assert main(["predict", str(run), "--images", str(data / "bee" / "002.png")]) == 0
    (row,) = _rows(capsys.readouterr().out)
    one = decoded[files.index("bee/002.png")][None]
    assert row["file"] == "002.png" and int(row["class_index"]) == trained.predict(one).item()


def test_a_table_run_predicts_its_csv_as_the_model_does_on_the_standardised_rows(table_run, tmp_path, capsys):
    table, run = table_run
    capsys.readouterr()
    assert main(["predict", str(run), "--table", str(table)]) == 0
    rows = _rows(capsys.readouterr().out)
    trained = load_model(run)
    data = prepare_data(TrainConfig(dataset="table", data_dir=str(table), target="y", imbalance=1, model="mlp",
                                    augment=False), torch.device("cpu"))
    _, test = carve_test_split(read_table(table, "y")[0].labels, 0.2, seed=0)  # the rows of the test split
    with torch.no_grad():  # the model on prepare_data's standardised test rows
        expected = trained.model(data.test.images).argmax(1).tolist()
    predicted = [int(r["class_index"]) for r in rows]
    assert len(predicted) == 70 and [predicted[i] for i in test.tolist()] == expected
    # Without the target column, the same predictions.
    lines = table.read_text().splitlines()
    target = lines[0].split(",").index("y")
    (tmp_path / "no_y.csv").write_text("\n".join(",".join(c for k, c in enumerate(line.split(",")) if k != target)
                                                 for line in lines) + "\n")
    assert main(["predict", str(run), "--table", str(tmp_path / "no_y.csv")]) == 0
    assert [int(r["class_index"]) for r in _rows(capsys.readouterr().out)] == predicted


def test_a_table_run_given_images_or_an_image_run_given_a_table_is_one_line(folder_run, table_run, capsys):
    (data, image_run), (table, table_run_dir) = folder_run, table_run
    err = one_line_error(["predict", str(table_run_dir), "--images", str(data)], capsys)
    assert "--images needs a run trained on images; got a run trained on a table" in err
    err = one_line_error(["predict", str(image_run), "--table", str(table)], capsys)
    assert "--table needs a run trained on a table (--dataset table); got a run trained on images" in err
