"""Atomic writes: a crash or SIGKILL leaves either the old file or the new one, never a torn one.

Each write goes to a temporary file ``.<name>.<host>.<pid>.<token>.tmp`` in the destination folder, is flushed and
fsync'ed, and is then renamed over the destination with ``os.replace`` (atomic within one folder). A writer killed
before the rename (SIGKILL, power loss) leaves its temporary file behind; the next write of the same path removes
it (:func:`clean_stale_temporaries`) once the process named in it is gone.

The final file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` minus the umask), or keeps
the permissions of the file it replaces. A failed write (a full disk, an I/O error) raises one ``OSError`` that
names the file and the cause, and leaves no temporary file.

For fault-injection tests only, the environment variable ``LONGTAIL_TEST_WRITE_DELAY`` (seconds) makes every
atomic write pause that long between its complete temporary file and the rename, so a test can kill a writer
inside the write; it is unset in normal use, and then costs nothing.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_json(folder / "result.json", {"accuracy": 0.5}).name
    'result.json'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary file left
    ['result.json']
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Collection
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "TRAINER_CHECKPOINT_KEYS",
    "clean_stale_temporaries",
    "create_temporary",
    "load_checkpoint",
    "save_checkpoint",
    "write_bytes",
    "write_json",
    "write_text",
]

#: The keys every checkpoint written by :func:`longtail.train.train` holds (checked by :func:`load_checkpoint`). The
#: run folder's module :mod:`longtail.train.run_folder`, which writes them, re-exports it; it is defined here because
#: it is :func:`load_checkpoint`'s default and this module cannot import the ``train`` package (which imports it).
TRAINER_CHECKPOINT_KEYS: tuple[str, ...] = (
    "epoch",
    "config",
    "model",
    "optimizer",
    "criterion",
    "history",
    "train_seconds",
    "eval_seconds",
)

# Temporary files written before this naming scheme (tempfile.mkstemp: 8 characters of this alphabet) carry no
# process id; they are removed once they have not been touched for this long (no write takes an hour).
_LEGACY_STALE_SECONDS = 3600.0

#: Fault-injection tests only: seconds every atomic write sleeps before its rename (see the module docstring).
TEST_WRITE_DELAY_ENV = "LONGTAIL_TEST_WRITE_DELAY"

_ZIP_MAGIC = b"PK\x03\x04"  # every torch.save file (the zip format, the default since torch 1.6)


def _host_tag() -> str:
    """This machine's name in the form allowed in temporary names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def _temporary_pattern(name: str, suffix: str) -> re.Pattern[str]:
    return re.compile(
        rf"\.{re.escape(name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]+{re.escape(suffix)}"
    )


