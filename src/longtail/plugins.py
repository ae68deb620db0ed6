"""Plugins: your loss, dataset or model, defined in one file outside the package and registered with one call.

A plugin is a Python file (or module) that calls :func:`longtail.train.register_loss`,
:func:`longtail.data.register_dataset` or :func:`longtail.models.register_model` when imported.
:func:`load_plugins` imports the installed ones (the entry points of :data:`PLUGIN_GROUP`), those of
``$LONGTAIL_PLUGINS`` and the given ones; ``longtail <command> --plugin FILE`` does so before the command line's
parser is built, so ``longtail train --help`` lists what they register and ``--loss`` / ``--dataset`` /
``--model`` accept it (``docs/adding_a_loss.md``, ``docs/extending.md``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

#: Environment variable: plugins to import, separated by ``os.pathsep``.
PLUGIN_ENV = "LONGTAIL_PLUGINS"
#: Entry-point group (``importlib.metadata``) of installed plugins: each entry point is loaded, which imports it.
PLUGIN_GROUP = "longtail.plugins"


class PluginError(ImportError):
    """A plugin that failed to import; the message names it (``--plugin 'x.py'``, ...) and its error, on one line."""


def import_plugin(ref: str) -> None:
    """Imports the plugin ``ref``: a ``.py`` file (by its path; imported once per process, since a second import
    would register its names twice) or a module name."""
    if not ref.endswith(".py") and "/" not in ref and os.sep not in ref:
        importlib.import_module(ref)
        return
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    name = "longtail_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[name]
        raise


def load_plugins(refs: Iterable[str] = (), option: str = "--plugin") -> None:
    """Imports the plugins, in order: the entry points of :data:`PLUGIN_GROUP`, the entries of ``$LONGTAIL_PLUGINS``,
    then ``refs`` (files or module names, as :func:`import_plugin` takes them; ``option`` names them in errors).

    Raises:
        PluginError: a plugin that fails to import, naming it and the error (``$LONGTAIL_DEBUG`` set: the error
            itself, with its traceback).
    """
    sources = [(f"entry point {ep.name!r} of group {PLUGIN_GROUP!r}", ep.load)
               for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)]
    env = [ref.strip() for ref in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if ref.strip()]
    sources += [(f"${PLUGIN_ENV} entry {ref!r}", functools.partial(import_plugin, ref)) for ref in env]
    sources += [(f"{option} {ref!r}", functools.partial(import_plugin, ref)) for ref in refs]
    for what, load in sources:
        try:
            load()
        except Exception as exc:
            if os.environ.get("LONGTAIL_DEBUG"):
                raise
            raise PluginError(f"{what} must import; got {type(exc).__name__}: {' '.join(str(exc).split())}") from None


__all__ = ["PLUGIN_ENV", "PLUGIN_GROUP", "PluginError", "import_plugin", "load_plugins"]
