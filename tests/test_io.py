"""Atomic writes: file modes, stale temporary files, write errors that name the file, checkpoint validation."""

from __future__ import annotations

import errno
import io
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import longtail.io as lio
from longtail.io import TRAINER_CHECKPOINT_KEYS, clean_stale_temporaries, load_checkpoint, save_checkpoint, write_json

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and process ids")


def _state() -> dict:
    return {
        "epoch": 0,
        "config": {"loss": "ce"},
        "model": {"weight": torch.ones(2, 3)},
        "optimizer": {"state": {}, "param_groups": []},
        "criterion": {},
        "history": [{"epoch": 1, "train_loss": 0.5}],
        "train_seconds": 1.0,
        "eval_seconds": 0.5,
    }


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Sets the umask for one test and restores it (the tests of this file run in one thread)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)


# --- A1: modes ---------------------------------------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_of_a_plain_open(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    with open(tmp_path / "plain", "w"):
        pass
    write_json(tmp_path / "result.json", {"a": 1})
    save_checkpoint(tmp_path / "checkpoint.pt", _state())
    assert _mode(tmp_path / "plain") == 0o666 & ~mask
    assert _mode(tmp_path / "result.json") == 0o666 & ~mask
    assert _mode(tmp_path / "checkpoint.pt") == 0o666 & ~mask


@posix_only
def test_replacing_a_file_keeps_its_mode(tmp_path: Path, umask) -> None:
    umask(0o022)
    for path, write in [(tmp_path / "result.json", lambda p: write_json(p, {"a": 2})),
                        (tmp_path / "checkpoint.pt", lambda p: save_checkpoint(p, _state()))]:
        write(path)
        os.chmod(path, 0o640)
        write(path)
        assert _mode(path) == 0o640
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "result.json"]


# --- A2: stale temporaries ---------------------------------------------------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@posix_only
def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    host = lio._host_tag()
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = {
            "dead": f".checkpoint.pt.{host}.{dead}.0123abcd.tmp",
            "live": f".checkpoint.pt.{host}.{live.pid}.0123abcd.tmp",
            "self": f".checkpoint.pt.{host}.{os.getpid()}.0123abcd.tmp",  # another thread of this process
            "other_host": f".checkpoint.pt.elsewhere.{dead}.0123abcd.tmp",
            "other_file": f".result.json.{host}.{dead}.0123abcd.tmp",
            "legacy_old": ".checkpoint.pt.a1b2_c3d.tmp",
            "legacy_new": ".checkpoint.pt.zz99yy88.tmp",
            "unrelated": "checkpoint.pt.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        old = time.time() - 2 * 3600
        os.utime(tmp_path / names["legacy_old"], (old, old))
        removed = clean_stale_temporaries(tmp_path, "checkpoint.pt")
        assert sorted(p.name for p in removed) == sorted([names["dead"], names["legacy_old"]])
        left = {p.name for p in tmp_path.iterdir()}
        assert left == set(names.values()) - {names["dead"], names["legacy_old"]}
        # Every atomic write cleans first.
        (tmp_path / names["dead"]).write_bytes(b"partial")
        save_checkpoint(tmp_path / "checkpoint.pt", _state())
        assert names["dead"] not in {p.name for p in tmp_path.iterdir()}
        assert clean_stale_temporaries(tmp_path / "missing", "checkpoint.pt") == []
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
@posix_only
def test_sigkill_mid_write_leaves_a_temporary_that_the_next_write_removes(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from longtail.io import _atomic_write\n"
        "def write(handle):\n"
        "    handle.write(b'half a checkpoint')\n"
        "    handle.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "_atomic_write(sys.argv[1], write)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "checkpoint.pt")], capture_output=True)
    assert done.returncode == -9, done.stderr
    leftover = [p.name for p in tmp_path.iterdir()]
    assert len(leftover) == 1 and leftover[0].startswith(".checkpoint.pt.") and leftover[0].endswith(".tmp")
    save_checkpoint(tmp_path / "checkpoint.pt", _state())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


# --- A3: write errors --------------------------------------------------------------------------------------------


