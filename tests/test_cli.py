"""Every command of the `longtail` CLI, its --help, and one-line errors for bad arguments."""

import json
import os
import subprocess
import sys
import time

import pytest

from longtail.cli import main
from longtail.train import LOSSES


def run(*args):
    return subprocess.run([sys.executable, "-m", "longtail", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [[], ["train"], ["weights"], ["demo"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: longtail" in text
    if command == ["train"]:
        for name in LOSSES:
            assert name in text


def test_weights_from_counts(capsys):
    assert main(["weights", "--counts", "500,50,5", "--beta", "0,0.999,1"]) == 0
    text = capsys.readouterr().out
    assert "w(0.999)" in text and "1.0000" in text
    rows = [line.split() for line in text.splitlines()[2:]]
    assert [r[1] for r in rows] == ["500", "50", "5"]
    assert float(rows[2][4]) == pytest.approx(3 * 0.2 / (0.002 + 0.02 + 0.2), rel=1e-3)  # beta = 1: inverse frequency


def test_weights_from_cdb_accuracies(capsys):
    assert main(["weights", "--accuracy", "0.9,0.6,0.3", "--tau", "1.5"]) == 0
    text = capsys.readouterr().out
    d = [0.1, 0.4, 0.7]
    raw = [x**1.5 for x in d]
    expected = [3 * r / sum(raw) for r in raw]
    got = [float(line.split()[2]) for line in text.splitlines()[2:]]
    assert got == pytest.approx(expected, abs=1e-4)


def test_weights_from_a_dataset(capsys):
    assert main(["weights", "--dataset", "synthetic", "--imbalance", "10", "--beta", "0.99"]) == 0
    assert "500" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--loss", "nope", "--dataset", "synthetic"], "loss must be one of"),
        (["train", "--beta", "2", "--dataset", "synthetic"], "beta must be in [0, 1]; got 2.0"),
        (["train", "--loss", "cdb", "--dataset", "synthetic"], "val_per_class must be >= 1 for loss='cdb'"),
        (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent"], "error:"),
        (["weights", "--counts", "5,-1"], "non-negative"),
        (["weights", "--counts", "a,b"], "comma-separated numbers"),
        (["train", "--epochs", "x"], "invalid int value"),
        (["train", "--dataset", "synthetic", "--device", "cuda:abc"],
         "longtail train: error: device must be 'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index), 'mps' or 'mps:0'; "
         "got 'cuda:abc'"),
        (["train", "--dataset", "synthetic", "--batch-size", "1"],
         "longtail train: error: batch_size must be >= 2 x the world size = 2 (2 samples for each of 1 process: "
         "BatchNorm needs two); got 1"),
        (["train", "--dataset", "synthetic", "--resume", "--overwrite"], "not allowed with argument --resume"),
    ],
)
def test_bad_arguments_give_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1 or stderr.startswith("usage:")


@pytest.mark.slow
def test_bad_argument_in_a_real_process_prints_no_traceback():
    done = run("train", "--dataset", "synthetic", "--gamma", "-1")
    assert done.returncode == 2
    assert done.stderr.strip() == "longtail train: error: gamma must be in [0, inf]; got -1.0"


@pytest.mark.slow
def test_train_command_writes_results(tmp_path):
    done = run("train", "--dataset", "synthetic", "--imbalance", "10", "--n-max", "40", "--epochs", "1",
               "--batch-size", "32", "--width", "8", "--loss", "cb_softmax", "--beta", "0.999", "--quiet",
               "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "balanced accuracy" in done.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["beta"] == 0.999


@pytest.mark.slow
def test_demo_on_synthetic_data(tmp_path, capsys):
    demo = ["demo", "--dataset", "synthetic", "--n-max", "40", "--imbalance", "10", "--out", str(tmp_path), "--quiet",
            "--many-threshold", "30", "--few-threshold", "10"]
    done = run(*demo, "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert "class-balanced softmax" in done.stdout and "few-shot (<10)" in done.stdout
    (folder,) = tmp_path.iterdir()  # one folder per configuration
    assert folder.name.startswith("synthetic-rho10-1ep-seed0-")
    assert (folder / "per_class_accuracy.png").stat().st_size > 10_000
    assert (folder / "ce" / "result.json").exists() and (folder / "cb_softmax" / "result.json").exists()
    first = json.loads((folder / "ce" / "result.json").read_text())

    # Another configuration (more epochs) trains beside it; it once failed with "cannot resume".
    assert main([*demo, "--epochs", "2"]) == 0
    assert "cannot resume" not in capsys.readouterr().err
    second = sorted(p for p in tmp_path.iterdir() if p != folder)
    assert [p.name[:26] for p in second] == ["synthetic-rho10-2ep-seed0-"]
    assert json.loads((second[0] / "ce" / "result.json").read_text())["config"]["epochs"] == 2
    # The first configuration again: its finished runs are reused as they are.
    assert main([*demo, "--epochs", "1"]) == 0
    assert capsys.readouterr().out.count("already complete") == 2
    assert json.loads((folder / "ce" / "result.json").read_text()) == first


def test_preset_values_are_defaults_that_explicit_flags_override(monkeypatch):
    captured = {}

    def fake_train(config, out, **kwargs):
        captured["config"] = config
        return {"final": {"accuracy": 0.5, "balanced_accuracy": 0.5}, "train_seconds": 0.0}

    monkeypatch.setattr("longtail.train.train", fake_train)
    assert main(["train", "--preset", "cb-cifar", "--epochs", "3", "--out", "/tmp/unused", "--quiet"]) == 0
    config = captured["config"]
    assert (config.model, config.epochs, config.lr, config.milestones) == ("resnet32", 3, 0.1, [160, 180])


def test_unknown_preset_is_a_one_line_error(capsys):
    assert main(["train", "--preset", "imagenet"]) == 2
    assert capsys.readouterr().err.strip() == (
        "longtail train: error: preset must be one of cb-cifar, ldam-drw-cifar, cdb-cifar, fmnist-lt; got 'imagenet'"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["weights", "--counts", "5,1", "--beta", ""],
         "longtail weights: error: beta must be one or more comma-separated numbers in [0, 1]; got an empty list"),
        (["weights", "--counts", "5,0,1"],
         "longtail weights: error: counts must be positive for every class, got 0 for classes [1]; pass "
         "--zero-counts ignore to give absent classes weight 0"),
        (["weights", "--counts", "5,1", "--beta", "0.9,2"], "longtail weights: error: beta must be in [0, 1]; got 2.0"),
    ],
)
def test_weights_argument_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == message


def test_weights_zero_counts_option(capsys):
    assert main(["weights", "--counts", "5,0,1", "--zero-counts", "ignore", "--beta", "0.9,1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["5", "0", "1"]
    assert [float(r[2]) for r in rows] == pytest.approx([2 * 0.1 / (1 - 0.9**5) / (0.1 / (1 - 0.9**5) + 1), 0.0,
                                                         2 * 1 / (0.1 / (1 - 0.9**5) + 1)], abs=1e-4)
    assert float(rows[1][3]) == 0.0 and float(rows[0][3]) + float(rows[2][3]) == pytest.approx(2.0, abs=2e-4)
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "--counts", "5,1", "--zero-counts", "skip"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'skip'" in capsys.readouterr().err


def test_torch_seed_overflow_and_check_seed():
    # Seeds are a train option (wired by TrainConfig); the check is in checks.py for it.
    import torch

    from longtail.checks import check_seed

    with pytest.raises((ValueError, RuntimeError, OverflowError)):
        torch.Generator().manual_seed(2**70)
    assert check_seed(2**63 - 1) == 2**63 - 1 and check_seed(0) == 0
    torch.Generator().manual_seed(check_seed(2**63 - 1))
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*63 - 1\]; got 1180591620717411303424"):
        check_seed(2**70)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]; got -1"):
        check_seed(-1)
    with pytest.raises(TypeError, match="seed must be an integer; got float 1.5"):
        check_seed(1.5)
    with pytest.raises(ValueError, match=r"subset_seed must be an integer in \[0, 1000\]; got 1001"):
        check_seed(1001, "subset_seed", high=1000)


TRAIN = ["train", "--dataset", "synthetic", "--imbalance", "10", "--n-max", "40", "--epochs", "1", "--batch-size", "32",
         "--width", "8", "--quiet"]


def _one_line_error(capsys, code, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.slow
def test_run_folder_errors_are_one_line(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert _one_line_error(capsys, 2, [*TRAIN, "--out", str(file)]) == (
        f"longtail train: error: --out must be a folder or a path to create one at; got '{file}', an existing file"
    )
    folder = tmp_path / "run"
    assert main([*TRAIN, "--out", str(folder)]) == 0
    assert _one_line_error(capsys, 2, [*TRAIN, "--out", str(folder)]) == (
        f"longtail train: error: {folder} holds a run (status complete); pass --resume to continue it, or "
        "--overwrite to replace it"
    )
    assert main([*TRAIN, "--out", str(folder), "--overwrite"]) == 0
    # result.json lost beside a finished checkpoint: --resume writes it again.
    (folder / "result.json").unlink()
    assert main([*TRAIN, "--out", str(folder), "--resume"]) == 0
    assert json.loads((folder / "result.json").read_text())["status"] == "complete"
    # A damaged checkpoint: one line, exit 2.
    (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a real archive")
    err = _one_line_error(capsys, 2, [*TRAIN, "--out", str(folder), "--resume"])
    assert err.startswith(f"longtail train: error: cannot resume: {folder / 'checkpoint.pt'} is not a longtail "
                          "checkpoint: truncated or corrupt archive")
    assert err.endswith("; pass --overwrite to start the run over")


def test_a_diverged_run_exits_1_with_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    assert _one_line_error(capsys, 1, [*TRAIN, "--lr", "1e30", "--out", str(folder)]) == (
        "longtail train: error: training diverged at epoch 1 (loss nan); lower --lr"
    )
    assert json.loads((folder / "result.json").read_text())["status"] == "diverged"
    assert "cannot be resumed" in _one_line_error(capsys, 2, [*TRAIN, "--lr", "1e30", "--out", str(folder), "--resume"])


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_fails_at_once_naming_the_holder(tmp_path, capsys):
    folder = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LONGTAIL_TEST_WRITE_DELAY": "0.5"}  # a long first run
    first = subprocess.Popen([sys.executable, "-m", "longtail", *TRAIN, "--epochs", "2", "--out", str(folder)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            if (folder / ".lock").exists() and (folder / ".lock").read_text().strip() == str(first.pid):
                break
            time.sleep(0.02)
        start = time.monotonic()
        err = _one_line_error(capsys, 2, [*TRAIN, "--epochs", "2", "--out", str(folder)])
        assert time.monotonic() - start < 5  # at once, before loading any data
        assert err.startswith(f"longtail train: error: {folder} is in use by another run (PID {first.pid} holds ")
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert first.returncode == 0, err
    assert json.loads((folder / "result.json").read_text())["status"] == "complete"
