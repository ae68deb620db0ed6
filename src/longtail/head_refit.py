"""Linear heads refit on frozen features: how :func:`longtail.tune_beta` scores a loss without training again.

:func:`extract_features` computes a backbone's features once (eval mode, no augmentation); :func:`refit_heads` fits
one linear classifier per :class:`~longtail.tune_candidates.Candidate` on them, all K in one vectorised pass
(:class:`HeadSettings`: minibatch AdamW, cosine learning rate), and scores every head by
:func:`balanced_accuracy` (counted by :func:`longtail.confusion.confusion_counts`) and
:func:`calibrated_balanced_nll` (the tie-break of :func:`longtail.tune_candidates.choose`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .checks import as_counts, check_choice, check_int, check_real, check_seed
from .confusion import confusion_counts
from .functional.class_balanced import class_balanced_loss
from .tune_candidates import PRIOR_BIAS_LOSSES, Candidate

# log2-spaced from 1/16 to 16 (49 points): the temperatures of calibrated_balanced_nll.
TEMPERATURES = tuple(2.0 ** (k / 6) for k in range(-24, 25))

__all__ = [
    "HeadSettings",
    "TEMPERATURES",
    "balanced_accuracy",
    "calibrated_balanced_nll",
    "extract_features",
    "refit_heads",
]


@dataclass(frozen=True)
class HeadSettings:
    """How every head is refit: ``epochs`` over the cached training features in minibatches of ``batch_size``
    (seeded order), AdamW at ``lr`` with a cosine decay to 0 and decoupled ``weight_decay`` (never on a prior
    bias), the loss reduced with ``reduction`` (the trainer's). ``seed`` fixes the initialisation and the order."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.01
    weight_decay: float = 5e-4
    reduction: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", check_int("head_epochs", self.epochs, low=1))
        object.__setattr__(self, "batch_size", check_int("head_batch_size", self.batch_size, low=1))
        object.__setattr__(self, "lr", check_real("head_lr", self.lr, low=0.0, low_open=True, finite=True))
        object.__setattr__(self, "weight_decay", check_real("weight_decay", self.weight_decay, low=0.0, finite=True))
        object.__setattr__(self, "reduction", check_choice("reduction", self.reduction, ("mean", "weighted_mean")))
        object.__setattr__(self, "seed", check_seed(self.seed))


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on the CPU while the refits and covers run (restored after). Their matrices are small
    (a 256 x D batch against K x C heads); on a shared 2-core machine, OpenMP's barrier waits made two threads 7x
    slower than one (measured: 3 refit epochs of the 20 paper candidates 13.8 s against 2.0 s)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean per-class recall of every column of ``predictions`` ``(N, K)`` (float64 ``(K,)``), over the classes
    that ``labels`` holds: each head's confusion matrix from :func:`longtail.confusion.confusion_counts`.

    >>> balanced_accuracy(torch.tensor([[0, 0], [1, 0], [1, 1]]), torch.tensor([0, 1, 1]), 3)
    tensor([1.0000, 0.7500], dtype=torch.float64)
    """
    confusion = torch.stack([confusion_counts(predictions[:, k], labels, num_classes, ignore_index=None)
                             for k in range(predictions.shape[1])])  # (K, C, C) on the labels' device
    # (C, K) row-major and float64, as the quotient and its mean over classes have always been computed: the
    # tie-breaks of tune_beta compare these values to the last bit.
    correct = confusion.diagonal(dim1=1, dim2=2).T.double().contiguous()
    totals = confusion[0].sum(1).double()
    present = totals > 0
    return (correct[present] / totals[present, None]).mean(0).cpu()


def calibrated_balanced_nll(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                            chunk: int = 256) -> torch.Tensor:
    r"""The temperature-calibrated balanced NLL of every head in ``logits`` ``(N, C, K)`` (float64 ``(K,)``).

    .. math::
        \min_{T \in \mathcal{T}} \frac{1}{|C'|} \sum_{c \in C'} \frac{1}{n_c} \sum_{i: y_i = c}
        -\log \operatorname{softmax}(z_i / T)_{c}

    over the classes ``C'`` that ``labels`` holds and the fixed grid ``TEMPERATURES`` (2^(k/6), k = -24..24). The
    class average matches balanced accuracy; the temperature makes the score blind to each head's overall logit scale
    (sigmoid and focal heads are trained one-vs-rest, softmax heads jointly), so it measures how well a head ranks
    the true class, not how its family is calibrated. Computed in float64 in chunks of ``chunk`` rows.

    >>> logits = torch.tensor([[[2.0], [0.0]], [[1.0], [0.0]]])  # two images, two classes, one head
    >>> round(calibrated_balanced_nll(logits, torch.tensor([0, 1]), 2).item(), 4)  # at T = 2^(8/6)
    0.6421
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C, K) and labels (N,); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    n, _, k = logits.shape
    temperatures = torch.tensor(TEMPERATURES, dtype=torch.float64, device=logits.device)
    per_class = torch.zeros(num_classes, k, temperatures.numel(), dtype=torch.float64, device=logits.device)
    for start in range(0, n, chunk):
        z = logits[start : start + chunk].double()[..., None] / temperatures  # (b, C, K, T)
        y = labels[start : start + chunk]
        true = torch.log_softmax(z, dim=1).gather(1, y[:, None, None, None].expand(-1, 1, k, z.shape[-1]))
        per_class.index_add_(0, y, -true[:, 0])
    totals = torch.bincount(labels, minlength=num_classes).double()
    present = totals > 0
    return (per_class[present] / totals[present, None, None]).mean(0).min(1).values.cpu()


