"""The one weight mechanism of the library's losses.

Every loss with a per-class weight derives from :class:`WeightedLoss`: its ``weight`` buffer is
always a tensor (all ones when the loss is unweighted), follows ``.to()`` and ``state_dict``, and
changes only through :meth:`WeightedLoss.set_weight`, the method that deferred re-weighting, CDB
and users all call. The new values are copied into the buffer in place, so the weight stays on the
device and in the dtype the loss was moved to (a weight computed on the CPU never meets logits on a
GPU) and a compiled ``forward`` sees the change without a recompile.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checks import as_class_weight, as_real_vector, check_num_classes


def _in_dtype(weight: torch.Tensor, dtype: torch.dtype, name: str = "weight", *, positive: bool = False) -> torch.Tensor:
    """The checked float64 weight in the buffer's dtype, refused if it does not fit (3.4e38 overflows float32;
    with ``positive``, 1e-50 underflows to 0)."""
    cast = weight.to(dtype)
    if not bool(torch.isfinite(cast).all()):
        raise ValueError(f"{name} must be finite in {dtype} (at most {torch.finfo(dtype).max:.3g}); got {weight.tolist()}")
    if positive and not bool((cast > 0).all()):
        raise ValueError(
            f"{name} must be positive in {dtype} (at least {torch.finfo(dtype).tiny:.3g}); got {weight.tolist()}"
        )
    return cast


class WeightedLoss(nn.Module):
    """Base of the weighted losses: the ``weight`` buffer ``(C,)`` and :meth:`set_weight`.

    Args:
        weight: per-class weights ``(C,)``, finite and non-negative; ``None`` for all ones.
        num_classes: ``C``, when ``weight`` is None. A loss built with neither (e.g. ``FocalLoss()``)
            is unweighted and unsized: its buffer is empty until the first :meth:`set_weight` (or a
            loaded state dict) gives it a size.
    """

    weight: torch.Tensor

    def __init__(self, weight: Any = None, num_classes: int | None = None) -> None:
        super().__init__()
        if num_classes is not None:
            num_classes = check_num_classes(num_classes)
        if weight is not None:
            size = num_classes if num_classes is not None else as_real_vector(weight, "weight").numel()
            tensor = as_class_weight(weight, size)
        else:
            tensor = torch.ones(num_classes if num_classes is not None else 0, dtype=torch.float64)
        self.register_buffer("weight", _in_dtype(tensor, torch.float32))

    @property
    def num_classes(self) -> int | None:
        """``C``, or None for an unsized loss (built with neither ``weight`` nor ``num_classes``)."""
        return self.weight.numel() or None

    @torch.no_grad()
    def set_weight(self, weight: Any) -> torch.Tensor:
        """Sets the per-class weight in place, on the buffer's device and in its dtype; ``None`` means all ones.

        Args:
            weight: ``(C,)`` list, array or tensor (any device), finite and non-negative, or None.

        Returns:
            The ``weight`` buffer.
        """
        if weight is None:
            return self.weight.fill_(1.0)
        size = self.num_classes if self.num_classes is not None else as_real_vector(weight, "weight").numel()
        checked = _in_dtype(as_class_weight(weight, size), self.weight.dtype)
        if self.weight.numel() == 0:  # unsized: the first weight decides the size
            self.weight = checked.to(device=self.weight.device)
        else:
            self.weight.copy_(checked)
        return self.weight

    def _smoothing_repr(self) -> str:
        """``", label_smoothing=eps"`` for ``extra_repr`` when the loss smooths its labels, else ``""``."""
        eps = getattr(self, "label_smoothing", 0.0)
        return f", label_smoothing={eps}" if eps else ""

    def class_weight(self) -> torch.Tensor | None:
        """The weight for the functional form: the buffer, or None while the loss is unsized (unweighted)."""
        return self.weight if self.weight.numel() else None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # An unsized loss takes the size of the weight it loads (a re-weighted FocalLoss() resumes into a fresh one).
        saved = state_dict.get(prefix + "weight")
        if self.weight.numel() == 0 and isinstance(saved, torch.Tensor) and saved.numel():
            self.weight = torch.empty(saved.shape, dtype=self.weight.dtype, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


__all__ = ["WeightedLoss"]
