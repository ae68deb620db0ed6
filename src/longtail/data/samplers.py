"""Class-aware samplers for any ``DataLoader``, and the epoch draw the trainer (``longtail train --sampler``) uses.

Kang et al. (ICLR 2020, "Decoupling Representation and Classifier") sample class ``j``, which has
``n_j`` training images, with probability

.. math::

    p_j(q) = \\frac{n_j^q}{\\sum_i n_i^q},

uniformly within the class: instance-balanced ``q = 1`` (every image equally likely: plain
shuffling), square-root ``q = 1/2``, class-balanced ``q = 0`` (every class equally likely), or any
power ``q >= 0``. The progressively-balanced sampler moves from the first to the last over the run:
``p_j(t) = (1 - t/T) p_j(1) + (t/T) p_j(0)`` at epoch ``t`` (0-based) of ``T``.

An epoch has as many draws as there are images (or ``num_samples``). ``instance`` (``q = 1``) is a
permutation (each image once: the trainer's order before samplers existed, so earlier runs reproduce
exactly); the others draw with replacement, one ``torch.multinomial`` over the images with image
weights ``p_{y_i} / n_{y_i}`` (so a class's draws are uniform over its images). Both come from a
generator seeded by ``(seed, epoch)`` (:func:`epoch_seed`): an epoch's sample is the same on a
resumed run and on every process, and under DDP each process takes its own disjoint shard of it.

* :func:`epoch_order`: one epoch's draw from a generator; the trainer and the samplers below call it.
* :class:`ClassAwareSampler`: a ``torch.utils.data.Sampler`` of one epoch's sample (``set_epoch`` each epoch).
* :class:`DistributedClassAwareSampler`: every process draws the same epoch sample and iterates its disjoint
  shard, padded or truncated as ``torch.utils.data.DistributedSampler`` so every process has the same length.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..checks import as_tensor, check_int, check_real, check_seed

ClassProbabilities = Callable[[torch.Tensor, int, int], torch.Tensor]

#: The largest seed: the trainer's 32-bit seeds (numpy's), so ``seed * 1_000_003 + epoch`` stays a 64-bit seed.
MAX_SAMPLER_SEED = 2**32 - 1


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


def check_sampler(q: Any) -> str | float:
    """A sampler: a name of :data:`SAMPLERS`, or a power ``q >= 0`` (finite) as a Python float."""
    expected = f"a power >= 0 or one of {', '.join(map(repr, SAMPLERS))}"
    if isinstance(q, str):
        if q not in SAMPLERS:
            raise ValueError(f"q must be {expected}; got {q!r}")
        return q
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise TypeError(f"q must be {expected}; got {type(q).__name__} {q!r}")
    return check_real("q", q, low=0.0, finite=True)


def sampler_spec(q: str | float) -> SamplerSpec:
    """The spec of a sampler name, or of the power ``q`` (``q = 1`` is the ``instance`` permutation)."""
    q = check_sampler(q)
    if isinstance(q, str):
        return SAMPLERS[q]
    if q == 1.0:
        return SAMPLERS["instance"]
    return SamplerSpec(f"power q = {q:g}: p_j proportional to n_j**q",
                       lambda counts, epoch, epochs: class_probabilities(counts, q))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s generator: ``seed * 1_000_003 + epoch``, the trainer's formula."""
    return seed * 1_000_003 + epoch