def _no_space(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_no_space_from_torch_save_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "save", _no_space)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path / "checkpoint.pt", _state())
    assert str(info.value) == f"could not write checkpoint.pt in {tmp_path}: no space left on device (errno 28)"
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_enforce_fail_runtime_error_becomes_an_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def enforce_fail(obj, handle):  # noqa: ANN001, ANN202
        handle.write(b"PK\x03\x04 some bytes")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", enforce_fail)
    usage = type("Usage", (), {"free": 0, "total": 1, "used": 1})
    monkeypatch.setattr(lio.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path / "checkpoint.pt", _state())
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint.pt in {tmp_path}: RuntimeError: [enforce fail")
    assert "no space left on device" in message and len(message.splitlines()) == 1
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    # With space left the message says how much, and claims no errno.
    monkeypatch.setattr(lio.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 12345}))
    with pytest.raises(OSError, match="12345 bytes free") as info:
        save_checkpoint(tmp_path / "checkpoint.pt", _state())
    assert info.value.errno is None
    assert list(tmp_path.iterdir()) == []


class _FullDisk(io.RawIOBase):
    """A file whose writes fail with ENOSPC after ``limit`` bytes, like a file on a full file system."""

    def __init__(self, raw: io.BufferedWriter, limit: int) -> None:
        self.raw_file, self.limit, self.written = raw, limit, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001
        self.written += len(data)
        if self.written > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.raw_file.write(data)

    def fileno(self) -> int:
        return self.raw_file.fileno()

    def close(self) -> None:
        self.raw_file.close()
        super().close()


@pytest.mark.parametrize("which", ["checkpoint", "json"])
def test_real_torch_save_on_a_full_disk_reports_the_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          which: str) -> None:
    # torch.save itself turns the ENOSPC of the handle into "RuntimeError: [enforce fail ...]"; the errno is kept.
    real_fdopen = os.fdopen
    monkeypatch.setattr(lio.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), limit=100))
    name = "checkpoint.pt" if which == "checkpoint" else "result.json"
    with pytest.raises(OSError) as info:
        if which == "checkpoint":
            save_checkpoint(tmp_path / name, {"weight": torch.zeros(1000)})
        else:
            write_json(tmp_path / name, {"history": list(range(1000))})
    assert str(info.value) == f"could not write {name} in {tmp_path}: no space left on device (errno 28)"
    assert list(tmp_path.iterdir()) == []


def test_permission_error_keeps_its_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args):  # noqa: ANN002, ANN202
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(lio.os, "replace", denied)
    with pytest.raises(PermissionError, match=f"could not write result.json in {tmp_path}: permission denied"):
        write_json(tmp_path / "result.json", {})
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(obj, handle):  # noqa: ANN001, ANN202
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "checkpoint.pt", _state())
    assert list(tmp_path.iterdir()) == []


# --- A4: loading -------------------------------------------------------------------------------------------------


def test_round_trip_and_required_keys(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "checkpoint.pt", _state())
    state = load_checkpoint(path)
    assert set(state) == set(TRAINER_CHECKPOINT_KEYS)
    assert torch.equal(state["model"]["weight"], torch.ones(2, 3))
    save_checkpoint(path, {"weights": torch.zeros(2)})
    assert set(load_checkpoint(path, required=())) == {"weights"}
    assert set(load_checkpoint(path, required=["weights"])) == {"weights"}


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    good = io.BytesIO()
    torch.save(_state(), good)
    data = good.getvalue()
    files = {
        "empty": (b"", "the file is empty"),
        "random": (np.random.default_rng(0).bytes(1000), "not a torch.save archive"),
        "truncated": (data[: len(data) // 2], "truncated or corrupt archive"),
        "pickle": (pickle.dumps(_state()), "not a torch.save archive"),
    }
    out = {}
    for name, (content, reason) in files.items():
        (folder / name).write_bytes(content)
        out[name] = (folder / name, reason)
    torch.save({}, folder / "empty_dict")
    out["empty_dict"] = (folder / "empty_dict", "it lacks the keys ['epoch', 'config', 'model'")
    torch.save([1, 2], folder / "list")
    out["list"] = (folder / "list", "expected a dict, got list")
    torch.save({**_state(), "epoch": np.int64(3)}, folder / "numpy")
    out["numpy"] = (folder / "numpy", "weights_only loading refuses its content (Unsupported global: GLOBAL numpy")
    return out


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "pickle", "empty_dict", "list", "numpy"])
def test_not_a_checkpoint_is_one_line_naming_the_file(tmp_path: Path, kind: str) -> None:
    path, reason = _bad_files(tmp_path)[kind]
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a longtail checkpoint: ")
    assert reason in message
    assert len(message.splitlines()) == 1
    assert "weights_only set to False" not in message and "Re-running" not in message
    assert info.value.__cause__ is None


def test_missing_checkpoint_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
