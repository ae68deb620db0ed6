"""One process of the two-process tests of longtail.data's samplers in test_data_samplers.py (gloo, CPU).

``python -m torch.distributed.run --standalone --nproc-per-node 2 data_samplers_ddp_worker.py plain OUTPUT``: a
plain loop over a ``DataLoader`` with a :class:`DistributedClassAwareSampler` whose ``num_replicas`` and ``rank``
come from the process group. ``python data_samplers_ddp_worker.py lightning OUTPUT``: a Lightning DDP run
(``use_distributed_sampler=False``, ``devices=2``), Lightning starting rank 1 by running the same command again.
Each rank writes the dataset indices it trained on, per epoch, to ``OUTPUT/<mode>-rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from longtail.data import DistributedClassAwareSampler

# A long tail of 5 classes (580 images); every epoch draws 580, so 10 epochs give 5,800 draws to count.
COUNTS = (400, 120, 40, 12, 8)
LABELS = torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))
PLAIN = dict(q=0.5, seed=3, epochs=10, batch_size=16)
LIGHTNING = dict(q="progressive", seed=5, epochs=2, batch_size=16)


def _write(out: Path, name: str, report: dict) -> None:
    path = out / f"{name}-rank{report['rank']}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    os.replace(path.with_suffix(".tmp"), path)  # the parent never reads half a file


def plain(out: Path) -> None:
    dist.init_process_group("gloo")
    sampler = DistributedClassAwareSampler(LABELS, q=PLAIN["q"], seed=PLAIN["seed"])  # the group's world and rank
    loader = DataLoader(TensorDataset(torch.arange(len(LABELS))), batch_size=PLAIN["batch_size"], sampler=sampler)
    epochs = []
    for epoch in range(PLAIN["epochs"]):
        sampler.set_epoch(epoch)
        epochs.append([i for (batch,) in loader for i in batch.tolist()])
    _write(out, "plain", {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "epochs": epochs})
    dist.destroy_process_group()


def lightning(out: Path) -> None:
    from torch import nn

    from longtail.integrations.lightning import pl

    torch.set_num_threads(1)
    x = torch.randn(len(LABELS), 2, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(x, LABELS, torch.arange(len(LABELS)))

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(2, len(COUNTS))
            self.seen: list[list[int]] = []

        def train_dataloader(self):  # after the process group exists: the sampler reads its world size and rank
            sampler = DistributedClassAwareSampler(LABELS, q=LIGHTNING["q"], seed=LIGHTNING["seed"],
                                                   epochs=LIGHTNING["epochs"])
            return DataLoader(dataset, batch_size=LIGHTNING["batch_size"], sampler=sampler)

        def on_train_epoch_start(self) -> None:
            self.seen.append([])

        def training_step(self, batch, batch_idx):
            inputs, target, index = batch
            self.seen[-1].extend(index.tolist())
            return nn.functional.cross_entropy(self.net(inputs), target)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Module()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False,
                         max_epochs=LIGHTNING["epochs"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out))
    trainer.fit(module)
    _write(out, "lightning", {"rank": trainer.global_rank, "world_size": trainer.world_size, "epochs": module.seen})
    if dist.is_initialized():
        # Every rank finishes before the group is torn down: without it one rank aborted at exit here once
        # ("terminate called without an active exception", SIGABRT), as the trainer's runs did before its barrier.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    {"plain": plain, "lightning": lightning}[sys.argv[1]](Path(sys.argv[2]))
