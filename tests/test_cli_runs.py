"""`longtail report`, `evaluate` and `predict`, and docs/using_runs.md, on two tiny runs trained once."""

import csv
import gzip
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.cli import main
from longtail.data.registry import load_dataset
from longtail.runs import REPORT_COLUMNS, write_run_report
from longtail.train import load_model, train

DOC = Path(__file__).resolve().parents[1] / "docs" / "using_runs.md"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config):
    """Two complete runs: CE with post-hoc logit adjustment, and the class-balanced softmax."""
    root = tmp_path_factory.mktemp("runs")
    results = {}
    for name, extra in (("ce", {"posthoc": "logit_adjust"}), ("cb", {"loss": "cb_softmax"})):
        results[name] = train(tiny_config(val_per_class=5, **extra), root / name, verbose=0)
    return root, results


@pytest.fixture(scope="module")
def test_images():
    return load_dataset("synthetic", None, train=False).images


def _result(root, name):
    return json.loads((root / name / "result.json").read_text())


def _one_line_error(capsys, argv, code=2, warnings=0):
    """The error line of ``main(argv)`` (after ``warnings`` warning lines), which exits with ``code``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == warnings + 1 and "Traceback" not in lines[-1], lines
    assert all(": warning: " in line for line in lines[:-1]), lines
    return lines[-1]


# --- report --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_writes_tables_and_plots_whose_numbers_are_the_results(runs, tmp_path, capsys):
    root, _ = runs
    out = tmp_path / "report"
    assert main(["report", str(root / "ce"), str(root / "cb"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = {"report.md", "report.csv", "per_class_accuracy.png", "confusion_matrices.png", "learning_curves.png"}
    assert {p.name for p in out.iterdir()} == names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["ce", "cb"]
    assert list(rows[0]) == [key for key, _ in REPORT_COLUMNS]
    for row in rows:
        result = _result(root, row["run"])
        final, config = result["final"], result["config"]
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert float(row[key]) == final[key]
        for group in ("many", "medium", "few"):
            value = final["shot_accuracy"][group]
            assert row[group] == ("" if value is None else repr(value))
        assert (row["dataset"], row["loss"], row["posthoc"]) == (config["dataset"], config["loss"], config["posthoc"])
        assert (int(row["seed"]), int(row["epochs"]), float(row["wall_seconds"])) == (
            config["seed"], config["epochs"], result["wall_seconds"])
    ce, cb = (_result(root, n) for n in ("ce", "cb"))
    posthoc = ce["final"]["posthoc"]
    assert float(rows[0]["posthoc_tau"]) == posthoc["tau"]
    assert float(rows[0]["val_balanced_accuracy"]) == posthoc["val_balanced_accuracy"][posthoc["grid"].index(posthoc["tau"])]
    assert float(rows[1]["val_balanced_accuracy"]) == cb["history"][-1]["val"]["balanced_accuracy"]

    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ce |") or line.startswith("| cb |")]
    assert len(table) == 2 and f"| {ce['final']['accuracy']:.4f} |" in table[0]
    assert table[0] in printed and table[1] in printed  # the table is printed to stdout too
    assert "![Learning curves](learning_curves.png)" in md


def test_report_refuses_to_overwrite_and_skips_broken_runs(runs, tmp_path, capsys):
    root, _ = runs
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "result.json").write_text('{"status": "comp')  # truncated
    running = tmp_path / "running"
    running.mkdir()
    (running / "result.json").write_text('{"status": "running"}')
    out = tmp_path / "report"
    argv = ["report", str(root / "ce"), str(broken), str(running), str(tmp_path / "missing"), "--out", str(out),
            "--format", "csv", "--no-plots"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("longtail report: warning: skipping ") for w in warnings)
    assert "is not valid JSON" in warnings[0] and "status 'running'" in warnings[1] and "no such folder" in warnings[2]
    assert [p.name for p in out.iterdir()] == ["report.csv"]
    assert "| ce |" in captured.out

    before = (out / "report.csv").read_bytes()
    err = _one_line_error(capsys, argv)
    assert err.startswith("longtail report: error: --out must not name existing files (pass --overwrite")
    assert (out / "report.csv").read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()

    err = _one_line_error(capsys, ["report", str(broken), "--out", str(tmp_path / "r2")], warnings=1)
    assert err.endswith("error: RUN_DIR must name at least one folder with a complete run (a result.json with "
                        "status 'complete'); got none among the 1 given")
    assert not (tmp_path / "r2").exists()


def test_write_run_report_python_api(runs, tmp_path):
    root, _ = runs
    files = write_run_report([root / "ce", root / "cb", root / "ce"], tmp_path / "r", plots=False)
    assert set(files) == {"md", "csv"} and all(p.exists() for p in files.values())
    assert files["csv"].read_text().count("\n") == 3  # header + two runs (the repeated folder once)
    with pytest.raises(FileExistsError, match="out_dir must not name existing files"):
        write_run_report([root / "ce"], tmp_path / "r", plots=False)
    with pytest.raises(ValueError, match="run folders must hold at least one complete run"):
        write_run_report([tmp_path / "nothing"], tmp_path / "r3", warn=lambda _: None)


def test_report_without_matplotlib_says_so_and_writes_the_tables(runs, tmp_path, capsys, monkeypatch):
    import longtail.runs

    monkeypatch.setattr(longtail.runs, "_matplotlib_available", lambda: False)
    root, _ = runs
    assert main(["report", str(root / "cb"), "--out", str(tmp_path / "r")]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.csv", "report.md"]


# --- evaluate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ce", "cb"])
def test_evaluate_gives_the_runs_test_accuracy(runs, tmp_path, capsys, name):
    root, _ = runs
    result = _result(root, name)
    report_file = tmp_path / "eval.json"
    assert main(["evaluate", str(root / name), "--json", str(report_file)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    final = result["final"]
    assert report["accuracy"] == final["accuracy"]  # exactly: the same model, data and evaluation
    assert report["confusion_matrix"] == final["confusion_matrix"]
    assert report["shot_accuracy"] == final["shot_accuracy"] and report["split"] == "test"
    assert (report["posthoc"] is not None) == (name == "ce")
    assert f"accuracy {final['accuracy']:.4f}  balanced accuracy {final['balanced_accuracy']:.4f}" in printed
    assert re.search(r"many \S+ \(\d+ classes, >\S+ train images\)", printed)
    err = _one_line_error(capsys, ["evaluate", str(root / name), "--json", str(report_file)])
    assert "--json must not name existing files" in err


def test_evaluate_on_the_validation_split(runs, capsys):
    root, _ = runs
    result = _result(root, "cb")
    assert main(["evaluate", str(root / "cb"), "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert "val split, 50 images" in printed
    val = result["history"][-1]["val"]
    assert f"accuracy {val['accuracy']:.4f}  balanced accuracy {val['balanced_accuracy']:.4f}" in printed


def test_evaluate_errors_are_one_line(runs, tmp_path, capsys):
    root, _ = runs
    err = _one_line_error(capsys, ["evaluate", str(tmp_path / "none")])
    assert err.startswith("longtail evaluate: error: no checkpoint at")
    assert "invalid choice: 'train'" in _one_line_error(capsys, ["evaluate", str(root / "cb"), "--split", "train"])


# --- predict -------------------------------------------------------------------------------------


def _predictions(text):
    rows = list(csv.DictReader(io.StringIO(text)))
    return [int(r["class_index"]) for r in rows], rows


def test_predict_from_npy_equals_load_model_predict(runs, tmp_path, capsys, test_images):
    root, _ = runs
    images = test_images[:64]
    np.save(tmp_path / "images.npy", images.numpy())
    assert main(["predict", str(root / "ce"), "--images", str(tmp_path / "images.npy"), "--batch-size", "16"]) == 0
    predicted, rows = _predictions(capsys.readouterr().out)
    trained = load_model(root / "ce")
    assert predicted == trained.predict(images).tolist()
    assert list(rows[0]) == ["index", "class_index", "class_name", "probability"]
    assert [r["index"] for r in rows] == [str(i) for i in range(64)]
    assert all(r["class_name"] == trained.classes[int(r["class_index"])] for r in rows)
    expected = trained.logits(images).softmax(1).max(1).values
    assert [float(r["probability"]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)


def test_predict_from_pt_and_idx_files(runs, tmp_path, capsys, test_images):
    root, _ = runs
    images = test_images[:20]
    expected = load_model(root / "cb").predict(images).tolist()
    torch.save(images.float() / 255, tmp_path / "images.pt")  # floats in [0, 1]
    # IDX, gzipped: (N, H, W) uint8 (one channel), the MNIST layout.
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 20, 16, 16)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images[:, 0].numpy().tobytes()))
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(root / "cb"), "--images", str(tmp_path / "images.pt"), "--out", str(out)]) == 0
    assert "20 predictions" in capsys.readouterr().out
    assert _predictions(out.read_text())[0] == expected
    assert main(["predict", str(root / "cb"), "--images", str(tmp_path / "images-idx3-ubyte.gz")]) == 0
    assert _predictions(capsys.readouterr().out)[0] == expected
    err = _one_line_error(capsys, ["predict", str(root / "cb"), "--images", str(tmp_path / "images.pt"), "--out",
                                   str(out)])
    assert "--out must not name existing files" in err


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 3), np.uint8), "images must have shape (N, 1, 16, 16) or (N, 16, 16); got (2, 3)"),
    (np.zeros((2, 3, 16, 16), np.uint8), "images must have shape (N, 1, 16, 16) or (N, 16, 16); got (2, 3, 16, 16)"),
    (np.zeros((2, 16, 16), np.int64), "images must be uint8 pixels or floats in [0, 1]; got dtype torch.int64"),
    (np.full((2, 16, 16), 2.0), "images must be uint8 pixels or floats in [0, 1]; got floats in [2, 2]"),
    (np.array(["a", "b"]), "images must be uint8 pixels or floats in [0, 1]; got dtype <U1"),
])
def test_predict_bad_images_is_one_line(runs, tmp_path, capsys, array, message):
    root, _ = runs
    np.save(tmp_path / "bad.npy", array)
    err = _one_line_error(capsys, ["predict", str(root / "cb"), "--images", str(tmp_path / "bad.npy")])
    assert err.startswith(f"longtail predict: error: {message}"), err


def test_predict_unreadable_files_are_one_line(runs, tmp_path, capsys):
    root, _ = runs
    run = str(root / "cb")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    assert "images must be a tensor saved with torch.save" in _one_line_error(
        capsys, ["predict", run, "--images", str(tmp_path / "junk.pt")])
    assert "not an IDX file" in _one_line_error(capsys, ["predict", run, "--images", str(root / "cb" / "result.json")])
    assert "which does not exist" in _one_line_error(capsys, ["predict", run, "--images", str(tmp_path / "no.npy")])
    assert "must be a positive integer; got '0'" in _one_line_error(
        capsys, ["predict", run, "--images", str(tmp_path / "no.npy"), "--batch-size", "0"])


@pytest.mark.slow
def test_predict_in_a_real_process(runs, tmp_path, test_images):
    root, _ = runs
    np.save(tmp_path / "x.npy", test_images[:3].numpy())
    done = subprocess.run([sys.executable, "-m", "longtail", "predict", str(root / "ce"), "--images",
                           str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _predictions(done.stdout)[0] == load_model(root / "ce").predict(test_images[:3]).tolist()


# --- the doc -------------------------------------------------------------------------------------


def test_the_docs_python_blocks_run(runs, tmp_path, monkeypatch, capsys):
    root, _ = runs
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # "runs/my-report" lands here
    code = "\n".join(blocks).replace('"runs/my-run"', repr(str(root / "ce")))
    exec(compile(code, str(DOC), "exec"), {})
    assert (tmp_path / "runs" / "my-report" / "report.md").exists()


# --- help and defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "evaluate", "predict"])
def test_help_of_the_run_commands(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: longtail {command}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert command in capsys.readouterr().out


def test_the_default_report_folder_is_beside_the_runs(runs):
    from longtail.runs import default_report_folder

    root, _ = runs
    assert default_report_folder([root / "ce", root / "cb"]) == root.resolve() / "report"
