"""Class-aware samplers of the trainer (``longtail train --sampler``): which images an epoch visits.

Kang et al. (ICLR 2020, "Decoupling Representation and Classifier") sample class ``j``, which has
``n_j`` training images, with probability

.. math::

    p_j(q) = \\frac{n_j^q}{\\sum_i n_i^q},

uniformly within the class: instance-balanced ``q = 1`` (every image equally likely: plain
shuffling), square-root ``q = 1/2``, class-balanced ``q = 0`` (every class equally likely). The
progressively-balanced sampler moves from the first to the last over the run:
``p_j(t) = (1 - t/T) p_j(1) + (t/T) p_j(0)`` at epoch ``t`` (0-based) of ``T``.

An epoch has as many draws as the training split has images. ``instance`` is a permutation (each
image once, the trainer's order before samplers existed, so earlier runs reproduce exactly); the
others draw with replacement, one ``torch.multinomial`` over the images with image weights
``p_{y_i} / n_{y_i}`` (so a class's draws are uniform over its images). Both come from the
generator seeded by ``(seed, epoch)``: an epoch's sample is the same on a resumed run and on every
process, and under DDP each process takes its own disjoint shard of every batch of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ClassProbabilities = Callable[[torch.Tensor, int, int], torch.Tensor]


def class_probabilities(counts: torch.Tensor, q: float) -> torch.Tensor:
    """``p_j = n_j**q / sum_i n_i**q`` in float64 (a class with no images gets 0, also for ``q = 0``)."""
    n = counts.double()
    powered = torch.where(n > 0, n.clamp_min(1.0) ** q, torch.zeros_like(n))
    return powered / powered.sum()


def progressive_probabilities(counts: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor:
    """``(1 - t/T) p(1) + (t/T) p(0)`` at epoch ``t = epoch`` of ``T = epochs``."""
    t = epoch / max(epochs, 1)
    return (1.0 - t) * class_probabilities(counts, 1.0) + t * class_probabilities(counts, 0.0)


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: its line in ``longtail train --help`` and its class probabilities at an epoch.

    ``probabilities(counts, epoch, epochs)`` -> ``(C,)`` float64 summing to 1; ``None`` for the
    instance-balanced permutation.
    """

    summary: str
    probabilities: ClassProbabilities | None = None

    def describe(self) -> str:
        return self.summary


# name -> spec. Order is the order of `longtail train --help`.
SAMPLERS: dict[str, SamplerSpec] = {
    "instance": SamplerSpec("instance-balanced: a permutation of the training images (q = 1)"),
    "class_balanced": SamplerSpec("class-balanced: every class equally likely, uniform within it (q = 0)",
                                  lambda counts, epoch, epochs: class_probabilities(counts, 0.0)),
    "sqrt": SamplerSpec("square-root: p_j proportional to sqrt(n_j) (q = 1/2)",
                        lambda counts, epoch, epochs: class_probabilities(counts, 0.5)),
    "progressive": SamplerSpec("progressively-balanced: from instance- to class-balanced over the epochs",
                               progressive_probabilities),
}


def epoch_order(
    sampler: str,
    labels: torch.Tensor,
    counts: torch.Tensor,
    epoch: int,
    epochs: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The indices an epoch visits, in order: ``(N,)`` int64 on the labels' device, ``N = len(labels)``.

    ``counts`` are the ``(C,)`` training images per class (the counts of ``labels``); ``generator``
    lives on the labels' device (the trainer's ``(seed, epoch)`` generator).
    """
    spec = SAMPLERS[sampler]
    n = labels.shape[0]
    if spec.probabilities is None:
        return torch.randperm(n, generator=generator, device=labels.device)
    p = spec.probabilities(counts.cpu(), epoch, epochs)
    # Image weight p_y / n_y: the class of a draw has probability p_j, and within it every image 1 / n_j.
    per_image = (p / counts.cpu().double().clamp_min(1.0)).to(labels.device)[labels]
    return torch.multinomial(per_image, n, replacement=True, generator=generator)


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
