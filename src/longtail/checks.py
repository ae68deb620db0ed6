"""Argument checks: the one home of every check in the library, and its one message format.

Every check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) with a message of the form
``"<name> must be <what was expected>; got <what was given>"``, and returns the value in its
canonical form (a Python ``float``/``int``, a float64 tensor, ...), so callers write
``self.gamma = check_gamma(gamma)`` and never check twice. Checks that must look at tensor *values*
(labels in range, counts non-negative) are data-dependent; the loss functions skip those while
``torch.compile`` is tracing so that ``forward`` compiles without graph breaks, and inside
:func:`value_checks` ``(False)``, where a caller that validated its data once (the trainer) steps without the one
host synchronisation a call that they cost.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .loss_families import FOCAL_LOSSES, SIGMOID_LOSSES, SOFTMAX_LOSSES

REDUCTIONS = ("mean", "weighted_mean", "sum", "none")


def is_compiling() -> bool:
    """True while torch.compile / dynamo traces the caller (data-dependent checks are skipped)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())  # torch < 2.3


_VALUE_CHECKS = threading.local()


def value_checks_enabled() -> bool:
    """Whether the losses check tensor values in this thread (see :func:`value_checks`; on by default)."""
    return getattr(_VALUE_CHECKS, "enabled", True)


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turns the losses' data-dependent checks on or off in this thread, for the ``with`` block.

    Those checks (labels in ``[0, C)`` or ``ignore_index``, weights finite and non-negative, soft targets in
    ``[0, 1]``) cost one host synchronisation a call: on CUDA the CPU waits for the GPU every step and can no
    longer queue the next step's kernels ahead. A caller whose labels and weights were checked once may turn them
    off; bad values then give a wrong loss or an indexing error instead of a ``ValueError``. The trainer checks
    the first batch of every epoch (after the epoch's weight updates) and runs the others without.

    Example:
        >>> import torch
        >>> from longtail.functional import class_balanced_loss
        >>> logits, weight = torch.zeros(2, 3), torch.tensor([1.0, -1.0, 1.0])
        >>> class_balanced_loss(logits, torch.tensor([0, 2]), weight)
        Traceback (most recent call last):
        ...
        ValueError: weight must be finite and non-negative; got [1.0, -1.0, 1.0] (bad classes [1])
        >>> with value_checks(False):  # checked once elsewhere: no sync, and no check
        ...     class_balanced_loss(logits, torch.tensor([0, 2]), weight.abs())
        tensor(1.0986)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool; got {type(enabled).__name__}")
    before = value_checks_enabled()
    _VALUE_CHECKS.enabled = enabled
    try:
        yield
    finally:
        _VALUE_CHECKS.enabled = before


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    finite: bool = False,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A real number as a Python float (bools, NaN and out-of-range values rejected).

    ``low``/``high`` bound it (inclusive, or exclusive with ``low_open``/``high_open``); ``finite``
    rejects infinities. While torch.compile traces, a float hyperparameter may arrive as a symbolic
    value on recompiles; it was checked when the module was built, so it is passed through.
    """
    if is_compiling():
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a number; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number; got NaN")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}; got {value!r}")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


def check_int(name: str, value: Any, *, low: int | None = None) -> int:
    """An integer (Python or numpy; bools and floats rejected) as a Python int, ``>= low`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value}")
    return value


def check_num_classes(value: Any) -> int:
    return check_int("num_classes", value, low=1)


def check_ignore_index(value: Any) -> int:
    return check_int("ignore_index", value)


DYNAMIC = "dynamic"


def check_tau(value: Any, *, name: str = "tau", allow_dynamic: bool = True, allow_zero: bool = False) -> float | str:
    """The one ``tau`` parser: a finite number (``> 0``, or ``>= 0`` with ``allow_zero``) or ``"dynamic"``.

    Strings are parsed too (``"1.5"`` -> 1.5), so the command line uses the same check. ``"dynamic"``
    is refused where it has no meaning (``allow_dynamic=False``) instead of being replaced silently.
    """
    expected = (f"a {'non-negative' if allow_zero else 'positive'} finite number"
                + (" or 'dynamic'" if allow_dynamic else ""))
    if isinstance(value, str):
        if value == DYNAMIC:
            if allow_dynamic:
                return value
            raise ValueError(f"{name} must be {expected} ('dynamic' is CDB's tau); got 'dynamic'")
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be {expected}; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r}")
    number = check_real(name, value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {expected}; got {number!r}")
    return number


def check_max_ratio(max_ratio: Any, name: str = "max_ratio") -> float | None:
    """A bound ``R >= 1`` on a weight vector's largest / smallest ratio, or None for no bound."""
    return None if max_ratio is None else check_real(name, max_ratio, low=1.0)


def check_momentum(momentum: Any, name: str = "momentum") -> float:
    """An exponential-moving-average step in (0, 1] (1: take each new value in full)."""
    return check_real(name, momentum, low=0.0, high=1.0, low_open=True)


def check_beta(beta: Any) -> float:
    return check_real("beta", beta, low=0.0, high=1.0)


def check_gamma(gamma: Any) -> float:
    return check_real("gamma", gamma, low=0.0, finite=True)


def as_real_vector(values: Any, name: str) -> torch.Tensor:
    """A 1-D, non-empty list / numpy array / tensor of real numbers as a float64 CPU tensor (NaN, inf kept)."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach().to(device="cpu")
    elif isinstance(values, (np.ndarray, Sequence)) and not isinstance(values, (str, bytes)):
        try:
            array = np.asarray(values)
        except (TypeError, ValueError) as exc:  # ragged nested sequences
            raise TypeError(f"{name} must be a 1-D sequence of numbers; got {values!r}") from exc
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers; got an array of dtype {array.dtype}")
        tensor = torch.from_numpy(array)
    else:
        raise TypeError(f"{name} must be a list, numpy array or tensor; got {type(values).__name__}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers; got dtype {tensor.dtype}")
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one value per class); got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} must have at least one class; got an empty {name}")
    return tensor.to(torch.float64)


def as_counts(counts: Any, name: str = "counts") -> torch.Tensor:
    """Per-class counts (list, numpy array or tensor) as a 1-D float64 CPU tensor, validated."""
    tensor = as_real_vector(counts, name)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite; got {tensor.tolist()}")
    if (tensor < 0).any():
        bad = torch.nonzero(tensor < 0).flatten().tolist()
        raise ValueError(f"{name} must be non-negative; got negative counts for classes {bad}")
    return tensor


def as_class_weight(weight: Any, num_classes: int, name: str = "weight") -> torch.Tensor | None:
    """An optional per-class weight given at construction: ``(C,)`` float64, finite and non-negative."""
    if weight is None:
        return None
    tensor = as_real_vector(weight, name)
    if tensor.numel() != num_classes:
        raise ValueError(f"{name} must have shape ({num_classes},), one value per class; got {tuple(tensor.shape)}")
    if not bool((torch.isfinite(tensor) & (tensor >= 0)).all()):
        raise ValueError(f"{name} must be finite and non-negative; got {tensor.tolist()}")
    return tensor


def check_logits(input: Any) -> torch.Tensor:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a tensor of logits; got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor of logits; got dtype {input.dtype}")
    if input.dim() < 2:
        raise ValueError(
            f"input must have shape (N, C) or (N, C, d1, ...); got shape {tuple(input.shape)}"
        )
    if input.shape[1] < 1:
        raise ValueError(f"input must have at least one class (C >= 1); got shape {tuple(input.shape)}")
    return input


def check_target(input: torch.Tensor, target: Any) -> bool:
    """Validates the target's type and shape; returns True for class-index targets, False for float ones.

    An integer target of the input's own shape cannot hold class indices (those have no class dimension): it is a
    0/1 multi-hot (or one-hot) target, read like a float one (``False``); its values must lie in [0, 1].
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a tensor; got {type(target).__name__}")
    if target.device != input.device:
        raise ValueError(f"target must be on the input's device {input.device}; got {target.device}")
    if target.dtype == torch.bool or target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                "a float (probability or multi-hot) target must have the input's shape "
                f"{tuple(input.shape)}; got {tuple(target.shape)}"
            )
        return False
    if target.is_complex():
        raise TypeError(f"target must hold class indices (integer) or probabilities (float); got {target.dtype}")
    if target.shape == input.shape:  # integer multi-hot rows, e.g. (N, C) of 0 and 1
        return False
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"a class-index target for input of shape {tuple(input.shape)} must have shape {expected} (or, for "
            f"multi-hot or probability targets, the input's shape); got {tuple(target.shape)}"
        )
    return True


def check_label_values(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Labels must lie in [0, C) or equal ignore_index (data-dependent: eager mode only)."""
    if is_compiling() or target.numel() == 0:
        return
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(
            f"target labels must be in [0, {num_classes - 1}] or equal ignore_index={ignore_index}; "
            f"got label {value}"
        )


def check_target_values(target: torch.Tensor) -> None:
    """Float targets are probabilities or multi-hot labels: values in [0, 1] (eager mode only)."""
    if is_compiling() or target.numel() == 0:
        return
    low, high = torch.aminmax(target.detach().float())
    if not (bool(low >= 0) and bool(high <= 1)):
        raise ValueError(
            f"float targets must hold probabilities in [0, 1]; got values in [{float(low):g}, {float(high):g}]"
        )


def check_class_weight(weight: Any, num_classes: int, device: torch.device, name: str = "weight") -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape ({num_classes},); got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {weight.dtype}")
    if weight.shape != (num_classes,):
        raise ValueError(f"{name} must have shape ({num_classes},), one value per class; got {tuple(weight.shape)}")
    if weight.device != device:
        raise ValueError(f"{name} must be on the input's device {device}; got {weight.device}")
    return weight


def check_index_target(target: Any, loss: str) -> None:
    """Margin losses need the true class: float (soft / one-hot) and bool targets are refused."""
    if isinstance(target, torch.Tensor) and (target.is_floating_point() or target.dtype == torch.bool):
        raise TypeError(
            f"{loss} needs class-index targets (an integer tensor), because the margin is subtracted from the "
            f"true class's logit; got a target of dtype {target.dtype}"
        )


def check_finite_per_class(name: str, values: torch.Tensor, *, non_negative: bool = False) -> None:
    """Per-class tensors must be finite (and >= 0 where asked); data-dependent, so eager mode only."""
    if is_compiling():
        return
    ok = torch.isfinite(values)
    if non_negative:
        ok = ok & (values >= 0)
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten().tolist()
        kind = "finite and non-negative" if non_negative else "finite"
        raise ValueError(f"{name} must be {kind}; got {values.detach().cpu().tolist()} (bad classes {bad})")


# --- counting, metrics and CDB accuracies ---------------------------------------------------------


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """A tensor (detached, not copied), numpy array or (nested) list / tuple of numbers as a tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (np.ndarray, list, tuple)):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:  # ragged nested sequences
            raise TypeError(
                f"{name} must be a tensor, numpy array or list of numbers; got a {type(value).__name__} "
                f"numpy cannot convert ({exc})"
            ) from exc
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers; got an array of dtype {array.dtype}")
        return torch.as_tensor(array)
    raise TypeError(f"{name} must be a tensor, numpy array or list; got {type(value).__name__}")


def check_label_range(
    targets: torch.Tensor, num_classes: int, ignore_index: int | None = None, *, preds: torch.Tensor | None = None
) -> None:
    """Target labels in [0, C) (or equal to ``ignore_index`` unless it is None) and, when given, predicted
    labels ``preds`` (the targets' shape and device) in [0, C); one host sync for both (eager mode only)."""
    if is_compiling() or targets.numel() == 0:
        return
    bad_target = (targets < 0) | (targets >= num_classes)
    if ignore_index is not None:
        bad_target = bad_target & (targets != ignore_index)
    bad = bad_target
    if preds is not None:
        bad_pred = (preds < 0) | (preds >= num_classes)
        bad = bad | bad_pred
    if not bool(bad.any()):
        return
    # The error path only: find which of the two is out of range.
    if ignore_index is not None:
        check_label_values(targets, num_classes, ignore_index)
    elif bool(bad_target.any()):
        raise ValueError(f"target labels must be in [0, {num_classes - 1}]; got label {int(targets[bad_target][0])}")
    assert preds is not None
    raise ValueError(f"predicted labels must be in [0, {num_classes - 1}]; got label {int(preds[bad_pred][0])}")


def check_k(value: Any, num_classes: int, name: str = "k") -> int:
    """A top-k ``k``: an integer in ``[1, num_classes]``."""
    k = check_int(name, value)
    if not 1 <= k <= num_classes:
        raise ValueError(f"{name} must be an integer in [1, {num_classes}] (k <= num_classes); got {k}")
    return k


def check_top_k(top_k: Any, num_classes: int) -> tuple[int, ...]:
    """Values of k for top-k accuracy (a sequence, possibly empty) as a tuple of ints in ``[1, num_classes]``."""
    if isinstance(top_k, (str, bytes, torch.Tensor)) or not hasattr(top_k, "__iter__"):
        raise TypeError(f"top_k must be a sequence of integers (values of k); got {type(top_k).__name__} {top_k!r}")
    return tuple(check_k(k, num_classes, name=f"top_k[{i}]") for i, k in enumerate(top_k))


def check_shot_thresholds(many_threshold: Any, few_threshold: Any) -> tuple[float, float]:
    """Shot-group thresholds: real numbers with ``few_threshold <= many_threshold``."""
    many = check_real("many_threshold", many_threshold)
    few = check_real("few_threshold", few_threshold)
    if few > many:
        raise ValueError(
            f"few_threshold must be <= many_threshold={many_threshold!r}; got few_threshold={few_threshold!r}"
        )
    return many, few


def as_train_counts(counts: Any, num_classes: int | None = None, name: str = "train_counts") -> torch.Tensor:
    """Training samples per class (list, numpy array or tensor) as a 1-D int64 CPU tensor of whole,
    non-negative numbers; of shape ``(num_classes,)`` when given."""
    tensor = as_real_vector(counts, name)
    if num_classes is not None and tensor.numel() != num_classes:
        raise ValueError(f"{name} must have shape ({num_classes},), one count per class; got {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite; got {tensor.tolist()}")
    fractional = tensor != tensor.round()
    if bool(fractional.any()):
        index = int(torch.nonzero(fractional)[0])
        raise TypeError(f"{name} must hold whole numbers (counts); got {float(tensor[index])!r} for class {index}")
    if bool((tensor < 0).any()):
        index = int(torch.nonzero(tensor < 0)[0])
        raise ValueError(f"{name} must be non-negative; got {int(tensor[index])} for class {index}")
    return tensor.to(torch.int64)


def as_confusion_matrix(value: Any, name: str = "confusion") -> torch.Tensor:
    """A ``(C, C)`` confusion matrix of non-negative integer counts (C >= 1) as an int64 CPU tensor."""
    matrix = as_tensor(value, name)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{name} must be a square (C, C) matrix with C >= 1; got shape {tuple(matrix.shape)}")
    if matrix.is_floating_point() or matrix.is_complex() or matrix.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer counts; got dtype {matrix.dtype}")
    matrix = matrix.to(device="cpu", dtype=torch.int64)
    if bool((matrix < 0).any()):
        raise ValueError(f"{name} must be non-negative counts; got minimum {int(matrix.min())}")
    return matrix


def as_class_accuracy(values: Any, *, allow_missing: bool, num_classes: int | None = None) -> torch.Tensor:
    """Per-class accuracies in [0, 1] as float64 ``(C,)`` on the CPU; NaN marks a class with no validation
    sample (allowed with ``allow_missing``; at least one class must be measured)."""
    acc = as_real_vector(values, "class_accuracy")
    if num_classes is not None and acc.numel() != num_classes:
        raise ValueError(f"class_accuracy must have {num_classes} values, one per class; got {acc.numel()}")
    measured = ~torch.isnan(acc)
    out_of_range = measured & ((acc < 0) | (acc > 1))
    if bool(out_of_range.any()):
        index = int(torch.nonzero(out_of_range)[0])
        raise ValueError(
            f"class_accuracy must be in [0, 1] for every class; got {float(acc[index])!r} for class {index}"
        )
    if not bool(measured.any()):
        raise ValueError(
            "class_accuracy must have at least one measured class; got NaN for every class "
            "(was the ClassDifficulty / ConfusionMeter updated with any validation batch?)"
        )
    if not allow_missing and not bool(measured.all()):
        missing = torch.nonzero(~measured).flatten().tolist()
        raise ValueError(
            f"class_accuracy must be a number for every class; got NaN for classes {missing} (a class "
            "absent from the validation data has no accuracy: pass previous=<current weights> to keep "
            "its weight)"
        )
    return acc


# --- scalars that depend on the loss family, seeds --------------------------------------------------


def check_focal_gamma(gamma: Any, loss: str, focal_losses: Sequence[str] = FOCAL_LOSSES) -> float:
    """``gamma`` (as :func:`check_gamma`) for ``loss``: a non-zero gamma is refused for a loss that has no
    focal term (it would be silently ignored), e.g. ``loss="softmax"`` or ``"sigmoid"``."""
    gamma = check_gamma(gamma)
    if gamma != 0.0 and loss not in focal_losses:
        allowed = " or ".join(map(repr, focal_losses))
        raise ValueError(f"gamma is used only with loss={allowed}; got gamma={gamma} with loss={loss!r}")
    return gamma


#: Largest seed accepted: ``torch.Generator.manual_seed`` takes a 64-bit value, so 2**63 - 1 keeps it
#: valid for signed 64-bit consumers (numpy, ``random``, the trainer's per-worker offsets) as well.
MAX_SEED = 2**63 - 1


def check_seed(value: Any, name: str = "seed", *, high: int = MAX_SEED) -> int:
    """A random seed: an integer in ``[0, high]`` (default ``2**63 - 1``) as a Python int.

    ``torch.Generator().manual_seed(2**70)`` raises ``ValueError: Overflow when unpacking long long``;
    this check says which argument and which range instead. A caller that derives further seeds from
    it (``seed * k + epoch``) passes the smaller ``high`` that keeps those in range too.
    """
    seed = check_int(name, value)
    if not 0 <= seed <= high:
        bound = "2**63 - 1" if high == MAX_SEED else str(high)
        raise ValueError(f"{name} must be an integer in [0, {bound}]; got {seed}")
    return seed


# --- the training harness: batch per process, output folder ------------------------------------------------
# (The training configuration's field checks, device names included, are beside it: longtail.train.checks.)


def check_batch_per_process(batch_size: Any, world_size: int, name: str = "batch_size") -> int:
    """A global batch that gives each of ``world_size`` processes at least 2 samples (BatchNorm needs two).

    A smaller batch trains zero steps (every batch is skipped) and would report a loss of 0.
    """
    batch_size = check_int(name, batch_size, low=1)
    need = 2 * world_size
    if batch_size < need:
        processes = "1 process" if world_size == 1 else f"{world_size} processes"
        raise ValueError(
            f"{name} must be >= 2 x the world size = {need} (2 samples for each of {processes}: BatchNorm needs "
            f"two); got {batch_size}"
        )
    return batch_size


def check_output_folder(path: Any, name: str = "out_dir") -> Path:
    """A folder for a run's files: an existing folder, or a path where one can be created.

    Refuses an existing file at ``path`` or at one of its parents (``mkdir`` would fail there with
    ``[Errno 17] File exists`` / ``[Errno 20] Not a directory``) before any work is done.
    """
    folder = Path(path)
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                given = "an existing file" if candidate == folder else f"inside the file {str(candidate)!r}"
                raise ValueError(f"{name} must be a folder or a path to create one at; got {str(folder)!r}, {given}")
            break
    return folder


def check_registration(registry: Mapping[str, Any], kind: str, name: Any, spec: Any, spec_type: type,
                       replace: bool) -> str:
    """A new entry ``name -> spec`` of a registry of ``kind`` (``"loss"``, ``"dataset"``, ``"model"``): an
    identifier-like name (it is a command-line value and part of run folder names), a spec of the registry's
    ``spec_type``, and no silent replacement of a registered name (``replace=True`` asks for one)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string; got {name!r}")
    if not isinstance(spec, spec_type):
        raise TypeError(f"spec must be a {spec_type.__name__}; got {type(spec).__name__}")
    if name in registry and not replace:
        raise ValueError(f"{kind} {name!r} is already registered; pass replace=True to replace it")
    return name


# --- the losses' options: label smoothing, per-sample weights, pos_weight ----------------------------------


def check_label_smoothing(value: Any, loss: str | None = None, softmax_losses: Sequence[str] = SOFTMAX_LOSSES) -> float:
    """``label_smoothing`` as a Python float in ``[0, 1)``; a non-zero value is refused for ``loss`` when that is
    not a softmax loss (label smoothing is defined here for the softmax losses only)."""
    eps = check_real("label_smoothing", value, low=0.0, high=1.0, high_open=True)
    if loss is not None and loss not in softmax_losses and not is_compiling() and eps != 0.0:
        allowed = " or ".join(map(repr, softmax_losses))
        raise ValueError(
            f"label_smoothing must be 0 with loss={loss!r} (label smoothing is defined here for the softmax losses, "
            f"loss={allowed}); got label_smoothing={eps}"
        )
    return eps


def check_pos_weight_loss(pos_weight: Any, loss: str, sigmoid_losses: Sequence[str] = SIGMOID_LOSSES) -> None:
    """``pos_weight`` weighs the positive term of the one-vs-all (sigmoid) losses: refused for any other ``loss``."""
    if pos_weight is not None and loss not in sigmoid_losses:
        allowed = " or ".join(map(repr, sigmoid_losses))
        raise ValueError(
            f"pos_weight must be None with loss={loss!r} (pos_weight multiplies the positive term of the one-vs-all "
            f"sigmoid losses, loss={allowed}); got a pos_weight"
        )


def as_pos_weight(pos_weight: Any, num_classes: int | None = None) -> torch.Tensor | None:
    """An optional ``pos_weight`` given at construction: ``(C,)`` float64 on the CPU, finite and positive
    (any length while ``num_classes`` is None)."""
    if pos_weight is None:
        return None
    tensor = as_real_vector(pos_weight, "pos_weight")
    if num_classes is not None and tensor.numel() != num_classes:
        raise ValueError(
            f"pos_weight must have shape ({num_classes},), one value per class; got {tuple(tensor.shape)}"
        )
    bad = ~(torch.isfinite(tensor) & (tensor > 0))
    if bool(bad.any()):
        raise ValueError(
            f"pos_weight must be finite and positive; got {tensor.tolist()} (bad classes "
            f"{torch.nonzero(bad).flatten().tolist()})"
        )
    return tensor


def check_pos_weight(pos_weight: Any, num_classes: int, device: torch.device) -> torch.Tensor:
    """``pos_weight`` for a functional form: a float tensor ``(C,)`` on the input's device, or a list / tuple /
    numpy array (converted to a tensor on that device). Its values are checked with the other weights
    (:func:`pos_weight_values_ok`, one host sync per call)."""
    if isinstance(pos_weight, torch.Tensor):
        return check_class_weight(pos_weight, num_classes, device, name="pos_weight")
    if isinstance(pos_weight, (np.ndarray, Sequence)) and not isinstance(pos_weight, (str, bytes)):
        tensor = as_real_vector(pos_weight, "pos_weight")
        if tensor.numel() != num_classes:
            raise ValueError(
                f"pos_weight must have shape ({num_classes},), one value per class; got {tuple(tensor.shape)}"
            )
        return tensor.to(device=device)
    raise TypeError(
        f"pos_weight must be a tensor, list or numpy array of shape ({num_classes},); got {type(pos_weight).__name__}"
    )


def pos_weight_values_ok(pos_weight: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor: every ``pos_weight`` finite and positive (no host sync)."""
    return (torch.isfinite(pos_weight) & (pos_weight > 0)).all()


def check_pos_weight_values(pos_weight: torch.Tensor) -> None:
    """``pos_weight`` finite and positive (eager mode only; the error path of the merged value check)."""
    if is_compiling() or bool(pos_weight_values_ok(pos_weight)):
        return
    bad = torch.nonzero(~(torch.isfinite(pos_weight) & (pos_weight > 0))).flatten().tolist()
    raise ValueError(
        f"pos_weight must be finite and positive; got {pos_weight.detach().cpu().tolist()} (bad classes {bad})"
    )


def check_sample_weight(sample_weight: Any, input: torch.Tensor) -> torch.Tensor:
    """Per-sample weights: a floating-point tensor of the per-sample shape ``(N,)`` / ``(N, d1, ...)`` (the shape
    of a class-index target) on the input's device. Its values are checked with the other weights
    (:func:`sample_weight_values_ok`, one host sync per call)."""
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if not isinstance(sample_weight, torch.Tensor):
        raise TypeError(
            f"sample_weight must be a floating-point tensor of shape {expected} (one weight per sample); "
            f"got {type(sample_weight).__name__}"
        )
    if not sample_weight.is_floating_point():
        raise TypeError(f"sample_weight must be a floating-point tensor; got dtype {sample_weight.dtype}")
    if tuple(sample_weight.shape) != expected:
        raise ValueError(
            f"sample_weight must have shape {expected}, one weight per sample, for input of shape "
            f"{tuple(input.shape)}; got {tuple(sample_weight.shape)}"
        )
    if sample_weight.device != input.device:
        raise ValueError(f"sample_weight must be on the input's device {input.device}; got {sample_weight.device}")
    return sample_weight


def sample_weight_values_ok(sample_weight: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor: every per-sample weight finite and non-negative (no host sync)."""
    return (torch.isfinite(sample_weight) & (sample_weight >= 0)).all()


def check_sample_weight_values(sample_weight: torch.Tensor) -> None:
    """Per-sample weights finite and non-negative (eager mode only; the error path of the merged value check)."""
    if is_compiling() or sample_weight.numel() == 0 or bool(sample_weight_values_ok(sample_weight)):
        return
    flat = sample_weight.detach().reshape(-1)
    index = int(torch.nonzero(~(torch.isfinite(flat) & (flat >= 0)))[0])
    position = tuple(int(i) for i in np.unravel_index(index, tuple(sample_weight.shape)))
    where = position[0] if len(position) == 1 else position
    raise ValueError(f"sample_weight must be finite and non-negative; got {float(flat[index])!r} at sample {where}")
