"""Packaging: what `pip install` gives someone else's project, and lazy submodule access.

The build tests copy the checkout (less VCS, venvs, caches and run outputs) to a temporary folder and build there,
so they never write into the repository; they build the sdist with setuptools' PEP 517 hook and the wheel with
`pip wheel --no-build-isolation` (nothing is downloaded: setuptools comes from this venv), install the wheel into a
fresh venv that sees this environment's torch and numpy through a folder of links (so torch is never resolved from
an index), and run a few of the sdist's own tests, from the unpacked sdist, against the installed wheel.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import longtail

ROOT = Path(__file__).resolve().parents[1]
NAME = f"longtail-{longtail.__version__}"

# Not part of any distribution; skipped when copying the checkout to build from it.
_TOP_LEVEL_SKIP = {".git", ".venv", "venv", "build", "dist", "runs", "data", "benchmarks"}
_ANYWHERE_SKIP = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", ".tox", ".nox"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"} and not k.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", **extra)
    return env


def _run(args: list[str], cwd: Path, **extra: str) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(**extra), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _copy_checkout(dst: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in _ANYWHERE_SKIP or n.endswith(".egg-info")
                or (Path(folder, n) / "pyvenv.cfg").exists()}
        if Path(folder) == ROOT:
            skip |= _TOP_LEVEL_SKIP & set(names)
        return skip

    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)
    return dst


def _build_wheel(source: Path, out: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source],
         cwd=source)
    (wheel,) = out.glob("longtail-*.whl")
    return wheel


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, f"the packaging tests need setuptools>=77 (PEP 639 licenses); found {setuptools.__version__}"
    base = tmp_path_factory.mktemp("packaging")
    checkout = _copy_checkout(base / "checkout")
    (base / "sdist").mkdir()
    name = _run([sys.executable, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))",
                 base / "sdist"], cwd=checkout).strip().splitlines()[-1]
    sdist = base / "sdist" / name
    with tarfile.open(sdist) as tar:
        tar.extractall(base / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    unpacked = base / "unpacked" / NAME
    return {
        "base": base,
        "sdist": sdist,
        "unpacked": unpacked,
        "wheel": _build_wheel(checkout, base / "wheel"),
        "wheel_from_sdist": _build_wheel(unpacked, base / "wheel_from_sdist"),
    }


def _requirement_closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need to import (requirements without extras, for this platform)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            seen[name] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional runtime dependency this environment does without
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


@pytest.fixture(scope="session")
def fresh_venv(built) -> Path:
    """A new venv with only the wheel installed in it; torch, numpy and pytest are links to this environment's."""
    base = built["base"]
    venv = base / "fresh-venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).strip())
    shim = base / "shared-site-packages"
    shim.mkdir()
    for dist in _requirement_closure(["torch", "numpy", "pytest", "hypothesis"]):
        assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD: cannot link it"
        for top in {f.parts[0] for f in dist.files if f.parts[0] not in {"..", "__pycache__"}}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (shim / top).exists():
                (shim / top).symlink_to(target)
    (site / "_longtail_test_shared.pth").write_text(f"{shim}\n")
    # --no-index (set by _env): the wheel's torch>=2.1 and numpy must be met by what the venv already sees.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", built["wheel"]], cwd=base)
    return venv


