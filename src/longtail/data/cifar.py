"""CIFAR-10 / CIFAR-100 from the standard "python version" folders, read with a restricted unpickler.

The official archives are Python pickles, and ``pickle.load`` on an untrusted file runs arbitrary code. These
files only ever need numpy's array-reconstruction machinery (plus, for Python 3 pickles written with protocols 0-2,
a latin-1 ``_codecs.encode`` for ``bytes``), so :class:`RestrictedUnpickler` resolves exactly
those globals and refuses every other one (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) with
``pickle.UnpicklingError`` before anything is called. It also never allocates more than the file could hold: a
pickle cannot contain more bytes than its file has (these files hold no compressed data), so an opcode or an
array that declares more is refused before anything is allocated. Every failure, whatever the unpickler's own
error, is one :class:`DatasetPickleError` (a ``ValueError`` and a ``pickle.UnpicklingError``) naming the file.

Folder layouts (as extracted from the archives at https://www.cs.toronto.edu/~kriz/cifar.html):

* ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``.
* ``cifar-100-python/``: ``train``, ``test``, ``meta``.
"""

from __future__ import annotations

import math
import operator
import os
import pickle
import struct
from collections.abc import Callable
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch

from ..checks import check_choice
from .datasets import DATA_ENV, LabelledImages

__all__ = [
    "DEFAULT_MAX_PICKLE_BYTES",
    "DatasetPickleError",
    "RestrictedUnpickler",
    "load_cifar10",
    "load_cifar100",
    "restricted_load",
]


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


class DatasetPickleError(ValueError, pickle.UnpicklingError):
    """A dataset pickle that is corrupt, truncated, declares more data than its file holds, or references a
    refused global; the message names the file. Both a ``ValueError`` and a ``pickle.UnpicklingError``."""


#: Cap on the data of a pickle read from a stream whose size cannot be known (not seekable).
DEFAULT_MAX_PICKLE_BYTES = 1 << 32


@cache
def _numpy_functions() -> dict[str, Callable[..., Any]]:
    """numpy's pickle helpers, taken from its own ``__reduce__`` output instead of importing private modules, so
    they are right for numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) alike."""
    return {
        "_reconstruct": np.zeros(1).__reduce__()[0],  # multiarray._reconstruct: empty array + __setstate__
        "scalar": np.float64(0).__reduce__()[0],  # multiarray.scalar: numpy scalars (e.g. np.int64 labels)
        "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],  # numeric._frombuffer: arrays pickled with protocol 5
    }


