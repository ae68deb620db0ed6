"""CIFAR loaders on fake folders, and the restricted unpickler against malicious pickles."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import cifar_rows, dump, make_cifar10, make_cifar100, py2_style_pickle
from longtail.data import load_cifar10, load_cifar100, restricted_load

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
