"""Builders for the data tests: IDX files, fake CIFAR folders, Python-2-style pickles, a loopback HTTP server."""

from __future__ import annotations

import gzip
import http.server
import io
import pickle
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format (big-endian header and payload)."""
    code = IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    data = idx_bytes(array)
    # mtime=0: reproducible bytes, so the same content always has the same gzip hash.
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def make_mnist_like(
    folder: Path, n_train: int = 30, n_test: int = 10, *, compress: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four standard IDX files (10 classes, labels cycling 0..9) into ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if compress else stem), array, compress=compress)
    return arrays


class Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str and bytes the way Python 2's cPickle wrote ``str`` (BINSTRING), like the official CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_as_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_as_py2_str
    dispatch[str] = _save_as_py2_str


def py2_style_pickle(obj: Any) -> bytes:
    """Protocol-2 pickle as written by Python 2 + numpy 1.x (``numpy.core.multiarray`` module names)."""
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def dump(path: Path, obj: Any, protocol: int | str) -> None:
    """Pickle ``obj`` to ``path`` with a numeric protocol or ``"py2"`` (see :func:`py2_style_pickle`)."""
    if protocol == "py2":
        path.write_bytes(py2_style_pickle(obj))
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=int(protocol))


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def make_cifar10(parent: Path, per_batch: int = 4, *, protocol: int | str = 2) -> Path:
    """Fake ``parent/cifar-10-batches-py`` with 5 training batches + test batch of ``per_batch`` images each."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch}, protocol)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [(i + j) % 10 for j in range(per_batch)],  # a plain list, as in the official files
            b"data": cifar_rows(per_batch, seed=i),
            b"filenames": [f"{name}_{j}.png".encode() for j in range(per_batch)],
        }
        dump(folder / name, batch, protocol)
    return folder


def make_cifar100(parent: Path, n: int = 6, *, protocol: int | str = 2) -> Path:
    """Fake ``parent/cifar-100-python`` with ``n`` train and ``n`` test images."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    meta = {
        b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
    }
    dump(folder / "meta", meta, protocol)
    for i, name in enumerate(["train", "test"]):
        split = {
            b"fine_labels": [(7 * j + i) % 100 for j in range(n)],
            b"coarse_labels": np.array([(3 * j + i) % 20 for j in range(n)], dtype=np.int64),
            b"data": cifar_rows(n, seed=10 + i),
        }
        dump(folder / name, split, protocol)
    return folder


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: Mapping[str, tuple[bytes, str]] = {}
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.hits.append(self.path)
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, mode = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            # Announce the full length, send half, then drop the connection.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the request log
        pass


@contextmanager
def loopback_server(routes: Mapping[str, tuple[bytes, str]]) -> Iterator[tuple[str, list[str]]]:
    """Serve ``routes`` (path -> (body, "ok" | "truncate")) on 127.0.0.1 at a free port.

    Yields ``(base_url, hits)``, ``hits`` being the requested paths. Only the loopback interface is used.
    """
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"routes": dict(routes), "hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def one_line_error(argv: list[str], capsys: Any) -> str:
    """``longtail <argv>`` run in-process must stop with exit status 2 and one line on stderr; returns that line."""
    import pytest

    from longtail.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    return err