def _ndarray_sentinel(*args: Any, **kwargs: Any) -> Any:
    """What a pickle gets for ``numpy.ndarray``: the class as the first argument of ``_reconstruct`` (the only way
    numpy's own pickles use it); calling it, ``ndarray(shape)``, would allocate an array of any declared size."""
    raise pickle.UnpicklingError(
        "refusing to call numpy.ndarray: dataset pickles build arrays only through numpy's _reconstruct or "
        "_frombuffer (the file is corrupt or malicious)"
    )


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined, misc]
    """An unpickler that can only rebuild plain containers, bytes/str/numbers, numpy arrays, dtypes and scalars,
    and never allocates more than its file could hold.

    Every global lookup (``GLOBAL``, ``STACK_GLOBAL``, ``INST``, ``OBJ``, extension codes) goes through
    :meth:`find_class`, which allows only numpy's array reconstruction (and a latin-1-only ``_codecs.encode``);
    anything else raises ``pickle.UnpicklingError`` before the object is called, so a malicious file cannot run
    code.

    Sizes are bounded by ``max_bytes``, by default the size of the file: nothing in a pickle can be larger than the
    bytes it is read from (these pickles hold no compressed data). A counted opcode (``BINBYTES8``, ``FRAME`` ...)
    or an array whose shape and dtype declare more raises :class:`DatasetPickleError` before anything is
    allocated. This is the pure-Python unpickler, whose reads and opcodes can be checked: the C one allocates a
    ``BINBYTES8`` object of the declared size before reading it.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO, *, encoding: str = "bytes", max_bytes: int | None = None) -> None:
        self.source = str(getattr(file, "name", "<pickle>"))
        reader = _BoundedReader(file, self.source, max_bytes)
        self.max_bytes = reader.size
        super().__init__(reader, encoding=encoding)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented on the class
        if module == "numpy" and name == "ndarray":
            return _ndarray_sentinel
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        core, _, submodule = module.rpartition(".")
        helper = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}.get(submodule, ())
        if core in ("numpy.core", "numpy._core") and name in helper:
            # Both spellings: the files may have been written by numpy 1.x or 2.x.
            return getattr(self, f"_checked{name}" if name.startswith("_") else f"_checked_{name}")
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: only numpy array reconstruction is allowed in dataset "
            "pickles (the file is corrupt or malicious)"
        )

    # --- size checks ---------------------------------------------------------------------------------------------

    def _check_array(self, shape: Any, dtype: Any) -> None:
        """Refuses an array whose declared shape and dtype need more bytes than the file holds."""
        # Dimensions may be any integer numpy accepts (Python ints, numpy scalars from the pickle ...).
        try:
            dims = (operator.index(shape),)
        except TypeError:
            try:
                dims = tuple(operator.index(d) for d in shape)
            except TypeError:
                return  # not a shape: numpy raises for it, allocating nothing
        if any(d < 0 for d in dims):
            return  # numpy raises for a negative dimension
        dtype = np.dtype(dtype)
        count = math.prod(dims)
        # An object element needs at least one pickle opcode byte; any other element its itemsize of raw data.
        nbytes = count if dtype.hasobject else count * dtype.itemsize
        if nbytes > self.max_bytes:
            raise DatasetPickleError(
                f"{self.source}: the pickle declares an array of shape {dims} and dtype {dtype} ({nbytes} bytes), "
                f"more than the {self.max_bytes} bytes of the file could hold (the file is corrupt or malicious)"
            )

    def _check_count(self, n: int, what: str) -> None:
        if n > self.max_bytes:
            raise DatasetPickleError(
                f"{self.source}: the pickle declares a {what} of {n} bytes, more than the {self.max_bytes} bytes of "
                "the file (the file is truncated, corrupt or malicious)"
            )

    def _checked_reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not _ndarray_sentinel:
            raise pickle.UnpicklingError(
                f"refusing _reconstruct of {getattr(subtype, '__name__', type(subtype).__name__)}: only "
                "numpy.ndarray may be rebuilt (the file is corrupt or malicious)"
            )
        self._check_array(shape, dtype)
        return _numpy_functions()["_reconstruct"](np.ndarray, shape, dtype)

    def _checked_frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
        self._check_array(shape, dtype)
        return _numpy_functions()["_frombuffer"](buf, dtype, shape, order)

    def _checked_scalar(self, dtype: Any, *args: Any) -> Any:
        self._check_array((), dtype)
        return _numpy_functions()["scalar"](dtype, *args)

    def load_build(self) -> None:
        # ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata)) sets the array's real shape and dtype.
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) in (4, 5):
            self._check_array(state[-4], state[-3] if isinstance(state[-3], np.dtype) else np.uint8)
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        # The pure-Python unpickler allocates bytearray(n) before reading n bytes: check n first.
        (n,) = struct.unpack("<Q", self.read(8))
        self._check_count(n, "bytearray")
        data = bytearray(n)
        if self.readinto(data) != n:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(data)

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


class _BoundedReader:
    """The file of a :class:`RestrictedUnpickler`: refuses a read of more bytes than the file has left, before
    anything is allocated (``read(n)`` of a buffered file allocates ``n`` bytes first)."""

    def __init__(self, file: BinaryIO, source: str, max_bytes: int | None) -> None:
        self._file, self._source = file, source
        size: int | None = None
        with suppress(AttributeError, OSError, ValueError):
            start = file.tell()
            end = file.seek(0, os.SEEK_END)
            file.seek(start)
            size = end - start
        if max_bytes is not None:
            self.size = max_bytes
        else:
            self.size = size if size is not None else DEFAULT_MAX_PICKLE_BYTES
        self._left = self.size if size is None else min(size, self.size)

    def _take(self, n: int) -> None:
        if n > self._left and self._left == 0:
            raise DatasetPickleError(f"{self._source}: the file ends before the pickle does (truncated or corrupt)")
        if n > self._left:
            raise DatasetPickleError(
                f"{self._source}: the pickle needs {n} more bytes but the file holds only {self._left} more "
                "(the file is truncated, corrupt or malicious)"
            )

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._left
        self._take(n)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        self._take(memoryview(buffer).nbytes)
        got = self._file.readinto(buffer)
        self._left -= got or 0
        return got

    def readline(self) -> bytes:
        line = self._file.readline(self._left + 1)
        self._left -= len(line)
        return line


def restricted_load(file: BinaryIO, *, encoding: str = "bytes", max_bytes: int | None = None) -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` (as the official CIFAR loader) turns Python 2 ``str`` into ``bytes``, so dict keys read
    as ``b"data"``, ``b"labels"`` ... ``max_bytes`` bounds every object and array; by default the number of bytes
    left in ``file`` (:data:`DEFAULT_MAX_PICKLE_BYTES` when it cannot be seeked).

    Raises:
        DatasetPickleError: (a ``ValueError`` and a ``pickle.UnpicklingError``) the pickle is truncated or
            corrupt, declares more data than the file holds, or references a refused global; one message naming
            the file, whatever the unpickler's own error was.
        OSError: the file cannot be read.
    """
    unpickler = RestrictedUnpickler(file, encoding=encoding, max_bytes=max_bytes)
    try:
        return unpickler.load()
    except DatasetPickleError:
        raise
    except (OSError, MemoryError):
        raise
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refusing"):  # find_class and its helpers: the message says what and why
            raise DatasetPickleError(f"{unpickler.source}: {exc}") from exc
        raise DatasetPickleError(f"{unpickler.source}: corrupt or truncated pickle ({exc})") from exc
    except Exception as exc:  # EOFError, ValueError, TypeError, struct.error, IndexError ... of a damaged file
        detail = str(exc) or "unexpected end of data"
        if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], int):
            detail = f"invalid opcode 0x{exc.args[0]:02x}"  # the pure-Python unpickler's dispatch lookup
        raise DatasetPickleError(
            f"{unpickler.source}: corrupt or truncated pickle ({type(exc).__name__}: {detail})"
        ) from exc


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
        ValueError: a file has the wrong structure, or is not a valid pickle (:class:`DatasetPickleError`, also a
            ``pickle.UnpicklingError``): corrupt, truncated, declaring more data than it holds, or referencing
            anything beyond numpy arrays (corrupt or malicious).
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
        FileNotFoundError, ValueError (DatasetPickleError): as :func:`load_cifar10`.
    """
    check_choice("label_type", label_type, ("fine", "coarse"))
    folder = _find_folder(data_dir, "cifar-100-python", "meta", "CIFAR-100")
    n = 100 if label_type == "fine" else 20
    classes = _names(folder / "meta", f"{label_type}_label_names".encode(), n)
    data, labels = _batch(folder / ("train" if train else "test"), f"{label_type}_labels".encode(), n)
    return _to_images([data], [labels], classes)
