"""Registries: lazy built-ins, entry points for third parties, errors that list names."""

from __future__ import annotations

import sys

import pytest

from detflow.errors import UnknownNameError
from detflow.registry import Registry, import_object


def test_builtins_resolve_lazily() -> None:
    reg = Registry("thing", "detflow.no-such-group", {"sum": "detflow.nodes.sum:SumUDF"})
    assert reg.names() == ["sum"]
    from detflow.nodes.sum import SumUDF

    assert reg.get("sum") is SumUDF


def install_plugin(root, monkeypatch, *, names: dict[str, str], group: str = "detflow.udfs") -> None:
    """A real installed distribution: a ``dist-info`` folder and its module on ``sys.path``."""
    (root / "detflow_test_plugin.py").write_text(
        "class PluginUDF:\n    pass\n\n\nclass OtherUDF:\n    pass\n"
    )
    info = root / "detflow_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: detflow-test-plugin\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in names.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "detflow_test_plugin", raising=False)


def test_entry_points_add_names(tmp_path, monkeypatch) -> None:
    install_plugin(tmp_path, monkeypatch, names={"mine": "detflow_test_plugin:PluginUDF"})
    reg = Registry("UDF", "detflow.udfs", {"sum": "detflow.nodes.sum:SumUDF"})
    assert reg.names() == ["mine", "sum"]
    mine = reg.get("mine")
    assert mine.__name__ == "PluginUDF" and mine.__module__ == "detflow_test_plugin"
    # another group's registry does not see it
    assert "mine" not in Registry("sink", "detflow.sinks", {}).names()


def test_builtin_wins_over_entry_point(tmp_path, monkeypatch) -> None:
    install_plugin(tmp_path, monkeypatch, names={"sum": "detflow_test_plugin:OtherUDF",
                                                  "extra": "detflow_test_plugin:PluginUDF"})
    reg = Registry("UDF", "detflow.udfs", {"sum": "detflow.nodes.sum:SumUDF"})
    assert reg.names() == ["extra", "sum"]
    assert reg.get("sum").__name__ == "SumUDF"
    assert reg.get("extra").__name__ == "PluginUDF"


def test_unknown_name_lists_known() -> None:
    reg = Registry("sink", "detflow.no-such-group", {"zarr": "x:y", "npy": "x:z"})
    with pytest.raises(UnknownNameError, match="unknown sink 'hdf5'; known sinks: npy, zarr"):
        reg.get("hdf5")


def test_import_object_forms() -> None:
    assert import_object("os.path:join") is import_object("os.path.join")
    with pytest.raises(ValueError, match="not an import path"):
        import_object("justaname")
