"""Run code written for LiberTEM 0.16 on detflow: ``libertem.*`` imports served by detflow.

Porting a UDF file or a script takes one added line, before its ``libertem`` imports::

    import detflow.compat.libertem  # noqa: F401  (serves `libertem.*` from detflow)
    from libertem.udf.base import UDF
    from libertem.common.buffers import reshaped_view
    from libertem.api import Context

Importing this module installs an import hook (:func:`install`) that answers every
``libertem`` module path listed in :data:`~detflow.compat.libertem.modules.MODULES`
with a module holding detflow's objects under LiberTEM's names: ``UDF``, ``UDFMeta``,
``UDFMethod``, the buffer helpers, ``Context``, the executors, ``MemoryDataSet``, the
built-in UDFs (``libertem.udf.sum.SumUDF`` is detflow's ``SumUDF``) and ``UDFException``
(detflow's :class:`~detflow.errors.UDFError`). Where a real LiberTEM is installed as
well, the hook comes first, so the script runs on detflow.

``install(udf_sources=path)`` additionally loads any other ``libertem`` module from
LiberTEM's own source tree at ``path`` (a ``site-packages`` folder or a checkout): with
it, LiberTEM's own UDF classes (``libertem/udf/sum.py`` and friends) run on detflow's
UDF base class, which is how the benchmark compares the two on the very same code. In
that mode the built-in UDF modules come from ``path`` too.

What differs from LiberTEM is listed in the README's porting guide.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detflow.compat.libertem.modules import MODULES, PACKAGES

__all__ = ["LiberTEMFinder", "install", "installed", "uninstall"]

_BUILTIN_UDF_MODULES = frozenset(n for n in MODULES if n.startswith("libertem.udf.") and n != "libertem.udf.base")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, name: str) -> None:
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"detflow's stand-in for {spec.name}")
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        namespace = MODULES[self.name]()
        module.__dict__.update(namespace)
        module.__dict__.setdefault("__all__", sorted(namespace))
        # a closure that names a stand-in module (``masks.circular`` after ``from libertem
        # import masks``) reaches a fresh worker process, where no hook serves "libertem":
        # cloudpickle sends the stand-in by value, i.e. the detflow objects it holds
        try:
            import cloudpickle
        except ImportError:  # pragma: no cover - a dependency of dask
            return
        cloudpickle.register_pickle_by_value(module)


class LiberTEMFinder(importlib.abc.MetaPathFinder):
    """Answers ``libertem`` module paths from detflow (and optionally LiberTEM's sources)."""

    def __init__(self, udf_sources: str | os.PathLike[str] | None = None) -> None:
        self.udf_sources = None if udf_sources is None else Path(udf_sources)

    def _source_file(self, fullname: str) -> tuple[Path, bool] | None:
        if self.udf_sources is None:
            return None
        base = self.udf_sources.joinpath(*fullname.split("."))
        if (base / "__init__.py").is_file():
            return base / "__init__.py", True
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py"), False
        return None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "libertem" and not fullname.startswith("libertem."):
            return None
        use_source = self.udf_sources is not None and fullname in _BUILTIN_UDF_MODULES
        if fullname in MODULES and not use_source:
            is_pkg = fullname in PACKAGES
            spec = importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname), is_package=is_pkg)
            if is_pkg:
                spec.submodule_search_locations = []
            return spec
        found = self._source_file(fullname)
        if found is not None:
            file, is_pkg = found
            return importlib.util.spec_from_file_location(
                fullname, file, submodule_search_locations=[str(file.parent)] if is_pkg else None
            )
        raise ModuleNotFoundError(
            f"detflow.compat.libertem: {fullname!r} is not one of the LiberTEM modules detflow serves; "
            f"served: {', '.join(sorted(MODULES))}. Import the detflow equivalent directly, "
            "or install(udf_sources=...) to load LiberTEM's own source for it",
            name=fullname,
        )


def installed() -> LiberTEMFinder | None:
    """The installed hook, if any."""
    for finder in sys.meta_path:
        if isinstance(finder, LiberTEMFinder):
            return finder
    return None


def install(udf_sources: str | os.PathLike[str] | None = None) -> LiberTEMFinder:
    """Serve ``libertem.*`` imports from detflow (see the module docstring).

    Replaces an earlier hook, and forgets ``libertem`` modules imported before, so the
    next import sees this hook's answer.
    """
    uninstall()
    finder = LiberTEMFinder(udf_sources)
    sys.meta_path.insert(0, finder)
    return finder


def uninstall() -> None:
    """Remove the hook and the ``libertem`` modules it served."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LiberTEMFinder)]
    for name in [n for n in sys.modules if n == "libertem" or n.startswith("libertem.")]:
        del sys.modules[name]


def _ensure_installed() -> Any:
    return installed() or install()


_ensure_installed()
