"""Verified atomic download, exercised against a loopback HTTP server only (never any other address)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import longtail.data.datasets as datasets_module
import longtail.io as lio
from data_helpers import idx_bytes, loopback_server, make_mnist_like
from longtail.data import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    FASHION_MNIST_SHA256,
    FASHION_MNIST_URL,
    content_sha256,
    download_fashion_mnist,
    download_verified,
    load_fashion_mnist,
)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a connection to a non-loopback host, and bypass proxies."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    real = socket.create_connection

    def guarded(address, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if address[0] not in LOOPBACK:
            raise AssertionError(f"test tried to connect to {address!r}; only loopback is allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


@pytest.fixture
def fake_files(tmp_path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Small gzipped IDX files under the four Fashion-MNIST names, and their content SHA-256 values."""
    arrays = make_mnist_like(tmp_path / "src", n_train=20, n_test=10)
    bodies = {f"{stem}.gz": gzip.compress(idx_bytes(a), mtime=0) for stem, a in arrays.items()}
    hashes = {f"{stem}.gz": hashlib.sha256(idx_bytes(a)).hexdigest() for stem, a in arrays.items()}
    assert set(bodies) == set(FASHION_MNIST_FILES)
    return bodies, hashes


def routes(bodies: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    return {f"/{name}": (body, "ok") for name, body in bodies.items()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_defaults() -> None:
    assert FASHION_MNIST_URL == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    assert set(FASHION_MNIST_SHA256) == set(FASHION_MNIST_FILES)
    assert all(len(h) == 64 for h in FASHION_MNIST_SHA256.values())


def test_download_and_load(tmp_path: Path, fake_files, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    cache = tmp_path / "cache"
    with loopback_server(routes(bodies)) as (url, hits):
        assert download_fashion_mnist(cache, base_url=url, sha256=hashes, timeout=10) == cache
        assert sorted(hits) == sorted(f"/{n}" for n in FASHION_MNIST_FILES)
        assert leftovers(cache) == sorted(FASHION_MNIST_FILES)  # no temporary files
        for name, body in bodies.items():
            assert (cache / name).read_bytes() == body
        # Valid files already present are not fetched again.
        download_fashion_mnist(cache, base_url=url.rstrip("/"), sha256=hashes, timeout=10)
        assert len(hits) == 4
    monkeypatch.delenv("LONGTAIL_DATA", raising=False)
    data = load_fashion_mnist(cache)
    assert data.images.shape == (20, 1, 28, 28)


def test_base_url_from_environment(tmp_path: Path, fake_files, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    with loopback_server(routes(bodies)) as (url, hits):
        monkeypatch.setenv("LONGTAIL_FASHION_MNIST_URL", url)
        download_fashion_mnist(tmp_path / "c", sha256=hashes, timeout=10)
        assert len(hits) == 4


def test_wrong_content_is_rejected_and_removed(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    name = "train-labels-idx1-ubyte.gz"
    bad = dict(bodies)
    bad[name] = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")  # a valid gzip of the wrong data
    cache = tmp_path / "cache"
    with loopback_server(routes(bad)) as (url, _):
        with pytest.raises(ValueError, match=f"{name}: SHA-256 mismatch: expected {hashes[name]}"):
            download_fashion_mnist(cache, base_url=url, sha256=hashes, timeout=10)
    # The file verified before the failure stays; the failing one leaves nothing, not even a temporary file.
    assert leftovers(cache) == ["train-images-idx3-ubyte.gz"]


def test_corrupt_gzip_is_rejected_and_removed(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    name = "train-images-idx3-ubyte.gz"
    body = bytearray(bodies[name])
    body[len(body) // 2] ^= 0xFF
    cache = tmp_path / "cache"
    with loopback_server({f"/{name}": (bytes(body), "ok")}) as (url, _):
        with pytest.raises(ValueError):
            download_verified(url + name, cache / name, hashes[name], timeout=10)
    assert leftovers(cache) == []


def test_truncated_response_is_rejected_and_removed(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    name = "t10k-images-idx3-ubyte.gz"
    cache = tmp_path / "cache"
    with loopback_server({f"/{name}": (bodies[name], "truncate")}) as (url, hits):
        with pytest.raises(ValueError, match=f"truncated download: received {len(bodies[name]) // 2} of "):
            download_verified(url + name, cache / name, hashes[name], timeout=10)
        assert hits == [f"/{name}"]
    assert leftovers(cache) == []


def test_http_error_leaves_nothing(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    _, hashes = fake_files
    with loopback_server({}) as (url, _):
        with pytest.raises(OSError, match="could not download .*missing.gz"):
            download_verified(url + "missing.gz", tmp_path / "c" / "x.gz", hashes["t10k-labels-idx1-ubyte.gz"])
    assert leftovers(tmp_path / "c") == []


def test_stale_file_is_replaced(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    name = "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / name
    dest.write_bytes(b"garbage")
    with loopback_server({f"/{name}": (bodies[name], "ok")}) as (url, hits):
        download_verified(url + name, dest, hashes[name].upper(), timeout=10)
        assert hits == [f"/{name}"]
    assert dest.read_bytes() == bodies[name]
    assert leftovers(tmp_path) == ["src", name]


def test_size_cap(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    bodies, hashes = fake_files
    name = "train-images-idx3-ubyte.gz"
    with loopback_server({f"/{name}": (bodies[name], "ok")}) as (url, _):
        with pytest.raises(ValueError, match="max_bytes=100"):
            download_verified(url + name, tmp_path / "c" / name, hashes[name], max_bytes=100, timeout=10)
    assert leftovers(tmp_path / "c") == []


def test_argument_errors(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    _, hashes = fake_files
    digest = hashes["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(ValueError, match=r"sha256 must be 64 hex digits \(the expected SHA-256 of .*\); got 'abc'"):
        download_verified("http://127.0.0.1:9/x", tmp_path / "x", "abc")
    with pytest.raises(ValueError, match="url must be http:// or https://; got 'file://"):
        download_verified(f"file://{tmp_path}/x", tmp_path / "y", digest)
    with pytest.raises(ValueError, match=r"sha256 must give a digest for each of .*; got none for \['train-images"):
        download_fashion_mnist(tmp_path, base_url="http://127.0.0.1:9/", sha256={"t10k-labels-idx1-ubyte.gz": digest})


def test_content_hash_ignores_compression(tmp_path: Path) -> None:
    payload = b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02"
    (tmp_path / "plain").write_bytes(payload)
    (tmp_path / "gz").write_bytes(gzip.compress(payload, mtime=1))
    (tmp_path / "gz9").write_bytes(gzip.compress(payload, compresslevel=1, mtime=2))
    expected = hashlib.sha256(payload).hexdigest()
    assert {content_sha256(tmp_path / n) for n in ("plain", "gz", "gz9")} == {expected}
    (tmp_path / "cut").write_bytes(gzip.compress(payload)[:-6])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        content_sha256(tmp_path / "cut")


needs_debian = pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST_DIR.is_dir(),
    reason=f"{DEBIAN_FASHION_MNIST_DIR} absent (install Debian's dataset-fashion-mnist)",
)


@needs_debian
def test_load_with_download_verifies_real_files_against_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Debian files served over loopback must pass the pinned (default) hashes end to end.
    real = {f"/{n}": ((DEBIAN_FASHION_MNIST_DIR / n).read_bytes(), "ok") for n in FASHION_MNIST_FILES}
    monkeypatch.delenv("LONGTAIL_DATA", raising=False)
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    with loopback_server(real) as (url, hits):
        monkeypatch.setenv("LONGTAIL_FASHION_MNIST_URL", url)
        test = load_fashion_mnist(tmp_path / "data", train=False, download=True)
        assert len(hits) == 4
    assert test.images.shape == (10000, 1, 28, 28)
    assert leftovers(tmp_path / "data") == sorted(FASHION_MNIST_FILES)


# --- deadlines, read timeouts and stale .part files -------------------------------------------------------------


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """``/trickle``: headers at once, then one body byte every 0.2 s; ``/slow-headers``: the header lines one
    byte every 0.2 s; ``/stall``: headers, then silence."""

    stop: threading.Event
    body = bytes(200)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        try:
            if self.path == "/slow-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for byte in b"X-Padding: " + b"a" * 1000:
                    if self.stop.wait(0.2):
                        return
                    self.wfile.write(bytes([byte]))
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            if self.path == "/stall":
                self.stop.wait(30)
                return
            for byte in self.body:
                if self.stop.wait(0.2):
                    return
                self.wfile.write(bytes([byte]))
        except OSError:  # the client gave up: what these tests expect
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def slow_server() -> Iterator[str]:
    """A loopback server (127.0.0.1 only) whose responses are too slow; yields its base URL."""
    stop = threading.Event()
    handler = type("SlowHandler", (_SlowHandler,), {"stop": stop})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["trickle", "slow-headers"])
def test_deadline_stops_a_trickling_server(tmp_path: Path, path: str) -> None:
    # One byte every 0.2 s never trips the 5 s read timeout; the 1 s deadline stops it.
    digest = hashlib.sha256(_SlowHandler.body).hexdigest()
    with slow_server() as url:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            download_verified(url + path, tmp_path / "c" / "x.gz", digest, timeout=5, deadline=1.0)
        elapsed = time.monotonic() - started
    assert str(info.value).startswith(f"{url}{path}: download did not finish within deadline=1 s (")
    assert isinstance(info.value, OSError)
    assert 0.9 < elapsed < 3.5
    assert leftovers(tmp_path / "c") == []


def test_read_timeout_names_the_url(tmp_path: Path) -> None:
    digest = hashlib.sha256(_SlowHandler.body).hexdigest()
    with slow_server() as url:
        with pytest.raises(TimeoutError) as info:
            download_verified(url + "stall", tmp_path / "c" / "x.gz", digest, timeout=0.5, deadline=30)
    assert str(info.value) == f"{url}stall: no data for timeout=0.5 s (0 bytes received)"
    assert leftovers(tmp_path / "c") == []


def test_deadline_and_timeout_are_checked(tmp_path: Path, fake_files) -> None:  # noqa: ANN001
    digest = fake_files[1]["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(ValueError, match=r"deadline must be in \(0, inf\]; got 0.0"):
        download_verified("http://127.0.0.1:9/x", tmp_path / "x", digest, deadline=0)
    with pytest.raises(ValueError, match="deadline must be finite; got inf"):
        download_verified("http://127.0.0.1:9/x", tmp_path / "x", digest, deadline=float("inf"))
    with pytest.raises(ValueError, match=r"timeout must be in \(0, inf\]; got -1.0"):
        download_verified("http://127.0.0.1:9/x", tmp_path / "x", digest, timeout=-1)


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_part_file_of_a_killed_download_is_removed_by_the_next(
    tmp_path: Path, fake_files, sig: int  # noqa: ANN001
) -> None:
    bodies, hashes = fake_files
    name = "t10k-labels-idx1-ubyte.gz"
    cache = tmp_path / "cache"
    script = (
        "import sys\n"
        "from longtail.data import download_verified\n"
        "download_verified(sys.argv[1], sys.argv[2], sys.argv[3], timeout=30, deadline=60)\n"
    )
    with slow_server() as url:
        child = subprocess.Popen([sys.executable, "-c", script, url + "trickle", str(cache / name), hashes[name]])
        try:
            give_up = time.monotonic() + 60  # until the child has created its .part file (importing torch is slow)
            while not any(p.endswith(".part") for p in leftovers(cache)) and time.monotonic() < give_up:
                assert child.poll() is None, "the download ended before it could be killed"
                time.sleep(0.02)
            child.send_signal(sig)
            assert child.wait(timeout=10) == -sig
        finally:
            child.kill()
            child.wait()
    [part] = leftovers(cache)
    assert part.startswith(f".{name}.") and part.endswith(".part")
    # A .part of a live download (this process) and one of another host are kept.
    live = f".{name}.{lio._host_tag()}.{os.getpid()}.00ff00ff.part"
    remote = f".{name}.elsewhere.1.00ff00ff.part"
    (cache / live).write_bytes(b"x")
    (cache / remote).write_bytes(b"x")
    with loopback_server(routes(bodies)) as (good, _):
        download_verified(good + name, cache / name, hashes[name], timeout=10)
    assert leftovers(cache) == sorted([name, live, remote])
    assert (cache / name).read_bytes() == bodies[name]