def epoch_order(
    sampler: str | float,
    labels: torch.Tensor,
    counts: torch.Tensor,
    epoch: int,
    epochs: int,
    generator: torch.Generator,
    num_samples: int | None = None,
) -> torch.Tensor:
    """The indices an epoch visits, in order: ``(num_samples,)`` int64 on the labels' device.

    ``sampler`` is a name of :data:`SAMPLERS` or a power ``q``; ``counts`` are the ``(C,)`` images per
    class (the counts of ``labels``); ``generator`` lives on the labels' device (the trainer's
    ``(seed, epoch)`` generator). ``num_samples`` defaults to ``len(labels)``; the permutation then is
    one ``randperm``, and otherwise as many as needed, concatenated and cut (as ``RandomSampler``).
    """
    spec = sampler_spec(sampler)
    n = labels.shape[0]
    num_samples = n if num_samples is None else num_samples
    if spec.probabilities is None:
        perms = [torch.randperm(n, generator=generator, device=labels.device) for _ in range(-(-num_samples // n))]
        return (perms[0] if len(perms) == 1 else torch.cat(perms))[:num_samples]
    p = spec.probabilities(counts.cpu(), epoch, epochs)
    # Image weight p_y / n_y: the class of a draw has probability p_j, and within it every image 1 / n_j.
    per_image = (p / counts.cpu().double().clamp_min(1.0)).to(labels.device)[labels]
    return torch.multinomial(per_image, num_samples, replacement=True, generator=generator)


def as_sample_labels(labels: Any) -> torch.Tensor:
    """Labels of a dataset (tensor, numpy array or list): 1-D, non-empty, integer, non-negative; int64 on CPU."""
    tensor = as_tensor(labels, "labels")
    if tensor.dim() != 1:
        raise ValueError(f"labels must be 1-D, one class index per sample; got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError("labels must hold at least one label; got none")
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"labels must hold integer class indices; got dtype {tensor.dtype}")
    tensor = tensor.to(device="cpu", dtype=torch.int64)
    negative = tensor < 0
    if bool(negative.any()):
        index = int(torch.nonzero(negative)[0])
        raise ValueError(f"labels must be non-negative class indices; got {int(tensor[index])} at position {index}")
    return tensor


class ClassAwareSampler(Sampler[int]):
    """Samples a dataset's indices with class probabilities ``p_j(q)``, a new sample every epoch.

    Args:
        labels: the class index of every sample of the dataset (tensor, numpy array or list), in the
            dataset's order.
        q: ``"instance"`` (a permutation), ``"class_balanced"``, ``"sqrt"``, ``"progressive"``, or any
            power ``q >= 0`` (``1`` is ``"instance"``, ``0`` ``"class_balanced"``, ``0.5`` ``"sqrt"``).
        num_samples: draws per epoch (default ``len(labels)``).
        seed: the run's seed; epoch ``e`` draws from ``torch.Generator().manual_seed(seed * 1_000_003 + e)``,
            the trainer's generator: on the CPU, ``longtail train --seed s --sampler x`` visits the same order.
        epochs: ``T`` of the progressive sampler (required by it, read by no other).

    Call :meth:`set_epoch` at the start of every epoch (Lightning and the Hugging Face ``Trainer`` do): the
    same ``(seed, epoch)`` always gives the same sample, so without it every epoch repeats the first.

    Example:
        >>> sampler = ClassAwareSampler([0, 0, 0, 0, 0, 0, 1, 1], q="class_balanced", seed=0)
        >>> len(sampler), list(sampler)
        (8, [7, 6, 5, 7, 6, 7, 2, 4])
        >>> sampler.set_epoch(1)
        >>> list(sampler)
        [0, 2, 2, 2, 6, 1, 5, 6]
    """

    def __init__(
        self,
        labels: Any,
        q: str | float = "instance",
        *,
        num_samples: int | None = None,
        seed: int = 0,
        epochs: int | None = None,
    ) -> None:
        self.labels = as_sample_labels(labels)
        self.q = check_sampler(q)  # the name or power only (no spec: a sampler pickles, e.g. for ddp_spawn)
        self.counts = torch.bincount(self.labels)
        self.num_samples = len(self.labels) if num_samples is None else check_int("num_samples", num_samples, low=1)
        self.seed = check_seed(seed, high=MAX_SAMPLER_SEED)
        if self.q == "progressive":
            if epochs is None:
                raise ValueError("epochs must be given for the progressive sampler (T, the run's epochs); got None")
            self.epochs = check_int("epochs", epochs, low=1)
        else:
            self.epochs = 1 if epochs is None else check_int("epochs", epochs, low=1)
            probabilities = sampler_spec(self.q).probabilities
            if probabilities is not None:
                p = probabilities(self.counts, 0, self.epochs)
                if not bool(torch.isfinite(p).all()):  # n_max**q overflowed float64
                    raise ValueError(f"q must keep max(counts)**q finite in float64 (max count "
                                     f"{int(self.counts.max())}); got {self.q!r}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draws epoch ``epoch``'s sample next (0-based; ``< epochs`` for the progressive sampler)."""
        epoch = check_int("epoch", epoch, low=0)
        if self.q == "progressive" and epoch >= self.epochs:
            raise ValueError(f"epoch must be in [0, epochs - 1 = {self.epochs - 1}] for the progressive sampler; "
                             f"got {epoch}")
        self.epoch = epoch

    def epoch_sample(self) -> torch.Tensor:
        """The current epoch's whole sample, ``(num_samples,)`` int64: the same on every process."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return epoch_order(self.q, self.labels, self.counts, self.epoch, self.epochs, generator, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_sample().tolist())

    def __len__(self) -> int:
        return self.num_samples


class DistributedClassAwareSampler(ClassAwareSampler):
    """:class:`ClassAwareSampler` under DDP: every process draws the same epoch sample and iterates its shard.

    Process ``rank`` of ``num_replicas`` takes positions ``rank, rank + num_replicas, ...`` of the epoch's
    sample, as ``torch.utils.data.DistributedSampler`` does: the shards are disjoint and together are the
    sample. When ``num_samples`` (the whole epoch's, default ``len(labels)``) is not a multiple of
    ``num_replicas``, ``drop_last=False`` pads the sample with its own first indices up to the next
    multiple and ``drop_last=True`` cuts it to the multiple below, so every process has ``len(self)``
    indices. With a per-process batch of ``B / num_replicas``, process ``r``'s ``k``-th batch is the
    trainer's shard ``r`` of its ``k``-th batch of ``B``.

    ``num_replicas`` and ``rank`` default to the world size and rank of the initialised ``torch.distributed``
    group; the other arguments are :class:`ClassAwareSampler`'s, and must be the same on every process.

    Example:
        Five draws over two processes: the sample is padded with its first index to six.

        >>> shards = [DistributedClassAwareSampler([0, 0, 0, 1, 1], q=0.0, num_replicas=2, rank=r) for r in (0, 1)]
        >>> shards[0].epoch_sample().tolist(), [list(s) for s in shards]
        ([4, 3, 2, 4, 3], [[4, 2, 3], [3, 4, 4]])
    """

    def __init__(
        self,
        labels: Any,
        q: str | float = "instance",
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        num_samples: int | None = None,
        seed: int = 0,
        epochs: int | None = None,
    ) -> None:
        super().__init__(labels, q, num_samples=num_samples, seed=seed, epochs=epochs)
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None or rank is None:
            if not initialised:
                missing = "num_replicas" if num_replicas is None else "rank"
                raise ValueError(f"{missing} must be given when torch.distributed is not initialised; got None")
        self.num_replicas = check_int("num_replicas", dist.get_world_size() if num_replicas is None else num_replicas,
                                      low=1)
        self.rank = check_int("rank", dist.get_rank() if rank is None else rank, low=0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas - 1 = {self.num_replicas - 1}]; got {self.rank}")
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be a bool; got {type(drop_last).__name__} {drop_last!r}")
        self.drop_last = drop_last
        if drop_last:
            self.total_size = self.num_samples // self.num_replicas * self.num_replicas
            if self.total_size == 0:
                raise ValueError(f"num_samples must be >= num_replicas = {self.num_replicas} with drop_last=True "
                                 f"(every process would get nothing); got {self.num_samples}")
        else:
            self.total_size = math.ceil(self.num_samples / self.num_replicas) * self.num_replicas

    def shard(self) -> torch.Tensor:
        """This process's indices of the current epoch, ``(len(self),)`` int64."""
        sample = self.epoch_sample()
        if self.total_size > sample.numel():  # pad with the sample's first indices, as DistributedSampler
            sample = sample.repeat(math.ceil(self.total_size / sample.numel()))
        return sample[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard().tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas


__all__ = [
    "SAMPLERS",
    "ClassAwareSampler",
    "DistributedClassAwareSampler",
    "SamplerSpec",
    "check_sampler",
    "class_probabilities",
    "epoch_order",
    "epoch_seed",
    "progressive_probabilities",
    "sampler_spec",
]
