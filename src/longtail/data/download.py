"""Verified, atomic download of the Fashion-MNIST files (standard library only).

Each file is streamed into a temporary file in the destination folder, checked, and only then renamed into place
with ``os.replace`` (atomic on POSIX and Windows within one folder). Any failure (network error, truncated
response, wrong hash, corrupt gzip, a deadline passed) removes the temporary file, so the folder never holds a partial
or unverified file under the real name. A process killed mid-download (SIGKILL, SIGTERM) cannot remove its
temporary file; the next download of the same file does (:func:`longtail.io.clean_stale_temporaries`).

Two clocks bound a download: ``timeout``, how long one read may wait for data, and ``deadline``, how long the
whole file may take. A server that sends one byte every few seconds never trips the first; the second stops it.

What the pinned hashes cover: the SHA-256 of each file's *decompressed* IDX content, not of the ``.gz`` bytes.
Gzip output depends on the compressor and its header timestamp, and real copies differ: Debian's
``dataset-fashion-mnist`` files are re-compressed (their gzip MD5s differ from the ones Zalando publishes), yet they
decompress to exactly the published data. Pinning the content accepts every faithful copy (the Zalando bucket,
GitHub, Debian, a local mirror) and nothing else. The values below were computed from the Debian files and agree
with the published MD5s of the decompressed files (train images ``f4a8712d7a061bf5bd6d2ca38dc4d50a``, train labels
``9018921c3c673c538a1fc5bad174d6f9``, test images ``8181f5470baa50b63fa0f6fddb340f0a``, test labels
``15d484375f8d13e6eb1aabb0c3f46965``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from ..checks import check_real
from ..io import clean_stale_temporaries, create_temporary
from .idx import GZIP_MAGIC


def default_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/longtail/<name>``, or ``~/.cache/longtail/<name>`` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "longtail" / name


__all__ = [
    "default_cache_dir",
    "DEFAULT_DOWNLOAD_DEADLINE",
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SHA256",
    "FASHION_MNIST_URL",
    "FASHION_MNIST_URL_ENV",
    "content_sha256",
    "download_fashion_mnist",
    "download_verified",
]

#: Canonical location of the original files (Zalando Research's S3 bucket).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: Environment variable overriding :data:`FASHION_MNIST_URL` (e.g. a local mirror).
FASHION_MNIST_URL_ENV = "LONGTAIL_FASHION_MNIST_URL"

FASHION_MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: SHA-256 of the decompressed content of each file (see the module docstring for why not of the gzip bytes).
FASHION_MNIST_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }
)

#: Cap on both the downloaded and the decompressed size of one file (the largest Fashion-MNIST file is 47 MB
#: decompressed); stops a misbehaving server or a gzip bomb from filling the disk or burning CPU.
DEFAULT_MAX_DOWNLOAD_BYTES = 256 << 20

#: Seconds one file's download may take in all (connection, headers and body), whatever the per-read timeout.
DEFAULT_DOWNLOAD_DEADLINE = 300.0

_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value.lower()):
        raise ValueError(f"sha256 must be 64 hex digits (the expected SHA-256 of {what}); got {value!r}")
    return value.lower()


def content_sha256(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> str:
    """Hex SHA-256 of a file's content, decompressed first when it is gzip (detected by its magic bytes).

    Raises:
        ValueError: corrupt or truncated gzip stream, or more than ``max_bytes`` of content.
    """
    digest = hashlib.sha256()
    total = 0
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") if compressed else contextlib.nullcontext(raw) as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ValueError(f"{path}: content exceeds max_bytes={max_bytes}")
                    digest.update(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip stream: {exc}") from exc
    return digest.hexdigest()


class _Watchdog:
    """Shuts down the download's sockets when the deadline passes, which wakes a read blocked on them.

    The per-read ``timeout`` restarts with every byte received, so a server trickling bytes never trips it; a
    deadline checked between reads is not enough either, since one ``read`` of a large chunk waits for the whole
    chunk. Shutting the socket down from a timer thread ends that read at once.
    """

    def __init__(self, deadline: float) -> None:
        self.expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline, self._fire)
        self._timer.daemon = True

    def track(self, sock: Any) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired.is_set():
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.shutdown(socket.SHUT_RDWR)

    def _fire(self) -> None:
        with self._lock:
            self.expired.set()
            for sock in self._sockets:
                self._shutdown(sock)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _tracked(base: type[http.client.HTTPConnection], watchdog: _Watchdog) -> type[http.client.HTTPConnection]:
    """``base`` whose connected socket is handed to ``watchdog``."""

    class Tracked(base):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            super().connect()
            watchdog.track(self.sock)

    return Tracked


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_tracked(http.client.HTTPConnection, self._watchdog), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        kwargs: dict[str, Any] = {"context": self._context}  # type: ignore[attr-defined]
        if hasattr(self, "_check_hostname"):  # Python 3.10 and 3.11 pass it separately
            kwargs["check_hostname"] = self._check_hostname
        return self.do_open(_tracked(http.client.HTTPSConnection, self._watchdog), req, **kwargs)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    # Only HTTP(S) handlers (no file:, ftp:, data:), so neither the URL nor a redirect can reach another scheme.
    # Built per call so proxy settings are read from the environment at call time.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _HTTPHandler(watchdog),
        _HTTPSHandler(watchdog),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _fetch(url: str, out: BinaryIO, *, timeout: float, deadline: float, max_bytes: int) -> int:
    """Stream ``url`` into ``out``; return the byte count.

    Raises:
        ValueError: a short or oversized body.
        TimeoutError: no data for ``timeout`` seconds, or the download took longer than ``deadline``; names the URL.
        OSError: any other network failure, naming the URL.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "longtail-data"})
    declared: int | None = None
    received = 0
    end = time.monotonic() + deadline
    passed = False  # the deadline, seen between two reads

    def too_slow() -> TimeoutError:
        return TimeoutError(
            f"{url}: download did not finish within deadline={deadline:g} s ({received} bytes received); the "
            "server is stalled or very slow (pass a larger deadline for a slow connection)"
        )

    def stalled() -> TimeoutError:
        return TimeoutError(f"{url}: no data for timeout={timeout:g} s ({received} bytes received)")

    with _Watchdog(deadline) as watchdog:
        try:
            with _opener(watchdog).open(request, timeout=timeout) as response:
                header = response.headers.get("Content-Length")
                if header is not None and header.strip().isdigit():
                    declared = int(header)
                    if declared > max_bytes:
                        raise ValueError(f"{url}: server announces {declared} bytes, above max_bytes={max_bytes}")
                while chunk := response.read(_CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise ValueError(f"{url}: response exceeds max_bytes={max_bytes}")
                    out.write(chunk)
                    if watchdog.expired.is_set() or time.monotonic() > end:
                        passed = True
                        break
        except ValueError:
            raise
        except http.client.IncompleteRead as exc:
            if watchdog.expired.is_set():
                raise too_slow() from exc
            raise ValueError(f"{url}: truncated download ({exc})") from exc
        except urllib.error.HTTPError as exc:
            raise OSError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            if watchdog.expired.is_set():
                raise too_slow() from exc
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise stalled() from exc
            raise OSError(f"could not download {url}: {str(reason) or type(reason).__name__}") from exc
        if passed or watchdog.expired.is_set():  # (the watchdog's shutdown ends the body early)
            raise too_slow()
    # http.client returns a short body without raising when the server closes early, so compare ourselves.
    if declared is not None and received != declared:
        raise ValueError(f"{url}: truncated download: received {received} of {declared} bytes")
    return received


def download_verified(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    timeout: float = 60.0,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    deadline: float = DEFAULT_DOWNLOAD_DEADLINE,
) -> Path:
    """Download ``url`` to ``dest`` atomically, accepting it only if its content has SHA-256 ``sha256``.

    If ``dest`` already exists with the right content nothing is fetched; if it exists with wrong content it is
    replaced. The hash is :func:`content_sha256` (of the decompressed data for gzip files).

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: final path; its folder is created if needed and also holds the temporary file.
        sha256: expected hex digest (64 hex digits, any case).
        timeout: socket timeout in seconds: the longest one read may wait for data.
        max_bytes: cap on downloaded and on decompressed bytes.
        deadline: seconds the whole download may take (connection, headers and body), however steadily the
            server sends; default :data:`DEFAULT_DOWNLOAD_DEADLINE`.

    Returns:
        ``Path(dest)``.

    Raises:
        ValueError: bad URL scheme, digest string, ``timeout`` or ``deadline``; truncated or oversized response,
            corrupt gzip, hash mismatch. No file is left behind (neither ``dest`` nor a temporary file).
        TimeoutError: no data for ``timeout`` seconds, or the download passed its ``deadline``; names the URL.
        OSError: network failure or HTTP error status.
    """
    timeout = check_real("timeout", timeout, low=0.0, low_open=True, finite=True)
    deadline = check_real("deadline", deadline, low=0.0, low_open=True, finite=True)
    expected = _check_sha256(sha256, url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"url must be http:// or https://; got {url!r}")
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        # A stale or corrupt copy is not an error: it is fetched again and replaced atomically below.
        with contextlib.suppress(ValueError):
            if content_sha256(target, max_bytes=max_bytes) == expected:
                return target

    # .part files of downloads killed before they could clean up (SIGKILL, SIGTERM); a live download's is kept.
    clean_stale_temporaries(target.parent, target.name, suffix=".part")
    fd, tmp_name = create_temporary(target, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, timeout=timeout, deadline=deadline, max_bytes=max_bytes)
            out.flush()
            os.fsync(out.fileno())
        got = content_sha256(tmp_name, max_bytes=max_bytes)
        if got != expected:
            raise ValueError(f"{url}: SHA-256 mismatch: expected {expected}, got {got} (corrupt or wrong file)")
        # A dataset cache is usually shared (read-only) with other users, whatever the umask.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        # BaseException too: a Ctrl-C mid-download must not leave a .part file behind either.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return target


def download_fashion_mnist(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    deadline: float = DEFAULT_DOWNLOAD_DEADLINE,
) -> Path:
    """Download the four Fashion-MNIST files into ``cache_dir`` (files already present and valid are kept).

    Args:
        cache_dir: destination folder; default ``default_cache_dir("fashion-mnist")``.
        base_url: folder URL the four file names are appended to; default ``$LONGTAIL_FASHION_MNIST_URL`` if set,
            else :data:`FASHION_MNIST_URL`.
        sha256: expected content SHA-256 per file name (all four names of :data:`FASHION_MNIST_FILES`); default
            the pinned :data:`FASHION_MNIST_SHA256`. Meant for mirrors of modified data and for tests.
        timeout: socket timeout per request, seconds.
        max_bytes: per-file cap on downloaded and decompressed bytes.
        deadline: seconds each file's download may take in all.

    Returns:
        The folder holding the four verified files.

    Raises:
        ValueError: a missing name in ``sha256``, or a file that fails verification (see
            :func:`download_verified`); files verified before the failure stay, the failing one leaves nothing.
        OSError: network failure (TimeoutError: a stalled server or a passed deadline).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("fashion-mnist")
    base = base_url or os.environ.get(FASHION_MNIST_URL_ENV) or FASHION_MNIST_URL
    hashes = FASHION_MNIST_SHA256 if sha256 is None else sha256
    missing = [name for name in FASHION_MNIST_FILES if name not in hashes]
    if missing:
        raise ValueError(f"sha256 must give a digest for each of {FASHION_MNIST_FILES}; got none for {missing}")
    for name in FASHION_MNIST_FILES:
        download_verified(
            f"{base.rstrip('/')}/{name}", folder / name, hashes[name], timeout=timeout, max_bytes=max_bytes,
            deadline=deadline,
        )
    return folder
