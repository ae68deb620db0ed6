"""The checks of the training configuration's fields, beside it (:mod:`longtail.train.config` declares each field with
one of these).

One vocabulary: every check is ``check(name, value) -> value``, raising ``ValueError`` (bad value) or ``TypeError``
(bad type) with a message ``"<name> must be <what was expected>; got <what was given>"``, as every check of
:mod:`longtail.checks` (whose general checks these compose), and returning the value in its canonical form. A
factory (:func:`real`, :func:`integer`) makes the check of a field with bounds.

>>> check_device_name("device", "cuda:1")
'cuda:1'
>>> real(low=0.0, high=1.0)("beta", 1)
1.0
>>> check_amp("amp", True)  # configurations saved before 0.2 had amp: true / false
'bf16'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..checks import check_batch_per_process, check_choice, check_int, check_real, check_seed, check_tau

Check = Callable[[str, Any], Any]

_DEVICE_NAME = re.compile(r"(auto|cpu|(?:cuda|mps)(?::[0-9]+)?)")
DEVICE_NAMES = "'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index), 'mps' or 'mps:0'"

#: The values of ``amp``.
AMP = ("auto", "bf16", "off")


def real(**bounds: Any) -> Check:
    """The check of a real field with ``bounds`` (those of :func:`longtail.checks.check_real`)."""
    return lambda name, value: check_real(name, value, **bounds)


def integer(low: int | None = None) -> Check:
    """The check of an integer field ``>= low``."""
    return lambda name, value: check_int(name, value, low=low)


#: A finite real >= 0 (learning rates, weight decay, focal gamma, ...), and one in [0, 1] (betas, momenta).
FINITE_NONNEGATIVE = real(low=0.0, finite=True)
UNIT = real(low=0.0, high=1.0)


def check_device_name(name: str, value: Any) -> str:
    """A device name as the trainer takes it: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``mps:N``.

    The syntax only: whether this machine has that device is :func:`longtail.train.device.resolve_device`'s
    question (a configuration saved on a GPU machine must still load on a CPU one). ``torch.device("cuda:abc")``
    raises ``RuntimeError: Invalid device string``; this names the argument and the accepted forms instead.
    """
    if not isinstance(value, str) or _DEVICE_NAME.fullmatch(value) is None:
        raise ValueError(f"{name} must be {DEVICE_NAMES}; got {value!r}")
    return value


def check_run_seed(name: str, value: Any) -> int:
    """A seed of the configuration: 32 bits, as numpy's seeds; the trainer derives each epoch's seed as
    ``seed * 1_000_003 + epoch``, which stays far inside torch's 64-bit seeds."""
    return check_seed(value, name, high=2**32 - 1)


def check_batch_size(name: str, value: Any) -> int:
    """2 samples per process; here the world size is 1 (the trainer checks again under torchrun, where it is
    known, with :func:`longtail.checks.check_batch_per_process`)."""
    return check_batch_per_process(value, 1, name)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return value


def check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string; got {type(value).__name__} {value!r}")
    return value


def check_milestones(name: str, value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of epoch numbers; got {type(value).__name__} {value!r}")
    return [check_int(f"{name}[{i}]", m, low=0) for i, m in enumerate(value)]


def check_class_betas(name: str, value: Any) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{name} must be a non-empty list of per-class betas; got {type(value).__name__} {value!r}")
    return [check_real(f"{name}[{i}]", b, low=0.0, high=1.0) for i, b in enumerate(value)]


def check_amp(name: str, value: Any) -> str:
    if isinstance(value, bool):  # configurations saved before 0.2 had amp: true / false
        return "bf16" if value else "off"
    return check_choice(name, value, AMP)


def check_cdb_tau(name: str, value: Any) -> float | str:
    """CDB's exponent: a positive number or ``"dynamic"``."""
    return check_tau(value, name=name)


def check_la_tau(name: str, value: Any) -> float:
    """Logit adjustment's tau: a number ``>= 0``."""
    return check_tau(value, name=name, allow_dynamic=False, allow_zero=True)  # type: ignore[return-value]


__all__ = [
    "AMP",
    "DEVICE_NAMES",
    "FINITE_NONNEGATIVE",
    "UNIT",
    "Check",
    "check_amp",
    "check_batch_size",
    "check_cdb_tau",
    "check_class_betas",
    "check_device_name",
    "check_flag",
    "check_la_tau",
    "check_milestones",
    "check_run_seed",
    "check_text",
    "integer",
    "real",
]
