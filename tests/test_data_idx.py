"""IDX reader: round trips for every dtype, gzip detection by content, and malformed headers."""

from __future__ import annotations

import gzip
import math
import re
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import idx_bytes, idx_header, make_mnist_like
from longtail.data import load_mnist, read_idx


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
        np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        np.array([[-3, 7]], dtype=np.int8),
        np.array([-300, 300, 12345], dtype=np.int16),
        np.array([[1, -(2**31)], [2**31 - 1, 0]], dtype=np.int32),
        np.array([1.5, -2.25, 1e30], dtype=np.float32),
        np.array([[np.pi, -np.e]], dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data)
    expected = torch.from_numpy(array.copy())
    from_bytes = read_idx(data)
    (tmp_path / "f").write_bytes(data)
    from_path = read_idx(tmp_path / "f")
    for got in (from_bytes, from_path):
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert torch.equal(got, expected)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    gz_without_suffix = tmp_path / "labels-idx1-ubyte"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(array)))
    plain_with_suffix = tmp_path / "labels-idx1-ubyte.gz"
    plain_with_suffix.write_bytes(idx_bytes(array))
    assert read_idx(gz_without_suffix).tolist() == list(range(10))
    assert read_idx(str(plain_with_suffix)).tolist() == list(range(10))


def test_result_is_writable_and_native_order() -> None:
    out = read_idx(idx_bytes(np.array([1, 2], dtype=np.int32)))
    out += 1  # would fail or warn on a read-only / big-endian buffer
    assert out.tolist() == [2, 3]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", r"magic number.*0x01000801", id="magic"),
        pytest.param(b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05", "unknown IDX dtype code 0x07", id="dtype"),
        pytest.param(b"\x00\x00\x08\x00" + b"\x05", "0 dimensions", id="ndim0"),
        pytest.param(b"\x00\x00\x08", "truncated IDX header: expected 4 bytes, got 3", id="short-header"),
        pytest.param(
            b"\x00\x00\x08\x02" + b"\x00\x00\x00\x01",
            "truncated IDX dimension sizes: expected 8 bytes, got 4",
            id="short-dims",
        ),
        pytest.param(
            idx_header(0x08, (2, 3)) + bytes(5),
            r"declares shape \(2, 3\) = 6 payload bytes, but the file holds 5|declares a payload of 6 .* holds 5",
            id="short-payload",
        ),
        pytest.param(
            idx_header(0x08, (2, 3)) + bytes(7),
            "6 payload bytes, but the file holds 7|trailing data",
            id="long-payload",
        ),
        pytest.param(idx_header(0x0C, (3,)) + bytes(6), "12", id="int32-itemsize"),
        pytest.param(idx_header(0x08, (2**32 - 1,) * 3) + bytes(10), "above max_bytes", id="huge"),
    ],
)
def test_malformed(data: bytes, match: str, compress: bool) -> None:
    with pytest.raises(ValueError, match=match):
        read_idx(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_bogus_size_below_cap_is_rejected_without_allocating(tmp_path: Path, compress: bool) -> None:
    # 3 GB declared (under the 4 GiB default cap), 100 bytes present: must fail cheaply, not allocate 3 GB.
    data = idx_header(0x08, (3_000_000_000,)) + bytes(100)
    path = tmp_path / "bogus"
    path.write_bytes(gzip.compress(data) if compress else data)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="3000000000"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_max_bytes_argument() -> None:
    data = idx_bytes(np.zeros(100, dtype=np.uint8))
    with pytest.raises(ValueError, match="max_bytes=99"):
        read_idx(data, max_bytes=99)
    assert read_idx(data, max_bytes=100).shape == (100,)


def test_corrupt_and_truncated_gzip() -> None:
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(good[:-4])  # the payload is complete, only the trailer is cut
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    with pytest.raises(ValueError):
        read_idx(bytes(flipped))


def test_type_and_missing_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="source must be a path or bytes; got int"):
        read_idx(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


# --- gzip bombs, the element cap, labels out of range -------------------------------------------------------------


def _gzip_of_zeros(header: bytes, payload_bytes: int) -> bytes:
    """gzip of ``header`` + ``payload_bytes`` zeros, compressed about 1000:1 (built in chunks, never whole)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, zeros, left = [c.compress(header)], bytes(1 << 20), payload_bytes
    while left:
        parts.append(c.compress(zeros[: min(left, len(zeros))]))
        left -= min(left, len(zeros))
    parts.append(c.flush())
    return b"".join(parts)


BOMB_DIMS = (133_747, 28, 28)  # 104,857,648 bytes of uint8 zeros: a consistent header, a ~100 kB file


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "train-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_of_zeros(idx_header(0x08, BOMB_DIMS), math.prod(BOMB_DIMS)))
    return path


def test_gzip_bomb_is_refused_from_its_header(gzip_bomb: Path) -> None:
    size = gzip_bomb.stat().st_size
    assert size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            read_idx(gzip_bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{gzip_bomb}: IDX header declares shape {BOMB_DIMS} = {math.prod(BOMB_DIMS)} bytes "
                              f"from a gzip file of {size} bytes")
    assert "above max_ratio=100 (a gzip bomb?)" in message
    assert peak < 4 << 20  # nothing past the header was decompressed


def test_max_ratio_lets_a_genuine_highly_compressed_file_through(gzip_bomb: Path) -> None:
    out = read_idx(gzip_bomb, max_ratio=float("inf"))
    assert out.shape == BOMB_DIMS and int(out[-1].max()) == 0
    with pytest.raises(ValueError, match=r"max_ratio must be in \(0, inf\]; got 0.0"):
        read_idx(gzip_bomb, max_ratio=0)


def test_small_payloads_are_read_at_any_compression_ratio() -> None:
    zeros = np.zeros((1000, 28, 28), dtype=np.uint8)  # 784 kB of zeros: a ratio near 1000:1, below the 64 MiB floor
    data = gzip.compress(idx_bytes(zeros))
    assert len(idx_bytes(zeros)) / len(data) > 100
    assert torch.equal(read_idx(data), torch.from_numpy(zeros))


@pytest.mark.parametrize("compress", [False, True])
def test_header_declaring_more_than_2_31_elements_is_refused(compress: bool) -> None:
    dims = (2**16, 2**15 + 1)  # 2**31 + 2**16 uint8 elements: below the 4 GiB max_bytes, above the element cap
    data = idx_header(0x08, dims) + bytes(10)
    with pytest.raises(ValueError, match=rf"^<bytes>: IDX header declares shape \(65536, 32769\) = {2**31 + 2**16} "
                       r"elements, above the maximum of 2147483648 \(2\*\*31\) elements"):
        read_idx(gzip.compress(data) if compress else data)


def test_trailing_gzip_data_is_never_decompressed_past_the_declared_size(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(_gzip_of_zeros(idx_header(0x08, (10,)), 50 << 20))  # declares 10 bytes, holds 50 MiB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing data"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_label_out_of_range_names_the_labels_file(tmp_path: Path) -> None:
    make_mnist_like(tmp_path, n_train=12, n_test=4)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 12, 3], dtype=np.uint8))))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(labels))}: labels must be in \[0, 10\); got values in "
                       r"\[0, 12\]"):
        load_mnist(tmp_path, train=False)
