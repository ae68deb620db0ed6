"""CIFAR loaders on fake folders, and the restricted unpickler against malicious pickles."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import cifar_rows, dump, make_cifar10, make_cifar100, py2_style_pickle
from longtail.data import load_cifar10, load_cifar100, restricted_load
from longtail.data.cifar import DatasetPickleError

PROTOCOLS = ["py2", 0, 2, 4, 5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cifar10_train_and_test(tmp_path: Path, protocol: int | str) -> None:
    make_cifar10(tmp_path, per_batch=4, protocol=protocol)
    train = load_cifar10(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [(i + j) % 10 for i in range(5) for j in range(4)]
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    test = load_cifar10(tmp_path / "cifar-10-batches-py", train=False)  # the folder itself works too
    assert test.images.shape == (4, 3, 32, 32)
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major.
    row = cifar_rows(4, seed=5)[2]
    assert test.images[2, 1, 3, 7] == row[1024 + 3 * 32 + 7]
    assert torch.equal(test.images[2].flatten(), torch.from_numpy(row))
    train.images[0, 0, 0, 0] = 1  # writable, not a view of a read-only unpickled buffer


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cifar100_fine_and_coarse(tmp_path: Path, protocol: int | str) -> None:
    make_cifar100(tmp_path, n=6, protocol=protocol)
    fine = load_cifar100(tmp_path)
    assert fine.images.shape == (6, 3, 32, 32)
    assert fine.labels.tolist() == [(7 * j) % 100 for j in range(6)]
    assert len(fine.classes) == 100 and fine.classes[3] == "fine3"
    coarse = load_cifar100(tmp_path, train=False, label_type="coarse")
    assert coarse.labels.tolist() == [(3 * j + 1) % 20 for j in range(6)]
    assert len(coarse.classes) == 20
    with pytest.raises(ValueError, match="label_type must be one of 'fine', 'coarse'; got 'medium'"):
        load_cifar100(tmp_path, label_type="medium")  # type: ignore[arg-type]


def test_env_var_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar10(tmp_path, per_batch=2)
    monkeypatch.setenv("LONGTAIL_DATA", str(tmp_path))
    assert len(load_cifar10()) == 10
    monkeypatch.delenv("LONGTAIL_DATA")
    with pytest.raises(FileNotFoundError, match="LONGTAIL_DATA is not set.*cs.toronto.edu"):
        load_cifar10()


def test_missing_folder_and_batch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100(tmp_path)
    folder = make_cifar10(tmp_path, per_batch=2)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_malformed_batches(tmp_path: Path) -> None:
    folder = make_cifar10(tmp_path, per_batch=2)
    dump(folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, 4)
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        load_cifar10(tmp_path, train=False)
    dump(folder / "test_batch", {b"data": cifar_rows(2, 0), b"labels": [0, 10]}, 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        load_cifar10(tmp_path, train=False)
    dump(folder / "test_batch", {b"data": cifar_rows(2, 0), b"labels": [0]}, 4)
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        load_cifar10(tmp_path, train=False)
    dump(folder / "test_batch", {b"data": cifar_rows(2, 0)}, 4)
    with pytest.raises(ValueError, match="missing key b'labels'"):
        load_cifar10(tmp_path, train=False)
    dump(folder / "test_batch", [1, 2, 3], 4)
    with pytest.raises(ValueError, match="expected a pickled dict, got list"):
        load_cifar10(tmp_path, train=False)


class _Exploit:
    """Unpickling runs ``func(*args)``; with a plain ``pickle.load`` this would execute."""

    def __init__(self, func, *args) -> None:  # noqa: ANN001
        self.func, self.args = func, args

    def __reduce__(self):  # noqa: ANN204
        return self.func, self.args


def _exploits(marker: Path) -> dict[str, object]:
    touch = f"touch {marker}"
    return {
        "os.system": _Exploit(os.system, touch),
        "builtins.eval": _Exploit(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Exploit(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _Exploit(subprocess.call, ["touch", str(marker)]),
        "builtins.getattr": _Exploit(getattr, "text", "upper"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call", "builtins.getattr"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_batch_is_refused_and_not_executed(tmp_path: Path, name: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    folder = make_cifar10(tmp_path, per_batch=2)
    payload = {b"data": _exploits(marker)[name], b"labels": [0, 1]}
    dump(folder / "data_batch_2", payload, protocol)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        load_cifar10(tmp_path)
    assert not marker.exists()
    # Sanity check of the test itself: an unrestricted load of the same bytes would have run the payload.
    if name == "os.system":
        with open(folder / "data_batch_2", "rb") as f:
            pickle.load(f)  # noqa: S301 - deliberately unsafe, on our own file
        assert marker.exists()


def test_hand_written_global_opcodes_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Protocol-0 GLOBAL with Python 2 module names (mapped by the default find_class, not by ours).
    attacks = [
        b"c__builtin__\neval\n(S'open(\"%s\", \"w\")'\ntR." % str(marker).encode(),
        b"cposix\nsystem\n(S'touch %s'\ntR." % str(marker).encode(),
        b"c_codecs\ndecode\n(S'x'\nS'zlib_codec'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\ncnumpy\nndarray\nNtR.",
    ]
    for attack in attacks:
        with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
            restricted_load(io.BytesIO(attack))
    assert not marker.exists()


def test_codecs_encode_only_latin1() -> None:
    assert restricted_load(io.BytesIO(b"c_codecs\nencode\n(Vab\nVlatin1\ntR.")) == b"ab"
    for codec in (b"zlib_codec", b"utf-8", b"rot13"):
        with pytest.raises(pickle.UnpicklingError, match="only \\(str, 'latin1'\\)"):
            restricted_load(io.BytesIO(b"c_codecs\nencode\n(Vab\nV" + codec + b"\ntR."))


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(io.BytesIO(b"P1\n."))


def test_allowed_numpy_objects_round_trip() -> None:
    obj = {
        b"a": np.arange(6, dtype=np.uint8).reshape(2, 3),
        b"b": np.array([1.5, 2.5], dtype=">f8"),
        b"s": np.int64(7),
        b"l": [1, b"x", (2.0, None)],
    }
    for blob in [py2_style_pickle(obj)] + [pickle.dumps(obj, protocol=p) for p in range(6)]:
        out = restricted_load(io.BytesIO(blob))
        assert np.array_equal(out[b"a"], obj[b"a"]) and out[b"a"].dtype == np.uint8
        assert np.array_equal(out[b"b"], obj[b"b"])
        assert out[b"s"] == 7
        assert out[b"l"] == [1, b"x", (2.0, None)]


# --- sizes bounded by the file, one error for every damaged pickle ------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _reconstruct_call(shape: tuple[int, ...], dtype_code: bytes = b"b") -> bytes:
    """``_reconstruct(ndarray, shape, dtype_code)`` in raw protocol-2 opcodes (how numpy starts every array)."""
    dims = b"".join(b"\x8a\x08" + struct.pack("<q", d) for d in shape)  # LONG1 of 8 bytes each
    return (
        b"\x80\x02" + _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
        + b"(" + dims + b"t" + b"C" + bytes([len(dtype_code)]) + dtype_code + b"\x87R"
    )


def _array_state(shape: tuple[int, ...], raw: bytes) -> bytes:
    """``(1, shape, dtype('u1'), False, raw)`` for ndarray.__setstate__, as BUILD after _reconstruct."""
    dims = b"".join(b"\x8a\x08" + struct.pack("<q", d) for d in shape)
    dtype = _global("numpy", "dtype") + b"X\x02\x00\x00\x00u1\x89\x88\x87R"
    return b"(K\x01(" + dims + b"t" + dtype + b"\x89C" + bytes([len(raw)]) + raw + b"tb"


TIB = 2**40

CRAFTED = {
    "reconstruct_1tib": (_reconstruct_call((TIB,)) + b".", r"array of shape \(1099511627776,\) and dtype int8"),
    "reconstruct_2d": (_reconstruct_call((2**20, 2**20), b"d") + b".", r"shape \(1048576, 1048576\) and dtype float64"),
    "setstate_1tib": (
        _reconstruct_call((0,)) + _array_state((TIB,), b"abc") + b".",
        r"array of shape \(1099511627776,\) and dtype uint8",
    ),
    "numpy_int_dims": (  # the shape's dimensions as numpy int64 scalars, built by the allowed scalar()
        b"\x80\x02" + _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
        + b"(" + _global("numpy.core.multiarray", "scalar") + _global("numpy", "dtype") + b"X\x02\x00\x00\x00i8"
        + b"\x89\x88\x87R" + b"C\x08" + struct.pack("<q", TIB) + b"\x86R" + b"tC\x01b\x87R.",
        r"array of shape \(1099511627776,\) and dtype int8",
    ),
    "ndarray_call": (
        b"\x80\x02" + _global("numpy", "ndarray") + b"\x8a\x08" + struct.pack("<q", TIB) + b"\x85\x85R.",
        "refusing to call numpy.ndarray",
    ),
    "binbytes8": (b"\x80\x04\x8e" + struct.pack("<Q", TIB) + b"abc.", "needs 1099511627776 more bytes"),
    "bytearray8": (b"\x80\x05\x96" + struct.pack("<Q", TIB) + b"abc.", "bytearray of 1099511627776 bytes"),
    "binunicode8": (b"\x80\x04\x8d" + struct.pack("<Q", TIB) + b"abc.", "needs 1099511627776 more bytes"),
    "frame": (b"\x80\x04\x95" + struct.pack("<Q", TIB) + b"K\x01.", "needs 1099511627776 more bytes"),
    "binbytes8_in_frame": (
        b"\x80\x04\x95" + struct.pack("<Q", 13) + b"\x8e" + struct.pack("<Q", TIB) + b"abc.",
        r"corrupt or truncated pickle \(pickle exhausted before end of frame\)",
    ),
    "binbytes_3gb": (b"\x80\x03B" + struct.pack("<I", 3 << 30) + b"abc.", "needs 3221225472 more bytes"),
    "binstring_2gb": (b"T" + struct.pack("<i", 2**31 - 1) + b"abc.", "needs 2147483647 more bytes"),
    "long4": (b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01.", "needs 2147483647 more bytes"),
    "empty": (b"", "the file ends before the pickle does"),
    "stack_underflow": (b"\x80\x02t.", "corrupt or truncated pickle"),
    "bad_memo": (b"\x80\x02h\x05.", "Memo value not found"),
    "no_stop": (b"\x80\x02K\x01", "the file ends before the pickle does"),
    "bad_opcode": (b"\x80\x02\xff.", r"corrupt or truncated pickle \(KeyError: invalid opcode 0xff\)"),
    "shape_mismatch": (_reconstruct_call((0,)) + _array_state((2, 3), b"abc") + b".", "corrupt or truncated pickle"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_pickles_are_refused_by_name_without_allocating(tmp_path: Path, name: str) -> None:
    data, match = CRAFTED[name]
    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with open(path, "rb") as f, pytest.raises(ValueError, match=match) as info:
            restricted_load(f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    assert isinstance(info.value, DatasetPickleError) and isinstance(info.value, pickle.UnpicklingError)
    assert str(info.value).startswith(f"{path}: ")


def test_array_bound_is_the_file_size() -> None:
    # An array of as many bytes as the file has passes the bound; one byte more is refused.
    size = len(_reconstruct_call((0,)) + b".")
    assert restricted_load(io.BytesIO(_reconstruct_call((size,)) + b".")).shape == (size,)
    with pytest.raises(DatasetPickleError, match=rf"shape \({size + 1},\) and dtype int8 \({size + 1} bytes\), more "
                       rf"than the {size} bytes of the file"):
        restricted_load(io.BytesIO(_reconstruct_call((size + 1,)) + b"."))
    ok = _reconstruct_call((0,)) + _array_state((3,), b"abc") + b"."
    assert restricted_load(io.BytesIO(ok)).tolist() == [97, 98, 99]
    # max_bytes replaces the file's size as the bound.
    assert restricted_load(io.BytesIO(_reconstruct_call((size + 1,)) + b"."), max_bytes=size + 1).shape == (size + 1,)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_and_corrupted_batches_give_one_value_error_naming_the_file(tmp_path: Path, protocol: object) -> None:
    folder = make_cifar10(tmp_path, per_batch=3, protocol=protocol)
    path = folder / "test_batch"
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted(set(np.linspace(0, len(good) - 1, 40).astype(int).tolist()))
    variants = [good[:cut] for cut in cuts]
    for _ in range(60):
        damaged = bytearray(good)
        for index in rng.integers(0, len(good), size=3):
            damaged[index] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    for variant in variants:
        path.write_bytes(variant)
        try:
            load_cifar10(tmp_path, train=False)
        except ValueError as exc:  # DatasetPickleError, or a structure check of _batch
            assert str(exc).startswith(f"{path}: "), exc
            assert len(str(exc).splitlines()) == 1 or "refusing" in str(exc)
        # A flip may leave a valid pickle (e.g. a changed pixel): then it loads.
