"""CIFAR-10 / CIFAR-100 from the standard "python version" folders, read with a restricted unpickler.

The official archives are Python pickles, and ``pickle.load`` on an untrusted file runs arbitrary code. These
files only ever need numpy's array-reconstruction machinery (plus, for Python 3 pickles written with protocols 0-2,
a latin-1 ``_codecs.encode`` for ``bytes``), so :class:`RestrictedUnpickler` resolves exactly
those globals and refuses every other one (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) with
``pickle.UnpicklingError`` before anything is called.

Folder layouts (as extracted from the archives at https://www.cs.toronto.edu/~kriz/cifar.html):

* ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``.
* ``cifar-100-python/``: ``train``, ``test``, ``meta``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch

from ..checks import check_choice
from .datasets import DATA_ENV, LabelledImages

__all__ = ["RestrictedUnpickler", "load_cifar10", "load_cifar100", "restricted_load"]


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 pickles use for ``bytes`` at protocols 0-2.

    Such pickles store ``bytes`` as ``_codecs.encode(<str>, "latin1")``. Only that exact call is honoured, so no
    other codec (e.g. ``zlib_codec``, a decompression bomb) can be reached through a pickle.
    """
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): only (str, 'latin1') is allowed"
        )
    return text.encode("latin-1")


@cache
def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    """(module, name) -> object for every global a CIFAR pickle may reference.

    The functions are taken from numpy's own ``__reduce__`` output instead of importing private modules, so the
    table is right for numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) alike and never touches the deprecated
    ``numpy.core`` alias. Both spellings are accepted because the files may have been written by either version
    (the official ones were written by Python 2 with numpy 1.x). ``_codecs.encode`` maps to a latin-1-only stand-in
    so that Python 3 pickles written with protocols 0-2 (which encode ``bytes`` through it) load too.
    """
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct: empty array + __setstate__
    scalar = np.float64(0).__reduce__()[0]  # multiarray.scalar: numpy scalars (e.g. np.int64 labels)
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer: arrays pickled with protocol 5
    allowed: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild plain containers, bytes/str/numbers, numpy arrays, dtypes and scalars.

    Every global lookup (``GLOBAL``, ``STACK_GLOBAL``, ``INST``, ``OBJ``, extension codes) goes through
    :meth:`find_class`, which allows only the numpy names listed in :func:`_allowed_globals`; anything else raises
    ``pickle.UnpicklingError`` before the object is called, so a malicious file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented on the class
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction is allowed in dataset "
                "pickles (the file is corrupt or malicious)"
            ) from None


def restricted_load(file: BinaryIO, *, encoding: str = "bytes") -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` (as the official CIFAR loader) turns Python 2 ``str`` into ``bytes``, so dict keys read
    as ``b"data"``, ``b"labels"`` ...
    """
    return RestrictedUnpickler(file, encoding=encoding).load()


def _load_dict(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as f:
        obj = restricted_load(f)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict[bytes, Any], key: bytes, path: Path) -> Any:
    # Files pickled by Python 3 with str keys are accepted as well as the official bytes keys.
    if key in d:
        return d[key]
    if key.decode() in d:
        return d[key.decode()]
    raise ValueError(f"{path}: missing key {key!r}; keys present: {sorted(map(repr, d))[:10]}")


def _batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _load_dict(path)
    data = np.asarray(_get(d, b"data", path))
    labels = np.asarray(_get(d, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected a 1-D integer label list, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return data, labels.astype(np.int64)


def _names(path: Path, key: bytes, expected: int) -> tuple[str, ...]:
    raw = _get(_load_dict(path), key, path)
    names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw)
    if len(names) != expected:
        raise ValueError(f"{path}: expected {expected} names under {key!r}, got {len(names)}")
    return names


def _find_folder(data_dir: str | os.PathLike[str] | None, folder: str, marker: str, dataset: str) -> Path:
    """The ``folder`` itself given it or its parent (``data_dir``, else ``$LONGTAIL_DATA``)."""
    if data_dir is None:
        env = os.environ.get(DATA_ENV)
        if not env:
            raise FileNotFoundError(
                f"{dataset}: no data_dir given and ${DATA_ENV} is not set. Download the python version from "
                "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass data_dir=<folder containing "
                f"{folder}/> or set {DATA_ENV} to that folder."
            )
        data_dir = env
    base = Path(data_dir)
    for candidate in (base, base / folder):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(
        f"{dataset}: neither {base} nor {base / folder} contains {marker!r}. Expected the extracted python "
        f"version ({folder}/) from https://www.cs.toronto.edu/~kriz/cifar.html."
    )


def _to_images(parts: list[np.ndarray], labels: list[np.ndarray], classes: tuple[str, ...]) -> LabelledImages:
    # concatenate copies, so the result is writable and independent of the unpickled buffers.
    data = np.concatenate(parts).reshape(-1, 3, 32, 32)
    return LabelledImages(torch.from_numpy(data), torch.from_numpy(np.concatenate(labels)), classes)


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, *, train: bool = True) -> LabelledImages:
    """Load CIFAR-10 (train: 50,000 images, 5,000 per class; test: 10,000).

    Args:
        data_dir: the ``cifar-10-batches-py`` folder or its parent; default ``$LONGTAIL_DATA``.
        train: ``data_batch_1`` .. ``data_batch_5`` (in that order) if True, else ``test_batch``.

    Returns:
        :class:`LabelledImages` with uint8 images ``(N, 3, 32, 32)`` (RGB), labels in ``[0, 10)`` and the class
        names from ``batches.meta``.

    Raises:
        FileNotFoundError: the folder or a batch file is missing.
        ValueError: a file has the wrong structure.
        pickle.UnpicklingError: a file references anything beyond numpy arrays (corrupt or malicious).
    """
    folder = _find_folder(data_dir, "cifar-10-batches-py", "batches.meta", "CIFAR-10")
    classes = _names(folder / "batches.meta", b"label_names", 10)
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    parts, labels = zip(*(_batch(folder / f, b"labels", 10) for f in files))
    return _to_images(list(parts), list(labels), classes)


def load_cifar100(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train: bool = True,
    label_type: Literal["fine", "coarse"] = "fine",
) -> LabelledImages:
    """Load CIFAR-100 (train: 50,000 images, 500 per fine class; test: 10,000).

    Args:
        data_dir: the ``cifar-100-python`` folder or its parent; default ``$LONGTAIL_DATA``.
        train: the ``train`` file if True, else ``test``.
        label_type: ``"fine"`` (100 classes, the long-tailed CIFAR-100 benchmark) or ``"coarse"`` (20
            superclasses).

    Returns:
        :class:`LabelledImages` with uint8 images ``(N, 3, 32, 32)`` and the class names from ``meta``.

    Raises:
        FileNotFoundError, ValueError, pickle.UnpicklingError: as :func:`load_cifar10`.
    """
    check_choice("label_type", label_type, ("fine", "coarse"))
    folder = _find_folder(data_dir, "cifar-100-python", "meta", "CIFAR-100")
    n = 100 if label_type == "fine" else 20
    classes = _names(folder / "meta", f"{label_type}_label_names".encode(), n)
    data, labels = _batch(folder / ("train" if train else "test"), f"{label_type}_labels".encode(), n)
    return _to_images([data], [labels], classes)
