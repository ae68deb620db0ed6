"""Reader for the IDX format of MNIST / Fashion-MNIST, plain or gzipped.

IDX layout (big-endian): two zero bytes, a dtype code byte, a byte with the number of dimensions ``d``, ``d``
unsigned 32-bit sizes, then the payload in C order. The reader checks the header and that the declared payload
size equals the real payload size *before* building the tensor, so a corrupt or hostile header cannot make it
allocate more memory than the file actually holds.

A gzip file is decompressed incrementally, never past the header's declared size plus one byte (the check for
trailing data), and its header may not declare much more than its compressed size can plausibly hold: a gzip
bomb (a 1 MB file of compressed zeros behind a header declaring a gigabyte, a ratio of 1000:1) is refused from
its header, before anything is decompressed; real IDX files compress less than 10:1.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np
import torch

from ..checks import check_real
__all__ = [
    "DEFAULT_MAX_GZIP_RATIO",
    "DEFAULT_MAX_IDX_BYTES",
    "GZIP_MAGIC",
    "IDX_DTYPES",
    "MAX_IDX_ELEMENTS",
    "read_idx",
]

#: First two bytes of every gzip stream (RFC 1952); compression is detected by content, never by file name.
GZIP_MAGIC = b"\x1f\x8b"

#: IDX dtype code -> (big-endian numpy dtype, torch dtype).
IDX_DTYPES: dict[int, tuple[np.dtype, torch.dtype]] = {
    0x08: (np.dtype(">u1"), torch.uint8),
    0x09: (np.dtype(">i1"), torch.int8),
    0x0B: (np.dtype(">i2"), torch.int16),
    0x0C: (np.dtype(">i4"), torch.int32),
    0x0D: (np.dtype(">f4"), torch.float32),
    0x0E: (np.dtype(">f8"), torch.float64),
}

#: Largest payload accepted by default (4 GiB): far above any MNIST-like file, far below "allocate terabytes".
DEFAULT_MAX_IDX_BYTES = 1 << 32

#: Largest number of elements a header may declare (2**31: 2 GiB of uint8), whatever ``max_bytes`` allows.
MAX_IDX_ELEMENTS = 1 << 31

#: Largest accepted ratio of declared payload to compressed file size for gzip input (real files: below 10).
DEFAULT_MAX_GZIP_RATIO = 100.0

# A payload this small is read whatever its compression ratio (every MNIST-like file is below 50 MB).
_RATIO_FREE_BYTES = 64 << 20

_CHUNK = 1 << 20


def _read_exact(stream: BinaryIO, n: int, what: str, name: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"{name}: truncated IDX {what}: expected {n} bytes, got {len(data)}")
    return data


def _read_payload(stream: BinaryIO, expected: int, name: str) -> bytearray:
    """Read exactly ``expected`` bytes, failing if the stream is shorter or longer.

    Reads in bounded chunks (never ``read(expected)`` in one call, which would pre-allocate ``expected`` bytes),
    so memory use is bounded by the data actually present, whatever the header claims.
    """
    buf = bytearray()
    while len(buf) <= expected:
        chunk = stream.read(min(_CHUNK, expected + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
    if len(buf) < expected:
        raise ValueError(f"{name}: IDX header declares a payload of {expected} bytes but the file holds {len(buf)}")
    if len(buf) > expected:
        raise ValueError(
            f"{name}: IDX header declares a payload of {expected} bytes but the file holds more (trailing data)"
        )
    return buf


def _parse(
    stream: BinaryIO,
    name: str,
    total_size: int | None,
    max_bytes: int,
    *,
    compressed_size: int | None = None,
    max_ratio: float = DEFAULT_MAX_GZIP_RATIO,
) -> torch.Tensor:
    """Parse an IDX stream: ``total_size`` is the size of a plain file, ``compressed_size`` that of a gzip one."""
    head = _read_exact(stream, 4, "header", name)
    if head[0] != 0 or head[1] != 0:
        raise ValueError(
            f"{name}: not an IDX file: the magic number must start with two zero bytes, got 0x{head.hex()}"
        )
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{k:02X}" for k in IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX dtype code 0x{code:02X}; expected one of {known}")
    if ndim < 1:
        raise ValueError(f"{name}: IDX header declares {ndim} dimensions; expected at least 1")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, "dimension sizes", name))
    np_dtype, torch_dtype = IDX_DTYPES[code]
    # Python ints: no overflow however large the bogus dimensions are.
    count = math.prod(dims)
    expected = count * np_dtype.itemsize
    if expected > max_bytes:
        raise ValueError(
            f"{name}: IDX header declares shape {dims} = {expected} bytes, above max_bytes={max_bytes}; "
            "the header is probably corrupt (pass a larger max_bytes if the file is genuinely that large)"
        )
    if count > MAX_IDX_ELEMENTS:
        raise ValueError(
            f"{name}: IDX header declares shape {dims} = {count} elements, above the maximum of "
            f"{MAX_IDX_ELEMENTS} (2**31) elements; the header is probably corrupt"
        )
    if compressed_size is not None and expected > max(max_ratio * compressed_size, _RATIO_FREE_BYTES):
        raise ValueError(
            f"{name}: IDX header declares shape {dims} = {expected} bytes from a gzip file of {compressed_size} "
            f"bytes, a compression ratio of {expected / max(compressed_size, 1):.0f}:1, above "
            f"max_ratio={max_ratio:g} (a gzip bomb?); real IDX files compress less than 10:1 (pass a larger "
            "max_ratio if this file is genuine)"
        )
    if total_size is not None:
        actual = total_size - 4 - 4 * ndim
        if actual != expected:
            raise ValueError(
                f"{name}: IDX header declares shape {dims} = {expected} payload bytes, but the file holds {actual}"
            )
    buf = _read_payload(stream, expected, name)
    array = np.frombuffer(buf, dtype=np_dtype).reshape(dims)
    # Convert big-endian to native order (a copy only for multi-byte types; uint8 shares the buffer).
    array = array.astype(np_dtype.newbyteorder("="), copy=False)
    return torch.from_numpy(array).to(torch_dtype)


def read_idx(
    source: str | os.PathLike[str] | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IDX_BYTES,
    max_ratio: float = DEFAULT_MAX_GZIP_RATIO,
) -> torch.Tensor:
    """Read an IDX file (plain or gzip-compressed, detected from the first two bytes) into a tensor.

    Args:
        source: a path, or the file's raw bytes.
        max_bytes: largest payload accepted; a header declaring more raises before anything is read (as does
            one declaring more than :data:`MAX_IDX_ELEMENTS` elements).
        max_ratio: for gzip input, largest accepted ratio of the declared payload to the compressed file size
            (payloads up to 64 MiB are accepted at any ratio); a header declaring more raises before anything
            past it is decompressed.

    Returns:
        A CPU tensor with the shape from the header (MNIST images: uint8 ``(N, 28, 28)``; labels: uint8 ``(N,)``)
        and the dtype from the header (uint8, int8, int16, int32, float32 or float64), in native byte order.

    Raises:
        TypeError: ``source`` is neither a path nor bytes.
        ValueError: bad magic number, unknown dtype code, zero dimensions, a declared size above ``max_bytes``,
            :data:`MAX_IDX_ELEMENTS` or ``max_ratio`` times the gzip size, a declared size different from the
            real payload size, or a corrupt / truncated gzip stream; the message names the file.
        FileNotFoundError: the path does not exist.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "<bytes>"
        raw: BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        raw = open(source, "rb")  # noqa: SIM115 - closed below
    else:
        raise TypeError(f"source must be a path or bytes; got {type(source).__name__}")
    max_ratio = check_real("max_ratio", max_ratio, low=0.0, low_open=True)
    with raw:
        compressed = raw.read(2) == GZIP_MAGIC
        total = raw.seek(0, os.SEEK_END)
        raw.seek(0)
        if not compressed:
            return _parse(raw, name, total, max_bytes)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                # The decompressed size is only known after decompressing, so the payload check is streamed:
                # _read_payload decompresses at most the declared size + 1 bytes, in bounded chunks.
                return _parse(  # type: ignore[arg-type]
                    stream, name, None, max_bytes, compressed_size=total, max_ratio=max_ratio
                )
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ValueError(f"{name}: corrupt or truncated gzip stream: {exc}") from exc
