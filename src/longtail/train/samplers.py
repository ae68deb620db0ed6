"""The trainer's samplers (``longtail train --sampler``): the epoch's draw, and each process's shard of its batches.

The samplers themselves (:data:`SAMPLERS`, ``p_j(q)``, the draw :func:`epoch_order`) live in
:mod:`longtail.data.samplers`, beside the ``DataLoader`` samplers that use the same draw; they are re-exported
here. What is the trainer's own is how it batches an epoch across processes: :func:`shard_batches`.
"""

from __future__ import annotations

import torch

from ..data.samplers import SAMPLERS, SamplerSpec, class_probabilities, epoch_order, progressive_probabilities


def shard_batches(order: torch.Tensor, batch_size: int, rank: int, world: int) -> list[tuple[torch.Tensor, bool]]:
    """Splits an epoch's ``order`` into batches of ``batch_size`` and returns this process's shard of each.

    Process ``rank`` of ``world`` takes positions ``rank, rank + world, ...`` of every batch, so the
    shards are disjoint and together are the batch. A final batch with fewer than two images per
    process is dropped (BatchNorm needs two); the flag says whether a batch is a full one.
    """
    batches = []
    for start in range(0, order.shape[0], batch_size):
        indices = order[start : start + batch_size]
        if indices.shape[0] < 2 * world:
            break
        batches.append((indices[rank::world], indices.shape[0] == batch_size))
    return batches


__all__ = [
    "SAMPLERS",
    "SamplerSpec",
    "class_probabilities",
    "epoch_order",
    "progressive_probabilities",
    "shard_batches",
]
