"""Where a run executes: the device, the process group under torchrun, and the precision of the forward pass."""

from __future__ import annotations

import functools
import os
import platform

import torch

from .checks import check_device_name


def distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Initialises the process group under ``torchrun`` (``WORLD_SIZE > 1``); nccl on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _devices_here() -> str:
    """The device names this machine accepts, for messages."""
    names = ["'auto'", "'cpu'"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["'cuda'", "'cuda:0'" if count == 1 else f"'cuda:0' .. 'cuda:{count - 1}'"]
    if _mps_available():
        names.append("'mps'")
    return ", ".join(names[:-1]) + " or " + names[-1]


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) on this machine.

    ``auto`` is this process's GPU (``LOCAL_RANK`` under torchrun) when there is one, else the CPU.
    Raises ``ValueError`` (one line, naming what this machine has) for a malformed name or a device
    this torch build or machine lacks.
    """
    name = check_device_name("device", name)
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device must be {_devices_here()} here (this torch build or machine has no CUDA); "
                             f"got {name!r}")
        index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise ValueError(f"device must be {_devices_here()} here (this machine has {torch.cuda.device_count()} "
                             f"GPUs); got {name!r}" + ("" if device.index is not None else f" on LOCAL_RANK {index}"))
        device = torch.device("cuda", index)
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"device must be {_devices_here()} here (this torch build or machine has no MPS); "
                         f"got {name!r}")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """AVX512-BF16 or AMX-BF16: oneDNN then runs bfloat16 convolutions and matmuls in hardware."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except RuntimeError:  # pragma: no cover - a build without these probes
        return False


@functools.cache  # read once a process: result.json is rewritten at every checkpoint
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware(device: torch.device) -> dict[str, object]:
    """What ran a run, as ``result.json`` records it: the CPU, the vector instructions torch dispatches to, whether
    it has native bfloat16, and the GPU's name on CUDA.

    A seeded run repeats exactly on the same kind of hardware only: measured, an AMD EPYC with AVX512-BF16
    retraining an Intel AMX run in bfloat16 moved CE's test accuracy by up to 0.7 point. :func:`same_hardware`
    compares two of these records."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bfloat16": cpu_has_native_bfloat16(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def same_hardware(a: dict[str, object], b: dict[str, object]) -> bool:
    """Whether two :func:`hardware` records name the same kind of machine (every field agrees; a GPU in one only is
    another machine)."""
    return all(a.get(key) == b.get(key) for key in a.keys() | b.keys())


def describe_hardware(record: dict[str, object]) -> str:
    """A :func:`hardware` record in words, e.g. ``"AMD EPYC (AVX2, no native bfloat16)"``."""
    bf16 = "native bfloat16" if record.get("native_bfloat16") else "no native bfloat16"
    gpu = f", {record['gpu']}" if record.get("gpu") else ""
    return f"{record.get('cpu', '?')} ({record.get('cpu_capability', '?')}, {bf16}{gpu})"


def autocast_enabled(amp: str, device: torch.device) -> bool:
    """Whether ``amp`` (``"auto"``, ``"bf16"`` or ``"off"``) turns on bfloat16 autocast on ``device``.

    ``"auto"``: on CUDA, and on CPUs with native bfloat16 (measured here, AMX-BF16: the width-16 CNN
    trains 1.47x faster at the same accuracy); float32 elsewhere, where emulated bfloat16 is slower.
    """
    if amp == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
    return amp == "bf16"


__all__ = ["autocast_enabled", "cpu_has_native_bfloat16", "cpu_model", "describe_hardware", "distributed", "hardware",
           "init_distributed", "resolve_device", "same_hardware", "synchronize"]
