r"""Per-class counting kernels: the confusion matrix of a batch, top-k hits, and the one collective.

:func:`confusion_counts` turns a batch into a ``(C, C)`` int64 confusion matrix (rows = true class,
columns = predicted class); :func:`top_k_counts` counts top-k hits; :func:`all_reduce_sum` sums
counts over processes under data parallelism. The streaming counter built on them,
:class:`longtail.metrics.ConfusionMeter`, is the one counter of the metrics, the trainer and the
CDB loss (:class:`longtail.cdb.ClassDifficulty` is a ``ConfusionMeter``).

Shapes:
    ``targets``: integer class indices ``(N,)`` or ``(N, d1, ...)`` (e.g. one label per pixel);
    positions whose target equals ``ignore_index`` are not counted at all.

    ``preds``: either scores (logits or probabilities) ``(N, C)`` / ``(N, C, d1, ...)``, whose
    argmax over dim 1 is the predicted class (ties go to whatever :func:`torch.argmax` picks), or
    integer predicted labels with the targets' shape. The number of dimensions tells them apart.
    Top-k hits need scores.

    NumPy arrays and lists are converted with :func:`torch.as_tensor`. ``preds`` may be on another
    device than ``targets``; the counts are made on the targets' device, without boolean indexing
    and with one host sync per batch: the check that the labels are in range (skipped while
    ``torch.compile`` traces).

Example:
    >>> confusion_counts(torch.tensor([[1, 1], [0, 0]]), torch.tensor([[0, 1], [1, 255]]), 2, ignore_index=255)
    tensor([[0, 1],
            [1, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from .checks import (
    as_tensor,
    check_ignore_index,
    check_label_range,
    check_num_classes,
    check_top_k,
)

__all__ = ["all_reduce_sum", "confusion_counts", "top_k_counts"]


# --- the per-batch kernels -----------------------------------------------------------------------


def _as_targets(targets: Any) -> torch.Tensor:
    t = as_tensor(targets, "targets")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class indices; got dtype {t.dtype}")
    if t.dim() < 1:
        raise ValueError("targets must have shape (N,) or (N, d1, ...); got a 0-d tensor")
    return t


def _as_preds(preds: Any, targets: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, bool]:
    """``preds`` as a tensor, and True for scores (one more dimension than the targets), False for labels."""
    p = as_tensor(preds, "preds")
    if p.is_complex() or p.dtype == torch.bool:
        raise TypeError(f"preds must be real scores or integer predicted labels; got dtype {p.dtype}")
    scores_shape = (targets.shape[0], num_classes) + tuple(targets.shape[1:])
    if p.dim() == targets.dim() + 1:
        if tuple(p.shape) != scores_shape:
            raise ValueError(
                f"scores for targets of shape {tuple(targets.shape)} must have shape {scores_shape}; "
                f"got {tuple(p.shape)}"
            )
        return p, True
    if tuple(p.shape) != tuple(targets.shape):
        raise ValueError(
            f"preds must be scores of shape {scores_shape} or predicted labels of the targets' shape "
            f"{tuple(targets.shape)}; got {tuple(p.shape)}"
        )
    if p.is_floating_point():
        raise TypeError(
            f"predicted labels must be integers; got dtype {p.dtype} (scores must have shape {scores_shape})"
        )
    return p, False


def _check_ignore(ignore_index: Any) -> int | None:
    return None if ignore_index is None else check_ignore_index(ignore_index)


def confusion_counts(preds: Any, targets: Any, num_classes: int, ignore_index: int | None = -100) -> torch.Tensor:
    """The confusion matrix of one batch.

    Args:
        preds: scores ``(N, C)`` / ``(N, C, d1, ...)`` (argmax over dim 1) or integer predicted
            labels with the targets' shape, values in ``[0, C)``.
        targets: integer class indices ``(N,)`` / ``(N, d1, ...)`` in ``[0, C)`` or equal to
            ``ignore_index``.
        num_classes: ``C``.
        ignore_index: target value whose positions are not counted; ``None`` counts every position
            (then every target must be a class index).

    Returns:
        ``(C, C)`` int64 tensor on the targets' device; ``[i, j]`` = number of positions of true
        class ``i`` predicted as ``j``.
    """
    c = check_num_classes(num_classes)
    ignore = _check_ignore(ignore_index)
    t = _as_targets(targets)
    p, is_scores = _as_preds(preds, t, c)
    t = t.long()
    if is_scores:
        labels = p.argmax(1).to(t.device)
        check_label_range(t, c, ignore)
    else:
        labels = p.to(device=t.device, dtype=torch.int64)
        check_label_range(t, c, ignore, preds=labels)
    return _confusion(labels, t, c, ignore)


def _confusion(labels: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore: int | None) -> torch.Tensor:
    target = targets.reshape(-1)
    cell = target * num_classes + labels.reshape(-1)
    if ignore is None:
        index, count = cell, torch.ones_like(cell)
    else:
        # Ignored positions go to cell 0 with a count of 0: no boolean indexing, so no host sync.
        valid = target != ignore
        index, count = torch.where(valid, cell, torch.zeros_like(cell)), valid.long()
    zeros = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=target.device)
    return zeros.index_add_(0, index, count).view(num_classes, num_classes)


def top_k_counts(scores: Any, targets: Any, top_k: Sequence[int], ignore_index: int | None = -100) -> torch.Tensor:
    """Top-k hits of one batch: for each ``k`` in ``top_k``, the number of counted positions whose
    target is among the ``k`` highest scores (ties at the k-th score broken by :func:`torch.topk`).

    Args:
        scores: ``(N, C)`` / ``(N, C, d1, ...)``; labels are refused (top-k needs a ranking).
        targets: integer class indices ``(N,)`` / ``(N, d1, ...)``.
        top_k: values of ``k`` in ``[1, C]``.
        ignore_index: as in :func:`confusion_counts`.

    Returns:
        ``(len(top_k),)`` int64 tensor on the targets' device.
    """
    ignore = _check_ignore(ignore_index)
    t = _as_targets(targets)
    s = as_tensor(scores, "scores")
    if s.dim() != t.dim() + 1:
        raise ValueError(
            f"scores must have shape (N, C) or (N, C, d1, ...), a class dimension more than the targets of "
            f"shape {tuple(t.shape)}; got {tuple(s.shape)}"
        )
    if s.shape[1] < 1:
        raise ValueError(f"scores must have at least one class (C >= 1); got shape {tuple(s.shape)}")
    c = s.shape[1]
    s, _ = _as_preds(s, t, c)
    ks = check_top_k(top_k, c)
    t = t.long()
    check_label_range(t, c, ignore)
    return _top_k_hits(s, t, ks, ignore)


def _top_k_hits(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...], ignore: int | None) -> torch.Tensor:
    if not ks:
        return torch.zeros(0, dtype=torch.int64, device=targets.device)
    top = scores.topk(max(ks), dim=1).indices  # (N, kmax, d1, ...), best first
    target = targets.to(top.device)
    within = (top == target.unsqueeze(1)).cumsum(1)  # within[:, k - 1] = 1 iff the target is in the top k
    if ignore is not None:
        within = within * (target != ignore).unsqueeze(1)
    return torch.stack([within[:, k - 1].sum() for k in ks]).to(targets.device)


# --- the collective ------------------------------------------------------------------------------


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Sums ``tensor`` in place over the processes of ``group`` and returns it.

    A collective: every process of ``group`` must call it. NCCL reduces only CUDA tensors, so a
    CPU tensor under the NCCL backend travels through ``torch.cuda.current_device()`` and back.
    Without ``torch.distributed`` (not available, or no process group initialised) it is a no-op
    returning ``tensor``.
    """
    if not _distributed():
        return tensor
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    if work.device.type == "cpu" and dist.get_backend(group) == "nccl":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
    if work is not tensor:
        tensor.copy_(work)
    return tensor
