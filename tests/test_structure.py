"""The package's shape: modules small enough to read unless they hold one concept (the import-cycle check is
``test_registry.test_no_import_cycle_anywhere_in_the_package``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "longtail"
MAX_LINES = 450

# Modules allowed past MAX_LINES, each because it holds one concept that reads as a whole.
ONE_CONCEPT: dict[str, str] = {
    "longtail.checks": "the argument-check vocabulary: every check of the library and its one message format, "
    "read as a whole so a new check reuses one (kornia's core/check.py is one module for the same reason)",
    "longtail.confusion": "per-class counting: the confusion and top-k kernels and the ConfusionMeter that streams "
    "them (every per-class statistic of the library counts here)",
}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC.parent).with_suffix("").parts): p for p in sorted(SRC.rglob("*.py"))}


@pytest.mark.parametrize("name", sorted(_modules()))
def test_a_module_is_small_enough_to_read_unless_it_holds_one_concept(name):
    lines = len(_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES or name in ONE_CONCEPT, (
        f"{name} has {lines} lines (> {MAX_LINES}): split it by concept, or add it to ONE_CONCEPT with the reason"
    )


def test_every_one_concept_exemption_names_a_module_that_still_needs_it():
    modules = _modules()
    for name in ONE_CONCEPT:
        assert name in modules and len(modules[name].read_text(encoding="utf-8").splitlines()) > MAX_LINES, name
