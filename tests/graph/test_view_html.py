"""A graph shows itself in a notebook: ``Graph._repr_html_`` draws nodes, edges, references
and passes, as SVG through graphviz's ``dot`` where it is installed, as a table otherwise."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from detflow.graph import Graph


def _dpc_graph() -> Graph:
    g = Graph("dpc", description="disk, then CoM <inside> it")
    g.source("memory", data=np.ones((2, 2, 8, 8), dtype=np.float32))
    g.partition(num_partitions=2)
    g.frames("bin", id="bin2", factor=2)
    g.udf("sum", id="sum")
    g.result("find_disk", id="disk", input="sum")
    g.udf("com", id="com", cx=g.ref("disk.cx"), cy=g.ref("disk.cy"), r=2.0)
    g.udf("sumsig", id="total", input="bin2", skip=True)
    return g


def test_html_without_graphviz_is_a_table_of_nodes_edges_references_and_passes(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program here
    text = _dpc_graph()._repr_html_()
    assert "<svg" not in text and 'class="detflow-graph"' in text
    assert "disk, then CoM &lt;inside&gt; it" in text  # escaped
    rows = dict(re.findall(r"<tr[^>]*><td><b>([\w]+)</b></td>(.*?)</tr>", text))
    assert set(rows) == {"source", "partition", "bin2", "sum", "disk", "com", "total"}
    assert "frames" in rows["bin2"] and "&larr; partition" in rows["bin2"] and "factor=2" in rows["bin2"]
    assert "result" in rows["disk"] and "&larr; sum" in rows["disk"]
    assert "cx &larr; disk.cx" in rows["com"] and "cy &larr; disk.cy" in rows["com"] and "r=2.0" in rows["com"]
    assert '<tr class="skip"><td><b>total</b>' in text
    passes = re.findall(r"<li>(.*?)</li>", text)
    assert passes == ["pass 1: read &#x27;partition&#x27; (source &#x27;source&#x27;): sum; then disk",
                      "pass 2: read &#x27;partition&#x27; (source &#x27;source&#x27;): com"]


def test_dot_has_a_cluster_per_pass_and_dotted_references() -> None:
    dot = _dpc_graph().to_dot()
    assert 'subgraph "cluster_pass1" { label="pass 1"; style=dashed; "sum"; "disk"; }' in dot
    assert 'subgraph "cluster_pass2" { label="pass 2"; style=dashed; "com"; }' in dot
    assert '"disk" -> "com" [style=dotted, label="cx"];' in dot and '"partition" -> "bin2";' in dot
    assert '"total" [shape=box, label="total\\n[sumsig]", style=dashed];' in dot


def _fake_dot(folder: Path) -> None:
    """Stands in for graphviz's dot -Tsvg: an SVG whose text is the DOT it was given."""
    script = folder / "dot"
    script.write_text(f"#!{sys.executable}\nimport html, sys\nassert sys.argv[1:] == ['-Tsvg']\n"
                      "dot = html.escape(sys.stdin.read())\n"
                      "print('<?xml version=\"1.0\"?>\\n<svg><text>' + dot + '</text></svg>')\n")
    script.chmod(0o755)


def test_html_with_graphviz_embeds_its_svg(monkeypatch, tmp_path) -> None:
    _fake_dot(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    text = _dpc_graph()._repr_html_()
    assert '<div class="detflow-graph-svg"><svg><text>digraph &quot;dpc&quot;' in text
    assert "<?xml" not in text and "<table>" not in text  # the drawing, not the table
    assert "&quot;disk&quot; -&gt; &quot;com&quot; [style=dotted" in text
    assert "<li>pass 2: read" in text


@pytest.mark.parametrize("script", ["#!/bin/sh\nexit 3\n", "#!/bin/sh\necho not svg\n"])
def test_a_failing_graphviz_falls_back_to_the_table(monkeypatch, tmp_path, script) -> None:
    (tmp_path / "dot").write_text(script)
    (tmp_path / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "<table>" in _dpc_graph()._repr_html_()
