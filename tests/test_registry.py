"""Registries: lazy built-ins, entry points for third parties, errors that list names."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from detflow import registry
from detflow.errors import UnknownNameError
from detflow.registry import Registry, import_object


def test_builtins_resolve_lazily() -> None:
    reg = Registry("thing", "detflow.no-such-group", {"sum": "detflow.nodes.sum:SumUDF"})
    assert reg.names() == ["sum"]
    from detflow.nodes.sum import SumUDF

    assert reg.get("sum") is SumUDF


def test_entry_points_add_names(monkeypatch) -> None:
    ep = EntryPoint(name="mine", value="tests.graph.test_graph:Radius", group="detflow.udfs")
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == "detflow.udfs" else [])
    reg = Registry("UDF", "detflow.udfs", {"sum": "detflow.nodes.sum:SumUDF"})
    from tests.graph.test_graph import Radius

    assert reg.get("mine") is Radius
    assert reg.names() == ["mine", "sum"]


def test_builtin_wins_over_entry_point(monkeypatch) -> None:
    ep = EntryPoint(name="sum", value="tests.graph.test_graph:Radius", group="detflow.udfs")
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    reg = Registry("UDF", "detflow.udfs", {"sum": "detflow.nodes.sum:SumUDF"})
    reg.names()
    assert reg.get("sum").__name__ == "SumUDF"


def test_unknown_name_lists_known() -> None:
    reg = Registry("sink", "detflow.no-such-group", {"zarr": "x:y", "npy": "x:z"})
    with pytest.raises(UnknownNameError, match="unknown sink 'hdf5'; known sinks: npy, zarr"):
        reg.get("hdf5")


def test_import_object_forms() -> None:
    assert import_object("os.path:join") is import_object("os.path.join")
    with pytest.raises(ValueError, match="not an import path"):
        import_object("justaname")
