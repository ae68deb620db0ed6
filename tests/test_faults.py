"""Faults of the training harness: a SIGKILL at any moment, a damaged result file, a folder in use or holding
another run, a diverging loss, bad devices and batch sizes; each ends in a resumable run or a one-line error."""

import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from longtail.checks import check_batch_per_process
from longtail.io import TEST_WRITE_DELAY_ENV, load_checkpoint, save_checkpoint
from longtail.train import RunFolderError, TrainingDiverged, train
from longtail.train import trainer
from longtail.train.data import DeviceSplit
from longtail.train.device import resolve_device

TIMINGS = ("train_seconds", "eval_seconds", "wall_seconds")


def _without_timings(result):
    return {k: v for k, v in result.items() if k not in TIMINGS}


def _read(folder):
    return json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_data, tiny_config):
    """A finished tiny run (its folder, to copy) and its result.json."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(), folder, verbose=0, data=synthetic_data)
    return folder, _read(folder)


# --- resume repairs result.json from a finished checkpoint -----------------------------------------------


def _behind(text, result):  # a SIGKILL while the last epoch's result.json was written: the previous epoch's file
    return json.dumps({**result, "status": "running", "history": result["history"][:1], "final": {}})


DAMAGES = {
    "one epoch behind": _behind,
    "missing": None,
    "truncated": lambda text, result: text[: len(text) // 2],
    "empty": lambda text, result: "",
    "not an object": lambda text, result: "[1, 2]",
    "complete but short": lambda text, result: json.dumps({**result, "history": result["history"][:1]}),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_rebuilds_a_missing_damaged_or_stale_result_from_the_finished_checkpoint(
    damage, finished_run, synthetic_data, tmp_path, capsys, tiny_config
):
    source, expected = finished_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    text = (folder / "result.json").read_text()
    (folder / "result.json").unlink()
    if DAMAGES[damage] is not None:
        (folder / "result.json").write_text(DAMAGES[damage](text, expected))

    result = train(tiny_config(), folder, resume=True, verbose=1, data=synthetic_data)
    assert "rebuilding it from the checkpoint" in capsys.readouterr().out
    assert result["status"] == "complete"
    assert _without_timings(_read(folder)) == _without_timings(expected)  # as if never interrupted
    assert _without_timings(result) == _without_timings(expected)
    # Now the pair is consistent: the next resume only reports it.
    again = train(tiny_config(), folder, resume=True, verbose=1, data=synthetic_data)
    assert "already complete" in capsys.readouterr().out and again == _read(folder)


# --- the output folder: one run at a time, never replaced silently, a folder --------------------------------


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(
    finished_run, synthetic_data, tmp_path, tiny_config
):
    source, expected = finished_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    message = rf"^{re.escape(str(folder))} holds a run \(status complete\); pass --resume to continue it, or " \
              r"--overwrite to replace it$"
    with pytest.raises(RunFolderError, match=message):
        train(tiny_config(), folder, verbose=0, data=synthetic_data)
    assert _read(folder) == expected  # untouched

    # --overwrite replaces it: here by a run of another configuration, which a resume would refuse.
    other = tiny_config(lr=0.1, epochs=1)
    result = train(other, folder, overwrite=True, verbose=0, data=synthetic_data)
    assert result["status"] == "complete" and _read(folder)["config"]["lr"] == 0.1
    assert load_checkpoint(folder / "checkpoint.pt")["config"]["lr"] == 0.1

    (folder / "result.json").write_text('{"status": "comp')  # truncated: still a run, and no traceback
    with pytest.raises(RunFolderError, match=r"holds a run \(status unknown: result.json is not valid JSON "
                       r"\(truncated\?\)\); pass --resume"):
        train(other, folder, verbose=0, data=synthetic_data)
    (folder / "result.json").unlink()  # a checkpoint alone is a run too
    with pytest.raises(RunFolderError, match=r"holds a run \(status unknown: a checkpoint without result.json\)"):
        train(other, folder, verbose=0, data=synthetic_data)
    with pytest.raises(ValueError, match="resume and overwrite must not both be set"):
        train(other, folder, resume=True, overwrite=True, verbose=0, data=synthetic_data)


def test_an_output_path_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, tiny_config):
    def no_work(*args, **kwargs):
        raise AssertionError("the data was loaded before the output folder was checked")

    monkeypatch.setattr(trainer, "build_run", no_work)
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"^out_dir must be a folder or a path to create one at; got "
                       rf"'{re.escape(str(file))}', an existing file$"):
        train(tiny_config(), file, verbose=0)
    with pytest.raises(ValueError, match=rf"got '{re.escape(str(file / 'run'))}', inside the file"):
        train(tiny_config(), file / "run", verbose=0)
    assert file.read_text() == "not a folder"


def test_the_lock_file_names_its_holder_and_is_released_after_the_run(synthetic_data, tmp_path, tiny_config):
    fcntl = pytest.importorskip("fcntl")  # POSIX: elsewhere runs are not locked
    folder = tmp_path / "run"
    train(tiny_config(epochs=1), folder, verbose=0, data=synthetic_data)
    assert (folder / ".lock").read_text().strip() == str(os.getpid())
    with open(folder / ".lock") as handle:  # released: another process (here another open file) can take it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderError, match=rf"^{re.escape(str(folder))} is in use by another run \(PID "
                           rf"{os.getpid()} holds .*\.lock\); wait for it to end or choose another --out$"):
            train(tiny_config(epochs=1), folder, resume=True, verbose=0, data=synthetic_data)


# --- configurations that would train zero steps ----------------------------------------------------------


def test_a_batch_without_two_samples_per_process_is_refused_before_training(synthetic_data, tmp_path, tiny_config):
    with pytest.raises(ValueError, match=r"^batch_size must be >= 2 x the world size = 2 \(2 samples for each of 1 "
                       r"process: BatchNorm needs two\); got 1$"):
        tiny_config(batch_size=1)
    with pytest.raises(ValueError, match=r"batch_size must be >= 2 x the world size = 4 \(2 samples for each of 2 "
                       r"processes: BatchNorm needs two\); got 3"):
        check_batch_per_process(3, 2)
    tiny = dataclasses.replace(synthetic_data, train=DeviceSplit(synthetic_data.train.images[:1],
                                                                 synthetic_data.train.labels[:1]))
    with pytest.raises(ValueError, match=r"^the training split must hold at least 2 x the world size = 2 images "
                       r"\(one batch of 2 per process\); got 1$"):
        train(tiny_config(), tmp_path / "run", verbose=0, data=tiny)
    assert not (tmp_path / "run" / "result.json").exists()


# --- divergence ----------------------------------------------------------------------------------------------


def test_a_nan_loss_stops_the_run_with_a_diverged_result(synthetic_data, tmp_path, tiny_config):
    folder = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1 \(loss nan\); lower --lr$") as info:
        train(tiny_config(lr=1e30), folder, verbose=0, data=synthetic_data)
    saved = _read(folder)  # valid JSON (no NaN in it)
    assert saved == info.value.result
    assert saved["status"] == "diverged" and saved["final"] == {}
    assert saved["diverged"] == {"epoch": 1, "train_loss": "nan"}
    assert saved["message"] == "training diverged at epoch 1 (loss nan); lower --lr"
    assert saved["history"] == [{"epoch": 1, "lr": 1e30, "train_loss": None}]
    assert not (folder / "checkpoint.pt").exists()  # no checkpoint of a NaN model


def test_a_run_that_diverges_later_keeps_its_history_and_is_not_resumed(
    synthetic_data, tmp_path, monkeypatch, tiny_config
):
    folder = tmp_path / "run"
    config = tiny_config(epochs=3)
    real = trainer.train_one_epoch
    monkeypatch.setattr(trainer, "train_one_epoch",
                        lambda run, epoch, bar=None: math.inf if epoch == 1 else real(run, epoch, bar))
    with pytest.raises(TrainingDiverged, match=r"at epoch 2 \(loss inf\)"):
        train(config, folder, verbose=0, data=synthetic_data)
    saved = _read(folder)
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    assert math.isfinite(saved["history"][0]["train_loss"]) and saved["history"][1]["train_loss"] is None
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 0  # the last finite epoch's

    monkeypatch.setattr(trainer, "train_one_epoch", real)
    with pytest.raises(RunFolderError, match=rf"^{re.escape(str(folder))} holds a run that diverged at epoch 2 "
                       r"\(loss inf\); it cannot be resumed: pass --overwrite to start it over"):
        train(config, folder, resume=True, verbose=0, data=synthetic_data)
    with pytest.raises(RunFolderError, match=r"holds a run \(status diverged\); pass --overwrite to replace it"):
        train(config, folder, verbose=0, data=synthetic_data)
    assert train(config, folder, overwrite=True, verbose=0, data=synthetic_data)["status"] == "complete"


# --- devices and world sizes ---------------------------------------------------------------------------------


def test_device_names_are_checked_with_one_line_messages(tiny_config):
    with pytest.raises(ValueError, match=r"^device must be 'auto', 'cpu', 'cuda', 'cuda:N' \(N a GPU index\), 'mps' "
                       r"or 'mps:0'; got 'cuda:abc'$"):
        tiny_config(device="cuda:abc")
    with pytest.raises(ValueError, match="got 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not (torch.backends.mps.is_available()):
        with pytest.raises(ValueError, match=r"^device must be .* here \(this torch build or machine has no MPS\); "
                           r"got 'mps'$"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"no CUDA\); got 'cuda:1'$"):
            resolve_device("cuda:1")


def test_resume_with_another_world_size_is_refused(synthetic_data, tmp_path, tiny_config):
    folder = tmp_path / "run"
    train(tiny_config(), folder, verbose=0, data=synthetic_data)
    state = load_checkpoint(folder / "checkpoint.pt")
    assert state["world_size"] == 1
    # As if two processes had written the first epoch's checkpoint.
    save_checkpoint(folder / "checkpoint.pt", {**state, "epoch": 0, "history": state["history"][:1], "world_size": 2})
    with pytest.raises(ValueError, match=r"^cannot resume: the world size must be 2, the checkpoint's .*; got 1"):
        train(tiny_config(), folder, resume=True, verbose=0, data=synthetic_data)


# --- SIGKILL at random moments, then --resume ---------------------------------------------------------------

ARGS = ["train", "--dataset", "synthetic", "--imbalance", "10", "--n-max", "200", "--epochs", "3", "--batch-size",
        "32", "--width", "8", "--eval-every", "1", "--quiet"]
WRITES = 6  # a checkpoint and a result.json after each of the 3 epochs


def _cli(*args):
    return [sys.executable, "-m", "longtail", *args]


def _temporaries(folder):
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.exists() else []


def _kill_at(folder, env, *, after=None, in_write=None, deadline=60.0):
    """Starts a run into ``folder`` and SIGKILLs it ``after`` seconds, or inside its ``in_write``-th atomic write
    (1-based: the temporary file is complete, the rename not done). Returns the exit status."""
    proc = subprocess.Popen(_cli(*ARGS, "--out", str(folder)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        start, seen = time.monotonic(), set()
        while proc.poll() is None and time.monotonic() - start < deadline:
            if after is not None and time.monotonic() - start >= after:
                break
            if in_write is not None:
                seen.update(_temporaries(folder))
                if len(seen) >= in_write:
                    break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_as_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_WRITE_DELAY_ENV, None)
    start = time.monotonic()
    subprocess.run(_cli(*ARGS, "--out", str(tmp_path / "full")), check=True, env=env, capture_output=True, timeout=120)
    duration = time.monotonic() - start
    expected = _without_timings(_read(tmp_path / "full"))

    # Each atomic write pauses between its complete temporary file and the rename: kills land inside writes too.
    delay = 0.15
    slow_writes = {**env, TEST_WRITE_DELAY_ENV: str(delay)}
    rng = random.Random(20240607)
    span = duration + WRITES * delay  # the killed runs are slower by their pauses
    trials = [dict(after=rng.uniform(0.0, span / 2)), dict(after=rng.uniform(span / 2, span))]  # spread over the run
    trials += [dict(in_write=WRITES), dict(in_write=rng.randint(1, WRITES - 1))]  # the last result.json; another
    outcomes = []
    for number, moment in enumerate(trials):
        folder = tmp_path / f"killed{number}"
        status = _kill_at(folder, slow_writes, **moment)
        left = _temporaries(folder)
        if "in_write" in moment:
            assert status == -signal.SIGKILL and left, moment  # killed inside the write
        resumed = subprocess.run(_cli(*ARGS, "--out", str(folder), "--resume"), env=env, capture_output=True,
                                 text=True, timeout=120)
        assert resumed.returncode == 0, (moment, resumed.stderr)
        if status == 0:  # the run had finished before the kill
            assert "already complete" in resumed.stdout, moment
        assert _without_timings(_read(folder)) == expected, moment
        assert _temporaries(folder) == [], moment
        outcomes.append((moment, status, left, resumed.stdout.splitlines()[0]))
    print("\n".join(map(str, outcomes)))  # with -s: where each kill landed and how the resume began


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs (needs root and mount; skipped elsewhere): a real ENOSPC, not an injected one."""
    import shutil as _shutil

    point = tmp_path / "tiny"
    point.mkdir()
    if os.geteuid() != 0 or _shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tiny_filesystem):
    from longtail.io import save_checkpoint

    with pytest.raises(OSError, match=r"could not write checkpoint.pt in .*tiny: no space left on device \(errno 28\)"):
        save_checkpoint(tiny_filesystem / "checkpoint.pt", {"x": torch.zeros(100_000)})
    assert os.listdir(tiny_filesystem) == []
    done = subprocess.run([sys.executable, "-m", "longtail", "train", "--dataset", "synthetic", "--imbalance", "10",
                           "--n-max", "40", "--epochs", "1", "--batch-size", "32", "--width", "8", "--quiet",
                           "--out", str(tiny_filesystem / "run")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "no space left on device" in done.stderr, done.stderr
    assert not [p for p in (tiny_filesystem / "run").glob(".*.tmp")]