def refit_heads(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    candidates: Sequence[Candidate],
    counts: Any,
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    settings: HeadSettings | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Fits one linear head per candidate on the cached ``train_features`` ``(N, D)`` and returns, for every
    ``eval_sets`` entry ``name: (features, labels)``, ``{"balanced_accuracy": [...], "balanced_nll": [...]}``: each
    candidate's balanced accuracy and :func:`calibrated_balanced_nll` (in order).

    Every head starts from the same seeded initialisation (PyTorch's ``nn.Linear`` uniform bounds); sigmoid and
    focal heads start their bias at ``-log(C - 1)`` (:func:`longtail.init_prior_bias`'s default). The K fits run as
    one: stacked weights, one shared minibatch order, the sum of the K losses (each head's gradient is its own
    loss's), AdamW per parameter. On the CPU they run on one intra-op thread (``torch.set_num_threads(1)``,
    restored after; process-wide while it runs).
    """
    settings = settings or HeadSettings()
    if not candidates:
        raise ValueError("candidates must hold at least one candidate; got none")
    with _one_cpu_thread(train_features.device):
        return _refit_heads(train_features, train_labels, candidates, counts, eval_sets, settings)


def _refit_heads(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    candidates: Sequence[Candidate],
    counts: Any,
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    settings: HeadSettings,
) -> dict[str, dict[str, list[float]]]:
    x, y = train_features.float(), train_labels
    device = x.device
    n, dim = x.shape
    counts_t = as_counts(counts)
    num_classes = counts_t.numel()
    k = len(candidates)
    weights = torch.stack([c.weights(counts_t) for c in candidates]).to(device)  # (K, C)
    prior = torch.tensor([c.loss in PRIOR_BIAS_LOSSES for c in candidates], device=device)
    groups: dict[tuple[str, float], list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault((c.loss, c.gamma), []).append(i)
    group_index = [(loss, gamma, torch.tensor(ix, device=device)) for (loss, gamma), ix in groups.items()]

    gen = torch.Generator().manual_seed(settings.seed)
    bound = 1.0 / math.sqrt(dim)
    w0 = torch.empty(num_classes, dim).uniform_(-bound, bound, generator=gen)
    b0 = torch.empty(num_classes).uniform_(-bound, bound, generator=gen)
    weight = w0.expand(k, num_classes, dim).clone().to(device).requires_grad_(True)
    bias = b0.expand(k, num_classes).clone()
    if num_classes > 1:
        bias[prior.cpu()] = -math.log(num_classes - 1)
    bias = bias.to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=settings.lr)
    bias_decay = (~prior).float()[:, None]
    ones = torch.ones(num_classes, device=device)
    order_gen = torch.Generator(device=device).manual_seed(settings.seed)
    steps = math.ceil(n / settings.batch_size)
    total = settings.epochs * steps
    step = 0
    for _ in range(settings.epochs):
        perm = torch.randperm(n, generator=order_gen, device=device)
        for start in range(0, n, settings.batch_size):
            lr = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = perm[start : start + settings.batch_size]
            xb, yb = x[index], y[index]
            logits = torch.einsum("bd,kcd->bck", xb, weight) + bias.T.unsqueeze(0)  # (B, C, K)
            sample_weight = weights[:, yb].T  # (B, K): each candidate's w_y
            loss = logits.new_zeros(())
            for name, gamma, ix in group_index:
                per = class_balanced_loss(logits[:, :, ix], yb[:, None].expand(-1, len(ix)), ones, loss=name,
                                          gamma=gamma, reduction="none", sample_weight=sample_weight[:, ix])
                denominator = per.new_tensor(float(len(index))) if settings.reduction == "mean" else \
                    sample_weight[:, ix].sum(0).clamp_min(torch.finfo(torch.float32).tiny)
                loss = loss + (per.sum(0) / denominator).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if settings.weight_decay:
                with torch.no_grad():
                    weight.mul_(1.0 - lr * settings.weight_decay)
                    bias.mul_(1.0 - lr * settings.weight_decay * bias_decay)
            step += 1
    scores: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad():
        for name, (features, labels) in eval_sets.items():
            logits = torch.cat([torch.einsum("bd,kcd->bck", chunk, weight) + bias.T.unsqueeze(0)
                                for chunk in features.float().split(4096)])  # (N, C, K)
            scores[name] = {"balanced_accuracy": balanced_accuracy(logits.argmax(1), labels, num_classes).tolist(),
                            "balanced_nll": calibrated_balanced_nll(logits, labels, num_classes).tolist()}
    return scores


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 1024,
                     autocast: bool = False) -> torch.Tensor:
    """``model.forward_features`` of ``images`` in eval mode, without augmentation, as float32 ``(N, D)``."""
    model.eval()
    out = []
    for chunk in images.split(batch_size):
        with torch.autocast(chunk.device.type, dtype=torch.bfloat16, enabled=autocast):
            out.append(model.forward_features(chunk.contiguous(memory_format=torch.channels_last)).float())
    return torch.cat(out)
