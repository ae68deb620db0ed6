"""longtail.integrations.lightning.CDBCallback with a tiny linear model on synthetic 2-D data (no downloads).

Checks that Lightning's sanity check does not update the CDB weights, that the weights after an epoch are those of
``CDBLoss.update_weights`` on the per-class accuracies computed independently on the validation set, that two DDP
processes (gloo, CPU) end with identical weights equal to the full-validation-set computation, and that checkpoints
keep the weights. Also run as a script: ``python test_integrations_lightning.py OUTPUT_DIR`` is one DDP run (Lightning
launches the second rank by running the same command again).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from longtail import CDBLoss
from longtail.integrations.lightning import LIGHTNING_AVAILABLE, CDBCallback, pl

if not LIGHTNING_AVAILABLE:
    pytest.skip("needs Lightning (pip install 'longtail[lightning]')", allow_module_level=True)

NUM_CLASSES = 3
TRAIN_PER_CLASS = (80, 30, 10)
VAL_PER_CLASS = (20, 20, 20)  # 60: an even split over 2 ranks, so DistributedSampler pads nothing
CENTERS = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
DDP_DEADLINE_S = 120.0  # only reached on a failure


def _data(per_class, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    x = CENTERS[y] + 1.3 * torch.randn(len(y), 2, generator=gen)
    return x, y


X_TRAIN, Y_TRAIN = _data(TRAIN_PER_CLASS, seed=1)
X_VAL, Y_VAL = _data(VAL_PER_CLASS, seed=2)


def _loaders(val_batch: int = 10) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(TensorDataset(X_TRAIN, Y_TRAIN), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=val_batch)
    return train, val


class TinyModule(pl.LightningModule):
    """A linear classifier trained with CDB-CE; the loss is the attribute ``criterion`` (so in the state_dict)."""

    def __init__(self, tau: float | str = "dynamic") -> None:
        super().__init__()
        if type(self) is TinyModule:
            self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = nn.Linear(2, NUM_CLASSES)
        self.criterion = CDBLoss(NUM_CLASSES, tau=tau)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return {"logits": logits, "target": y, "loss": self.criterion(logits, y)}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


class ExternalLossModule(TinyModule):
    """The loss lives outside the module (not a submodule): the callback's own checkpoint state keeps it."""

    def __init__(self, criterion: CDBLoss) -> None:
        super().__init__()
        del self.criterion
        self.outside = [criterion]  # a list: not registered as a submodule

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.outside[0](self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return self.net(x)  # only the logits: the callback takes the targets from the batch


class Probe(pl.Callback):
    """Records the CDB state at the start of every training epoch, and the validation batches seen."""

    def __init__(self, criterion_of=lambda module: module.criterion) -> None:
        self.criterion_of = criterion_of
        self.at_epoch_start: list[dict] = []
        self.sanity_batches = 0
        self.val_targets_seen = 0

    def on_train_epoch_start(self, trainer, pl_module):
        criterion = self.criterion_of(pl_module)
        self.at_epoch_start.append({
            "epoch": trainer.current_epoch,
            "weight": criterion.weight.detach().clone(),
            "num_updates": int(criterion.num_updates),
            "expected": expected_weights(pl_module.net, criterion.tau),
        })

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            self.sanity_batches += 1
        else:
            self.val_targets_seen += len(batch[1])


class MemoryLogger(pl.loggers.Logger):
    """Keeps what it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))


def per_class_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of each class on (x, y), counted by hand (no ConfusionMeter)."""
    with torch.no_grad():
        pred = net(x.to(next(net.parameters()).device)).argmax(1).cpu()
    acc = [float(((pred == c) & (y == c)).sum()) / float((y == c).sum()) for c in range(NUM_CLASSES)]
    return torch.tensor(acc, dtype=torch.float64)


def expected_weights(net: nn.Module, tau) -> torch.Tensor:
    """CDBLoss.update_weights on the independently computed validation accuracies of ``net``."""
    return CDBLoss(NUM_CLASSES, tau=tau).update_weights(per_class_accuracy(net, X_VAL, Y_VAL))


def _trainer(tmp_path: Path, callbacks: list, **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", devices=1, max_epochs=2, num_sanity_val_steps=2, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   log_every_n_steps=1, default_root_dir=str(tmp_path))
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def test_sanity_check_is_skipped_and_each_epoch_updates_to_the_validation_accuracies(tmp_path):
    model, probe, logger = TinyModule(), Probe(), MemoryLogger()
    callback = CDBCallback()
    trainer = _trainer(tmp_path, [callback, probe], logger=logger)
    trainer.fit(model, *_loaders())
    first, second = probe.at_epoch_start
    assert probe.sanity_batches == 2  # the sanity check ran...
    assert first["epoch"] == 0 and first["num_updates"] == 0  # ...and did not touch the weights
    assert torch.equal(first["weight"], torch.ones(NUM_CLASSES))
    assert callback.meter.num_samples == len(Y_VAL)  # the last pass, without the sanity batches
    # After epoch 0: the weights of the accuracies of the model that was validated (no step since).
    assert second["epoch"] == 1 and second["num_updates"] == 1
    assert not torch.equal(second["weight"], torch.ones(NUM_CLASSES))
    assert torch.equal(second["weight"], second["expected"])
    # After epoch 1 (the end of fit): the final model's.
    assert int(model.criterion.num_updates) == 2
    final = expected_weights(model.net, "dynamic")
    assert torch.equal(model.criterion.weight, final)
    torch.testing.assert_close(model.criterion.last_accuracy, per_class_accuracy(model.net, X_VAL, Y_VAL),
                               rtol=0, atol=0)
    metrics = trainer.callback_metrics
    assert float(metrics["cdb/tau"]) == pytest.approx(float(model.criterion.last_tau))
    assert float(metrics["cdb/weight_max"]) == pytest.approx(float(final.max()))
    per_class = [m for _, m in logger.metrics if "cdb/weight/0" in m]
    assert len(per_class) == 2  # one per update, none for the sanity check
    assert [per_class[-1][f"cdb/weight/{c}"] for c in range(NUM_CLASSES)] == final.tolist()
    logged_tau = [m["cdb/tau"] for _, m in logger.metrics if "cdb/tau" in m]
    assert len(logged_tau) == 2 and logged_tau[-1] == pytest.approx(float(model.criterion.last_tau))
    # trainer.validate() is an evaluation, not a CDB update.
    trainer.validate(model, _loaders()[1], verbose=False)
    assert int(model.criterion.num_updates) == 2 and torch.equal(model.criterion.weight, final)


def test_checkpoints_keep_the_weights_and_a_resumed_run_starts_with_them(tmp_path):
    model = TinyModule(tau=1.5)
    trainer = _trainer(tmp_path, [CDBCallback()], max_epochs=1)
    trainer.fit(model, *_loaders())
    saved = model.criterion.weight.clone()
    assert int(model.criterion.num_updates) == 1 and not torch.equal(saved, torch.ones(NUM_CLASSES))
    path = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(path)
    assert torch.equal(torch.load(path, weights_only=False)["state_dict"]["criterion.weight"], saved)

    restored = TinyModule.load_from_checkpoint(path)
    assert torch.equal(restored.criterion.weight, saved) and int(restored.criterion.num_updates) == 1
    assert float(restored.criterion.last_tau) == 1.5

    # Resuming: the sanity check of the resumed run leaves the restored weights alone too.
    fresh, probe = TinyModule(tau=1.5), Probe()
    resumed = _trainer(tmp_path, [CDBCallback(), probe], max_epochs=2)
    resumed.fit(fresh, *_loaders(), ckpt_path=path)
    (start,) = probe.at_epoch_start
    assert start["epoch"] == 1 and probe.sanity_batches == 2
    assert torch.equal(start["weight"], saved) and start["num_updates"] == 1
    assert int(fresh.criterion.num_updates) == 2


def test_a_loss_outside_the_module_is_checkpointed_by_the_callback(tmp_path):
    criterion = CDBLoss(NUM_CLASSES, tau=1.0)
    callback = CDBCallback(criterion, get_logits_target=lambda outputs, batch: (outputs, batch[1]))
    model = ExternalLossModule(criterion)
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    trainer.fit(model, *_loaders())
    assert torch.equal(criterion.weight, expected_weights(model.net, 1.0))
    path = tmp_path / "external.ckpt"
    trainer.save_checkpoint(path)
    assert not any(k.startswith("criterion") for k in torch.load(path, weights_only=False)["state_dict"])

    other = CDBLoss(NUM_CLASSES, tau=1.0)
    probe = Probe(criterion_of=lambda module: other)
    resumed = _trainer(tmp_path, [CDBCallback(other, get_logits_target=lambda o, b: (o, b[1])), probe],
                       max_epochs=2)
    resumed.fit(ExternalLossModule(other), *_loaders(), ckpt_path=path)
    assert torch.equal(probe.at_epoch_start[0]["weight"], criterion.weight)
    assert int(other.num_updates) == 2


def test_a_validation_step_without_logits_and_targets_is_explained(tmp_path):
    model = ExternalLossModule(CDBLoss(NUM_CLASSES))
    model.criterion = model.outside[0]  # found under the default name, but validation_step returns bare logits
    trainer = _trainer(tmp_path, [CDBCallback()], max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0)
    with pytest.raises(TypeError, match=r"return \{'logits': logits, 'target': target\} from validation_step, or pass "
                                        r"get_logits_target=.*validation_step returned Tensor"):
        trainer.fit(model, *_loaders())


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="criterion must be a CDBLoss"):
        CDBCallback(nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="get_logits_target must be callable"):
        CDBCallback(get_logits_target="logits")
    callback = CDBCallback("missing")
    with pytest.raises(AttributeError, match="has no attribute 'missing'; set self.missing = CDBLoss"):
        callback.setup(None, TinyModule(), "fit")


# --- DDP: two CPU processes (gloo) -----------------------------------------------------------------------------


def _ddp_worker(out_dir: Path) -> None:
    """One rank of the DDP run; Lightning starts rank 1 by running this script again with LOCAL_RANK=1."""
    torch.set_num_threads(1)
    model, probe = TinyModule(), Probe()
    callback = CDBCallback()
    trainer = _trainer(out_dir, [callback, probe], devices=2, strategy="ddp")
    trainer.fit(model, *_loaders(val_batch=10))
    # Nothing ran after the last validation pass: each rank holds the weights it computed (DDP broadcasts buffers
    # from rank 0 only at a training forward).
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "weight": model.criterion.weight.clone(),
        "last_tau": float(model.criterion.last_tau),
        "num_updates": int(model.criterion.num_updates),
        "pooled_samples": callback.meter.num_samples,
        "val_targets_seen": probe.val_targets_seen,
        "net": {k: v.clone() for k, v in model.net.state_dict().items()},
    }
    path = out_dir / f"rank{trainer.global_rank}.pt"
    torch.save(result, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)  # the parent never reads half a file


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_two_ddp_processes_end_with_the_weights_of_the_whole_validation_set(tmp_path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env["GLOO_SOCKET_IFNAME"] = "lo"
    log = tmp_path / "ddp.log"
    with open(log, "w") as out:  # a file, not a pipe: a chatty run cannot block on it
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(tmp_path)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    outputs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    deadline = time.monotonic() + DDP_DEADLINE_S
    try:
        # Rank 0 (our child) may exit before the rank 1 it launched has written its result.
        while time.monotonic() < deadline and not (proc.poll() is not None and (proc.returncode != 0 or all(
                path.exists() for path in outputs))):
            time.sleep(0.1)
    finally:
        try:  # end the whole session: rank 0 and the rank 1 it launched, whatever is left of them
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    assert proc.returncode == 0 and all(path.exists() for path in outputs), (
        f"the DDP run exited with {proc.returncode}:\n{log.read_text()[-6000:]}")
    ranks = [torch.load(path, weights_only=False) for path in outputs]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    # Each rank validated on its half of the set; the counts were pooled before the update.
    assert [r["val_targets_seen"] for r in ranks] == [2 * len(Y_VAL) // 2] * 2  # 2 epochs x 30 samples
    assert all(r["pooled_samples"] == len(Y_VAL) for r in ranks)
    assert all(r["num_updates"] == 2 for r in ranks)
    assert torch.equal(ranks[0]["weight"], ranks[1]["weight"]) and ranks[0]["last_tau"] == ranks[1]["last_tau"]
    for key in ranks[0]["net"]:
        assert torch.equal(ranks[0]["net"][key], ranks[1]["net"][key])
    net = nn.Linear(2, NUM_CLASSES)
    net.load_state_dict(ranks[0]["net"])
    assert torch.equal(ranks[0]["weight"], expected_weights(net, "dynamic"))


if __name__ == "__main__":
    _ddp_worker(Path(sys.argv[1]))
