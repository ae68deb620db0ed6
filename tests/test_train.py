"""The training harness: schedule, augmentation, every loss, resume after SIGKILL, DDP, results."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from longtail.io import load_checkpoint
from longtail.train import LOSSES, TrainConfig, augment_batch, learning_rate, train


def test_learning_rate_warmup_then_cosine_and_step():
    cfg = TrainConfig(dataset="synthetic", lr=0.1, epochs=10, warmup_epochs=2, schedule="cosine")
    assert learning_rate(cfg, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(cfg, 1.0) == pytest.approx(0.05)
    assert learning_rate(cfg, 2.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 6.0) == pytest.approx(0.05)
    assert learning_rate(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(dataset="synthetic", lr=0.1, epochs=200, warmup_epochs=5, schedule="step", milestones=[160, 180])
    assert learning_rate(step, 100) == pytest.approx(0.1)
    assert learning_rate(step, 170) == pytest.approx(0.1 * 0.01)
    assert learning_rate(step, 190) == pytest.approx(0.1 * 0.01**2)  # the CB paper's x0.0001 at 180


def test_augment_batch_is_a_shifted_crop_and_a_flip():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(images, pad=2, flip=True, generator=gen)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for n in range(2):
        candidates = [
            padded[n, :, dy : dy + 5, dx : dx + 5] for dy in range(5) for dx in range(5)
        ]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[n], c) for c in candidates)
    again = augment_batch(images, pad=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(augment_batch(images, pad=0, flip=False, generator=gen), images)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_two_epochs_with_every_loss(loss, synthetic_data, tmp_path, tiny_config):
    extra = {"val_per_class": 0}
    data = synthetic_data
    if LOSSES[loss].needs_validation:
        extra = {"val_per_class": 10}
        data = None
    config = tiny_config(loss=loss, gamma=1.0, **extra)
    result = train(config, tmp_path, verbose=0, data=data)
    assert result["status"] == "complete"
    assert len(result["history"]) == 2
    assert all(math.isfinite(h["train_loss"]) for h in result["history"])
    assert 0.0 <= result["final"]["accuracy"] <= 1.0
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["loss"] == loss and saved["train_counts"] == result["train_counts"]
    if LOSSES[loss].after_validation is not None:  # CDB: the weights of the next epoch, from validation
        weights = saved["history"][-1]["cdb_weights"]
        assert len(weights) == 10 and sum(weights) == pytest.approx(10.0, rel=1e-5)


def test_deferred_reweighting_switches_weights_at_its_epoch(synthetic_data, tmp_path, tiny_config):
    config = tiny_config(epochs=3, loss="ce", drw_epoch=2)
    train(config, tmp_path, verbose=0, data=synthetic_data)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    from longtail import class_balanced_weights

    torch.testing.assert_close(state["criterion"]["weight"], class_balanced_weights(synthetic_data.counts, 0.9999))


def test_prepared_data_moves_to_another_device_and_stays_where_it_is(synthetic_data):
    assert synthetic_data.to(torch.device("cpu")) is synthetic_data
    moved = synthetic_data.to(torch.device("meta"))
    for split, before in [(moved.train, synthetic_data.train), (moved.test, synthetic_data.test)]:
        assert split.images.device.type == split.labels.device.type == "meta"
        assert split.images.shape == before.images.shape and split.labels.dtype == before.labels.dtype
    assert (moved.val is None) is (synthetic_data.val is None)
    assert moved.counts is synthetic_data.counts and moved.classes == synthetic_data.classes  # counts stay on the CPU


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "cdb_stable"])
def test_an_epoch_syncs_with_the_host_twice_whatever_its_number_of_steps(loss, synthetic_data, tiny_config):
    # The loss's value checks run on the epoch's first batch only; the other sync is the epoch's mean loss. Each is a
    # stall of the GPU's queue on CUDA (on an H200, with one sync a step, the trainer ran at 0.76-0.80x a bare loop).
    from longtail.train import build_run, train_one_epoch
    from profiling import host_syncs

    config = tiny_config(batch_size=8, loss=loss, val_per_class=0 if loss == "ce" else 1, device="cpu")
    run = build_run(config, synthetic_data, torch.device("cpu"))
    assert len(synthetic_data.train) // 8 > 10
    assert host_syncs(lambda: train_one_epoch(run, 0)) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_data_prepared_on_the_cpu_trains_on_cuda(synthetic_data, tmp_path, tiny_config):
    # Measured on an H200 before the move: the epoch's CUDA generator met CPU labels in randperm (a RuntimeError).
    result = train(tiny_config(device="cuda"), tmp_path, verbose=0, data=synthetic_data)
    assert result["status"] == "complete" and result["device"].startswith("cuda")
    assert synthetic_data.train.labels.device.type == "cpu"  # the caller's data is not moved under it


def test_result_file_contents(synthetic_data, tmp_path, tiny_config):
    result = train(tiny_config(), tmp_path, verbose=0, data=synthetic_data)
    for key in ["longtail_version", "torch_version", "config", "train_counts", "history", "final", "train_seconds",
                "eval_seconds", "wall_seconds", "device", "hardware"]:
        assert key in result
    from longtail.train.device import cpu_has_native_bfloat16, hardware, same_hardware

    assert result["hardware"]["native_bfloat16"] is cpu_has_native_bfloat16()
    assert result["hardware"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    ran_on = torch.device(result["device"])  # tiny_config's device="auto": CUDA where a GPU is present
    assert same_hardware(result["hardware"], hardware(ran_on))
    assert ("gpu" in result["hardware"]) is (ran_on.type == "cuda")
    assert not same_hardware(result["hardware"], {**result["hardware"], "native_bfloat16": not cpu_has_native_bfloat16()})
    assert not same_hardware(result["hardware"], {**result["hardware"], "gpu": "another GPU"})  # another GPU, or one
    final = result["final"]
    assert len(final["per_class_accuracy"]) == 10
    assert set(final["shot_accuracy"]) == {"many", "medium", "few"}
    assert result["train_seconds"] > 0 and result["eval_seconds"] > 0


def test_same_seed_same_result_and_resume_of_a_finished_run(synthetic_data, tmp_path, tiny_config):
    a = train(tiny_config(), tmp_path / "a", verbose=0, data=synthetic_data)
    b = train(tiny_config(), tmp_path / "b", verbose=0, data=synthetic_data)
    assert a["history"] == [dict(h) for h in b["history"]]
    again = train(tiny_config(), tmp_path / "a", resume=True, verbose=0, data=synthetic_data)
    assert again["history"] == a["history"]


def test_resume_refuses_a_different_configuration(synthetic_data, tmp_path, tiny_config):
    train(tiny_config(epochs=1), tmp_path, verbose=0, data=synthetic_data)
    with pytest.raises(ValueError, match="cannot resume: the configuration differs .*lr: saved 0.05, now 0.1"):
        train(tiny_config(epochs=1, lr=0.1), tmp_path, resume=True, verbose=0, data=synthetic_data)


def _cli(*args, **kwargs):
    return [sys.executable, "-m", "longtail", *args]


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_final_metrics(tmp_path):
    args = ["train", "--dataset", "synthetic", "--imbalance", "10", "--n-max", "200", "--epochs", "4",
            "--batch-size", "32", "--width", "8", "--eval-every", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(*args, "--out", str(tmp_path / "full")), check=True, env=env, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if (killed / "checkpoint.pt").exists() and load_checkpoint(killed / "checkpoint.pt")["epoch"] >= 0:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = json.loads((killed / "result.json").read_text())
    assert interrupted["status"] == "running", "the run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert not list(killed.glob(".*.tmp"))  # atomic writes leave no temporary files behind

    resumed = subprocess.run(_cli(*args, "--out", str(killed), "--resume"), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    full = json.loads((tmp_path / "full" / "result.json").read_text())
    after = json.loads((killed / "result.json").read_text())
    assert after["status"] == "complete"
    assert after["final"]["per_class_accuracy"] == full["final"]["per_class_accuracy"]
    assert [h["test"] for h in after["history"]] == [h["test"] for h in full["history"]]
    assert [h["train_loss"] for h in after["history"]] == pytest.approx([h["train_loss"] for h in full["history"]],
                                                                         rel=1e-6)


@pytest.mark.distributed
def test_ddp_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "longtail", "train", "--dataset", "synthetic", "--imbalance", "10", "--n-max", "100",
               "--epochs", "2", "--batch-size", "32", "--width", "8", "--loss", "cdb", "--val-per-class", "10",
               "--device", "cpu", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["status"] == "complete"
    # The validation counts were summed over both processes before the weights were formed.
    assert sum(result["history"][-1]["cdb_weights"]) == pytest.approx(10.0, rel=1e-5)
    assert done.stdout.count("epoch   2/2") == 1  # only rank 0 logs
    assert done.stdout.count("balanced accuracy") == 1  # and prints the summary

    # The checkpoint records the world size: the first epoch's state, resumed by one process, is refused.
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["world_size"] == 2
    from longtail.io import save_checkpoint

    save_checkpoint(out / "checkpoint.pt", {**state, "epoch": 0, "history": state["history"][:1]})
    config = TrainConfig.from_dict(result["config"])
    with pytest.raises(ValueError, match=r"^cannot resume: the world size must be 2, the checkpoint's \(the data "
                       r"shards and the gradient average depend on it\); got 1: resume with torchrun --nproc-per-node 2"):
        train(config, out, resume=True, verbose=0)


@pytest.mark.distributed
def test_ddp_train_loss_is_over_every_process_and_small_batches_are_refused(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "train_ddp_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker,
               str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for report in reports:  # refused before training (it used to train zero steps and report a loss of 0)
        assert report["batch_error"] == ("batch_size must be >= 2 x the world size = 4 (2 samples for each of 2 "
                                         "processes: BatchNorm needs two); got 3")
    assert not (tmp_path / "refused" / "result.json").exists()
    # Every rank returns the mean over both shards (it was each rank's own shard), which result.json records.
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["world_size"] == 2
    assert reports[0]["train_loss"] == reports[1]["train_loss"] == [h["train_loss"] for h in saved["history"]]
    # A second stage under DDP (frozen backbone, class-balanced sampler): each process a disjoint shard of the
    # epoch's sample, which every process draws the same.
    assert all(r["crt"] == {"status": "complete", "world_size": 2, "sampler": "class_balanced"} for r in reports)
    order = reports[0]["order"]
    assert reports[1]["order"] == order
    for step, (first, second) in enumerate(zip(reports[0]["shards"], reports[1]["shards"], strict=True)):
        assert sorted(first + second) == sorted(order[step * 32 : (step + 1) * 32])
        assert len(first) - len(second) in (0, 1)  # 16 and 16 for a full batch of 32


def test_eval_every_evaluates_the_test_set_on_schedule_and_at_the_end(synthetic_data, tmp_path, tiny_config):
    result = train(tiny_config(epochs=3, eval_every=2), tmp_path, verbose=0, data=synthetic_data)
    assert ["test" in h for h in result["history"]] == [False, True, True]
    assert result["final"]["accuracy"] == result["history"][-1]["test"]["accuracy"]


@pytest.mark.slow
def test_cifar_preset_runs_a_few_steps_on_a_cifar_folder(tmp_path):
    from data_helpers import make_cifar10

    from longtail.train.presets import PRESETS, preset_config

    make_cifar10(tmp_path / "data", per_batch=40)  # 20 images per class
    config = preset_config("cb-cifar", data_dir=str(tmp_path / "data"), imbalance=10, epochs=1, batch_size=16,
                           warmup_epochs=0.5)
    assert (config.model, config.milestones, config.lr_decay, config.weight_decay) == ("resnet32", [160, 180], 0.01, 2e-4)
    result = train(config, tmp_path / "run", verbose=0)
    assert result["status"] == "complete" and result["config"]["model"] == "resnet32"
    assert result["train_counts"] == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    for name in PRESETS:  # every preset is a valid configuration
        preset_config(name)


def test_amp_option_keeps_the_cpu_path_working(synthetic_data, tmp_path, tiny_config):
    # bfloat16 autocast is meant for CUDA; on the CPU it must still train and give finite results.
    result = train(tiny_config(epochs=1, amp=True), tmp_path, verbose=0, data=synthetic_data)
    assert math.isfinite(result["history"][0]["train_loss"]) and 0 <= result["final"]["accuracy"] <= 1


def test_download_option_reaches_the_fashion_mnist_loader(monkeypatch):
    from longtail.data import registry

    calls = []
    monkeypatch.setattr(registry, "load_fashion_mnist", lambda d, train, download: calls.append((d, train, download)))
    registry.load_dataset("fashion_mnist", "/somewhere", train=False, download=True)
    assert calls == [("/somewhere", False, True)]


def test_build_run_and_train_one_epoch_are_the_trainer(synthetic_data, tmp_path, tiny_config):
    # A user's own loop over build_run / train_one_epoch reproduces train() exactly.
    from longtail.train import build_run, final_report, train_one_epoch

    config = tiny_config(loss="cb_focal", drw_epoch=None)
    result = train(config, tmp_path, verbose=0, data=synthetic_data)
    run = build_run(config, synthetic_data)
    assert [train_one_epoch(run, epoch) for epoch in range(config.epochs)] == [h["train_loss"] for h in result["history"]]
    assert final_report(run)["per_class_accuracy"] == result["final"]["per_class_accuracy"]


def test_deferred_reweighting_of_a_focal_loss_keeps_its_weight_with_the_loss(synthetic_data, tmp_path, tiny_config):
    config = tiny_config(epochs=2, loss="focal", drw_epoch=1)
    result = train(config, tmp_path, verbose=0, data=synthetic_data)
    assert math.isfinite(result["history"][-1]["train_loss"])
    from longtail import class_balanced_weights

    state = load_checkpoint(tmp_path / "checkpoint.pt")
    torch.testing.assert_close(state["criterion"]["weight"], class_balanced_weights(synthetic_data.counts, 0.9999))


@pytest.mark.slow
def test_compile_traces_one_graph_the_short_batch_and_evaluation_run_eagerly(tmp_path, monkeypatch, tiny_config):
    # Each extra graph (the epoch's last, shorter batch; eval mode) cost a ~20 s recompile on the CPU.
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_(model, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    config = tiny_config(epochs=2, compile=True, val_per_class=5, eval_every=1)
    result = train(config, tmp_path, verbose=0)
    assert sum(result["train_counts"]) % config.batch_size > 1  # there is a short last batch
    assert result["status"] == "complete" and math.isfinite(result["history"][-1]["train_loss"])
    assert counters["stats"]["unique_graphs"] == 1
