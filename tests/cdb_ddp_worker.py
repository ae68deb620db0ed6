"""One process of the two-process gloo test in test_cdb_distributed.py (run as a script).

Usage: ``python cdb_ddp_worker.py RANK WORLD_SIZE OUTPUT`` with MASTER_ADDR=127.0.0.1 and
MASTER_PORT in the environment. Each rank sees its own class mix (``rank_batches``), accumulates a
ClassDifficulty, a TrainingDifficultyEMA and a ConfusionMeter with top-k hits and confidence sums,
reduces them over the group, updates CDBLoss modules from them and saves the results for the parent
to compare; it also sums a non-contiguous tensor with ``all_reduce_sum``.
"""

from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist

from longtail.difficulty import ClassDifficulty, TrainingDifficultyEMA
from longtail.confusion import all_reduce_sum
from longtail.metrics import ConfusionMeter
from longtail.losses.cdb import CDBLoss

NUM_CLASSES = 5
IGNORE_INDEX = -100
EMA_MOMENTUM = 0.8
# Per-rank class mixes (samples per class per batch) and how often each rank's predictions are
# right: class 2 only on rank 1, class 3 only on rank 0, class 4 nowhere (its accuracy stays NaN).
CLASS_MIX = {0: [14, 3, 0, 2, 0], 1: [2, 7, 10, 0, 0]}
HIT_RATE = {0: [0.9, 0.6, 0.0, 0.3, 0.0], 1: [0.5, 0.2, 0.4, 0.0, 0.0]}
NUM_BATCHES = 3  # equal on every rank, as under DDP (the EMA discounts once per batch)
TOP_K = (1, 2)


def rank_matrix(rank: int) -> torch.Tensor:
    """A non-contiguous int64 (3, 2) view, different per rank, for ``all_reduce_sum``."""
    return (torch.arange(6, dtype=torch.int64).reshape(2, 3) * (rank + 1)).t()


def rank_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (logits, targets) batches that ``rank`` sees; deterministic, different per rank."""
    gen = torch.Generator().manual_seed(1000 + rank)
    batches = []
    for _ in range(NUM_BATCHES):
        y = torch.cat([torch.full((n,), c) for c, n in enumerate(CLASS_MIX[rank])])
        hit = torch.rand(len(y), generator=gen) < torch.tensor(HIT_RATE[rank])[y]
        logits = torch.randn(len(y), NUM_CLASSES, generator=gen)
        # A right prediction gets a large margin on its class; a wrong one on the next class.
        winner = torch.where(hit, y, (y + 1) % NUM_CLASSES)
        logits[torch.arange(len(y)), winner] += 10.0
        y = torch.cat([y, torch.full((2,), IGNORE_INDEX)])  # ignored samples must not count
        logits = torch.cat([logits, torch.randn(2, NUM_CLASSES, generator=gen)])
        batches.append((logits, y))
    return batches


def make_losses() -> tuple[CDBLoss, CDBLoss]:
    """The criterion updated from the validation counts, and the one updated from the EMA."""
    return CDBLoss(NUM_CLASSES, tau="dynamic"), CDBLoss(NUM_CLASSES, tau=1.5, floor=0.05)


def main(rank: int, world_size: int, output: str) -> None:
    dist.init_process_group(
        "gloo", init_method="env://", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=30)
    )
    try:
        difficulty = ClassDifficulty(NUM_CLASSES, ignore_index=IGNORE_INDEX)
        ema = TrainingDifficultyEMA(NUM_CLASSES, momentum=EMA_MOMENTUM, ignore_index=IGNORE_INDEX)
        meter = ConfusionMeter(NUM_CLASSES, top_k=TOP_K, ignore_index=IGNORE_INDEX, confidence=True)
        for logits, y in rank_batches(rank):
            difficulty.update(logits, y)
            ema.update(logits, y)
            meter.update(logits, y)
        local_accuracy = difficulty.accuracy()
        assert difficulty.all_reduce() is difficulty
        assert ema.all_reduce() is ema
        assert meter.all_reduce() is meter
        matrix = rank_matrix(rank)
        assert all_reduce_sum(matrix) is matrix  # summed in place, though not contiguous
        criterion, ema_criterion = make_losses()
        criterion.update_from(difficulty)
        ema_criterion.update_from(ema)
        torch.save(
            {
                "local_accuracy": local_accuracy,
                "correct": difficulty.correct.clone(),
                "total": difficulty.total.clone(),
                "criterion": criterion.state_dict(),
                "ema_accuracy": ema.accuracy(),
                "ema_criterion": ema_criterion.state_dict(),
                "meter": meter.state_dict(),
                "matrix": matrix.clone(),
            },
            output,
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
