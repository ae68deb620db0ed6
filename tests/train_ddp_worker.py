"""One process of the two-process trainer test in test_train.py, started by torchrun (gloo, CPU).

Usage: ``python -m torch.distributed.run --standalone --nproc-per-node 2 train_ddp_worker.py OUTPUT``. Each rank
first asks for a batch too small for two processes (refused before training), then trains a short run and a cRT
second stage on it (frozen backbone, class-balanced sampler), and writes what ``train`` returned to it (its
``train_loss`` per epoch) and its shard of every batch of the sampler's first epoch to ``OUTPUT/rank<r>.json``, for
the parent to compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from longtail.train import TrainConfig, prepare_data, train
from longtail.train.samplers import epoch_order, shard_batches
from longtail.train.trainer import _epoch_generator

FAST = dict(dataset="synthetic", imbalance=10, n_max=100, epochs=2, batch_size=32, width=8, device="cpu")


def main(out: Path) -> None:
    dist.init_process_group("gloo")  # here, so that train() finds the group and leaves it to us
    rank = dist.get_rank()
    report: dict = {"rank": rank, "world_size": dist.get_world_size()}
    try:
        train(TrainConfig(**{**FAST, "batch_size": 3}), out / "refused", verbose=0)
    except ValueError as exc:
        report["batch_error"] = str(exc)
    result = train(TrainConfig(**FAST), out / "run", verbose=0)
    report["train_loss"] = [h["train_loss"] for h in result["history"]]
    crt = TrainConfig(**FAST, stage="crt", init_from=str(out / "run"))
    second = train(crt, out / "crt", verbose=0)
    report["crt"] = {"status": second["status"], "world_size": second["world_size"], "sampler": crt.sampler}
    # The batches of the cRT run's first epoch, as the trainer draws them: the order is every process's, the shard
    # this one's.
    cpu = torch.device("cpu")
    labels = prepare_data(crt, cpu).train.labels
    counts = torch.bincount(labels, minlength=10)
    order = epoch_order(crt.sampler, labels, counts, 0, crt.epochs, _epoch_generator(crt, 0, cpu))
    report["order"] = order.tolist()
    report["shards"] = [indices.tolist() for indices, _ in shard_batches(order, crt.batch_size, rank, dist.get_world_size())]
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