def _names_in_sdist(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        return {n.removeprefix(NAME + "/") for n in tar.getnames()}


def _names_in_wheel(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.slow
def test_the_sdist_ships_the_test_suite_its_helpers_docs_and_license(built):
    names = _names_in_sdist(built["sdist"])
    for name in ["LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", "src/longtail/__init__.py",
                 "src/longtail/py.typed", "tests/conftest.py", "tests/reference.py", "tests/data_helpers.py",
                 "tests/cdb_ddp_worker.py", "tests/train_ddp_worker.py", "docs/adding_a_loss.md"]:
        assert name in names, f"{name} is not in the sdist"
    # every file under tests/ and every module of the package, not only tests/test_*.py
    for folder in ["tests", "src/longtail"]:
        files = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
        assert files <= names, f"not in the sdist: {sorted(files - names)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(("runs/", ".venv"))]


@pytest.mark.slow
def test_the_wheel_ships_the_package_typing_marker_and_license_metadata(built):
    names = _names_in_wheel(built["wheel"])
    dist_info = f"{NAME}.dist-info"
    assert {"longtail/__init__.py", "longtail/py.typed", "longtail/sklearn.py", "longtail/train/__init__.py",
            f"{dist_info}/licenses/LICENSE", f"{dist_info}/METADATA", f"{dist_info}/entry_points.txt"} <= names
    assert not [n for n in names if not n.startswith(("longtail/", dist_info + "/"))], "stray top-level files"
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    with zipfile.ZipFile(built["wheel"]) as zf:
        meta = zf.read(f"{dist_info}/METADATA").decode()
        assert zf.read(f"{dist_info}/licenses/LICENSE").decode().startswith("MIT License")
        assert "longtail = longtail.cli:main" in zf.read(f"{dist_info}/entry_points.txt").decode()
    headers = [line for line in meta.split("\n\n", 1)[0].splitlines()]
    assert "License-Expression: MIT" in headers and "License-File: LICENSE" in headers
    assert "Requires-Dist: torch>=2.1" in headers
    assert sorted(h.split(": ", 1)[1] for h in headers if h.startswith("Provides-Extra:")) == [
        "bench", "hf", "images", "lightning", "plot", "progress", "tensorboard", "test"]  # no `sklearn` extra: longtail.sklearn needs only numpy and torch
    urls = [h for h in headers if h.startswith("Project-URL:")]
    assert {u.split(": ", 1)[1].split(",")[0] for u in urls} == {"Homepage", "Repository", "Issues", "Documentation"}


@pytest.mark.slow
def test_the_sdist_builds_the_same_wheel_as_the_checkout(built):
    assert _names_in_wheel(built["wheel_from_sdist"]) == _names_in_wheel(built["wheel"])


@pytest.mark.slow
def test_the_wheel_works_in_a_fresh_venv_from_outside_the_repository(fresh_venv, tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import torch, longtail
        logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 3.0], [0.5, 0.5, 0.5]])
        target = torch.tensor([0, 1, 2, 0])
        loss = longtail.ClassBalancedLoss([100, 10, 1], beta=0.99, loss="softmax")(logits, target)
        print(json.dumps({"file": longtail.__file__, "prefix": sys.prefix, "loss": loss.item(),
                          "sklearn": longtail.sklearn.class_weight([0, 0, 0, 1], beta=1.0)[1],
                          "train": longtail.train.__name__}))
    """)
    out = json.loads(_run([fresh_venv / "bin" / "python", "-I", "-c", script], cwd=tmp_path).splitlines()[-1])
    file = Path(out["file"]).resolve()
    assert file.is_relative_to(fresh_venv.resolve()), f"imported {file}, not the wheel installed in {fresh_venv}"
    assert not file.is_relative_to(ROOT), file
    assert Path(out["prefix"]).resolve() == fresh_venv.resolve()
    # mean over samples of w[y] * CE, w = class_balanced_weights([100, 10, 1], beta=0.99)
    assert out["loss"] == pytest.approx(0.0968605, rel=1e-5)
    assert out["sklearn"] == 1.5 and out["train"] == "longtail.train"
    script_path = fresh_venv / "bin" / "longtail"
    assert script_path.exists() and "longtail.cli" in script_path.read_text()


@pytest.mark.slow
def test_the_sdists_own_tests_run_against_the_installed_wheel(built, fresh_venv):
    unpacked = built["unpacked"]
    runner = textwrap.dedent("""
        import sys
        import longtail, pytest
        assert longtail.__file__.startswith(sys.prefix), longtail.__file__
        sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[1:]]))
    """)
    # conftest.py (its hypothesis profile and seed fixture), reference.py (the official formulas) and
    # data_helpers.py (fake IDX files) all come from the sdist's tests/; a few seconds of tests in all.
    out = _run([fresh_venv / "bin" / "python", "-I", "-c", runner, "tests/test_weights.py", "tests/test_data_idx.py",
                "tests/test_class_balanced.py::test_numpy_reference_is_itself_right",
                "tests/test_class_balanced.py::test_matches_official_formulas_on_random_inputs"], cwd=unpacked)
    assert " passed" in out, out


# --- lazy submodule access (PEP 562) -------------------------------------------------------------------------------

def _public_submodules() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(longtail.__path__) if not m.name.startswith("_")}


def test_every_public_submodule_is_listed_for_lazy_access():
    assert set(longtail._SUBMODULES) == _public_submodules()
    assert set(longtail._SUBMODULES) <= set(dir(longtail))
    assert {"ClassBalancedLoss", "__version__"} <= set(dir(longtail))


@pytest.mark.slow
def test_import_longtail_does_not_import_the_heavy_submodules_but_each_is_an_attribute():
    heavy = ["longtail.train", "longtail.data", "longtail.sklearn", "longtail.models", "longtail.cli", "longtail.demo"]
    script = textwrap.dedent(f"""
        import importlib, sys, types
        import longtail
        heavy = {heavy!r}
        loaded = [m for m in heavy if m in sys.modules]
        assert not loaded, loaded
        for name in {sorted(_public_submodules())!r}:
            module = getattr(longtail, name)
            assert isinstance(module, types.ModuleType) and module is importlib.import_module("longtail." + name)
            assert module is sys.modules["longtail." + name]
        assert longtail.train.train is importlib.import_module("longtail.train").train
        from longtail import sklearn
        assert sklearn.class_weight([0, 1], beta=1.0) == {{0: 1.0, 1: 1.0}}
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_unknown_attributes_still_raise_attribute_error():
    with pytest.raises(AttributeError, match=r"^module 'longtail' has no attribute 'no_such_thing'$"):
        longtail.no_such_thing  # noqa: B018
    assert not hasattr(longtail, "__wrapped__")
    assert getattr(longtail, "no_such_thing", 42) == 42
    with pytest.raises(ImportError, match="cannot import name 'no_such_thing'"):
        exec("from longtail import no_such_thing", {})
