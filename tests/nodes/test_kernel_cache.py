"""Every compiled kernel is cached on disk, so a fresh process loads it instead of compiling it."""

from __future__ import annotations

import importlib

import numba
import pytest
from numba.core.caching import NullCache


@pytest.mark.parametrize("module", ["detflow.nodes.kernels", "detflow.sources.mib_kernels"])
def test_kernels_cache_on_disk(module: str) -> None:
    mod = importlib.import_module(module)
    kernels = {name: obj for name, obj in vars(mod).items()
               if isinstance(obj, numba.core.registry.CPUDispatcher)
               and obj.targetoptions.get("inline") != "always"}  # inlined helpers are compiled into their callers
    assert kernels, module
    uncached = sorted(name for name, k in kernels.items() if isinstance(k._cache, NullCache))
    assert not uncached, f"{module}: compiled on every start: {uncached}"
    # numba keeps the cache next to the module where it can write there, else in a per-user folder
    # (NUMBA_CACHE_DIR overrides both), so an installed, read-only package caches too
    for k in kernels.values():
        assert k._cache._cache_path