def _legacy_pattern(name: str, suffix: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")


def _process_is_gone(pid: int) -> bool:
    """True only when no process ``pid`` exists on this machine (any doubt counts as alive)."""
    if pid <= 0 or pid == os.getpid():
        # 0 and negative ids name process groups for os.kill; our own id may be another thread writing.
        return False
    if os.name != "posix":
        # os.kill(pid, 0) on Windows terminates the process instead of probing it.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's process
        return False
    return False


def clean_stale_temporaries(folder: str | os.PathLike[str], name: str, *, suffix: str = ".tmp") -> list[Path]:
    """Removes the temporary files that interrupted atomic writes of ``folder / name`` left behind.

    A temporary file ``.<name>.<host>.<pid>.<token><suffix>`` (see :func:`create_temporary`) is removed only
    when it was made on this machine by a process that no longer exists, so a concurrent live writer never loses
    its file. Temporary files of the older ``tempfile.mkstemp`` naming (no process id) are removed once untouched
    for an hour. Called at the start of every atomic write (and of every download, with ``suffix=".part"``);
    returns the removed paths.
    """
    folder = Path(folder)
    current, legacy = _temporary_pattern(name, suffix), _legacy_pattern(name, suffix)
    host = _host_tag()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # a missing or unreadable folder: nothing to clean (the write itself reports real errors)
        return removed
    for entry in entries:
        match = current.fullmatch(entry.name)
        if match is not None:
            stale = match["host"] == host and _process_is_gone(int(match["pid"]))
        elif legacy.fullmatch(entry.name) is not None:
            try:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_STALE_SECONDS
            except OSError:
                continue
        else:
            continue
        if stale and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:  # another writer removed it first, or it is not ours to remove: best effort
                continue
            removed.append(Path(entry.path))
    return removed


def create_temporary(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> tuple[int, str]:
    """A new temporary file ``.<name>.<host>.<pid>.<token><suffix>`` beside ``path``: ``(fd, its path)``.

    Its name carries this machine's name and this process's id, so :func:`clean_stale_temporaries` can tell a
    file whose writer is gone from the file of a live writer.

    Created with ``os.open(..., 0o666)``, as ``open(path, "w")`` creates files, so the kernel applies the umask
    (and any default ACL of the folder) itself: the final file gets exactly the mode a plain write would give.
    ``tempfile.mkstemp`` creates 0600 files instead. Reading the umask to compute the mode ourselves would need
    ``os.umask(0); os.umask(old)``, which changes the process-wide umask for a moment, so a file another thread
    creates in that moment gets mode 0666/0777: letting the kernel apply it needs no read and has no race.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    path = Path(path)
    prefix = f".{path.name}.{_host_tag()}.{os.getpid()}."
    for _ in range(100):
        tmp = os.path.join(path.parent, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"could not create a unique temporary file for {path}")


class _RecordingWriter:
    """A file handle that remembers the first ``OSError`` of a ``write``.

    ``torch.save`` turns a failed write (``ENOSPC``) into ``RuntimeError: [enforce fail at inline_container.cc]``,
    losing the errno; the recorded error gives it back.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise

    def flush(self) -> None:
        self._handle.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _os_error_in(exc: BaseException | None, recorded: OSError | None) -> OSError | None:
    """The OSError behind ``exc``: ``exc`` itself, one in its cause / context chain, or the recorded one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return recorded


def _write_error(path: Path, exc: BaseException, recorded: OSError | None) -> OSError:
    """One OSError naming the file, its folder and what happened (errno kept, subclass as for that errno)."""
    where = f"could not write {path.name} in {path.parent}"
    cause = _os_error_in(exc, recorded)
    if cause is not None:
        reason = (cause.strerror or os.strerror(cause.errno)).strip()
        message = f"{where}: {reason[:1].lower()}{reason[1:]} (errno {cause.errno})"
        code = cause.errno
    else:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        message = f"{where}: {type(exc).__name__}: {first_line}"
        code = None
        with suppress(OSError):
            free = shutil.disk_usage(path.parent).free
            if free == 0:
                message += f"; no space left on device ({path.parent} has 0 bytes free)"
                code = errno.ENOSPC
            else:
                message += f" ({free} bytes free in {path.parent})"
    # The subclass Python picks for the errno (PermissionError for EACCES ...), with the message as its str().
    cls = type(OSError(code, "")) if code is not None else OSError
    error = cls(message)
    error.errno = code
    return error


def _test_write_delay() -> None:
    """Sleeps ``$LONGTAIL_TEST_WRITE_DELAY`` seconds when a fault-injection test sets it (a window to kill in)."""
    value = os.environ.get(TEST_WRITE_DELAY_ENV)
    if value:
        with suppress(ValueError):
            time.sleep(max(0.0, float(value)))


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path.parent, path.name)
    tmp: str | None = None
    writer: _RecordingWriter | None = None
    try:
        try:
            fd, tmp = create_temporary(path)
            with os.fdopen(fd, "wb") as handle:
                with suppress(FileNotFoundError):
                    # Replacing a file keeps its permissions (a user who made result.json 0640 keeps 0640).
                    os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
                writer = _RecordingWriter(handle)
                write(writer)  # type: ignore[arg-type]
                handle.flush()
                os.fsync(handle.fileno())
            _test_write_delay()
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            raise _write_error(path, exc, writer.error if writer is not None else None) from exc
    except BaseException:
        # BaseException too: a Ctrl-C mid-write must not leave a temporary file behind either.
        if tmp is not None:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Writes ``data`` as indented JSON (NaN refused: JSON has none) atomically.

    Raises:
        ValueError, TypeError: ``data`` is not JSON (nothing is written).
        OSError: the write failed (full disk, I/O error); the message names the file.
    """
    text = json.dumps(data, indent=2, allow_nan=False, sort_keys=False) + "\n"
    return _atomic_write(path, lambda handle: handle.write(text.encode()))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` (UTF-8) atomically, like :func:`write_json`."""
    return write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes ``data`` atomically, like :func:`write_json` (a PNG, a CSV's bytes)."""
    return _atomic_write(path, lambda handle: handle.write(data))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """``torch.save`` atomically; the state must load with ``weights_only=True`` (tensors and plain data).

    Raises:
        OSError: the write failed (full disk, I/O error); the message names the file and the cause.
    """
    return _atomic_write(path, lambda handle: torch.save(state, handle))


def _not_a_checkpoint(path: Path, reason: str) -> ValueError:
    return ValueError(f"{path} is not a longtail checkpoint: {reason}")


def _refusal(exc: BaseException) -> str:
    """The one informative line of torch's weights-only refusal (never its advice to drop weights_only)."""
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    detail = match[1] if match else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return detail.split(" was not an allowed global")[0].strip().rstrip(".")


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    required: Collection[str] = TRAINER_CHECKPOINT_KEYS,
) -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True``: no pickled code is ever executed.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: as for ``torch.load``.
        required: keys the checkpoint must hold; default :data:`TRAINER_CHECKPOINT_KEYS` (the trainer's
            checkpoints); ``()`` accepts any dict.

    Raises:
        ValueError: the file is empty, not a ``torch.save`` archive, truncated or corrupt, holds objects beyond
            tensors and plain data, is not a dict, or lacks a ``required`` key; one line naming the file.
        FileNotFoundError, OSError: the file cannot be read.
    """
    path = Path(path)
    required = tuple(required)
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise _not_a_checkpoint(path, "the file is empty (an interrupted copy?)")
    if head != _ZIP_MAGIC:
        raise _not_a_checkpoint(path, f"not a torch.save archive (it starts with 0x{head.hex()}, not a zip header)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _not_a_checkpoint(
            path, f"weights_only loading refuses its content ({_refusal(exc)}); a longtail checkpoint holds only "
            "tensors and plain data"
        ) from None
    except (OSError, MemoryError):
        raise  # the file cannot be read: not a question of its content
    except Exception as exc:
        if isinstance(exc, RuntimeError) and "deserialize object on" in str(exc):
            raise  # map_location names a device this machine lacks: the file is fine
        # A damaged archive fails in many ways (RuntimeError from the zip reader, UnicodeDecodeError, EOFError,
        # ValueError, KeyError ... from the records): all of them mean the same thing here.
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first_sentence = first_line.split(". ")[0].rstrip(".")
        reason = f"truncated or corrupt archive ({type(exc).__name__}: {first_sentence})"
        raise _not_a_checkpoint(path, reason) from None
    if not isinstance(state, dict):
        raise _not_a_checkpoint(path, f"expected a dict, got {type(state).__name__}")
    missing = [key for key in required if key not in state]
    if missing:
        raise _not_a_checkpoint(
            path, f"it lacks the keys {missing} (a checkpoint of longtail.train holds {list(required)}; this one "
            f"holds {sorted(map(str, state))[:10]})"
        )
    return state
