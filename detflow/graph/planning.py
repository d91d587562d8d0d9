"""Planning: cutting a graph into passes over the data.

A *pass* is one read of one partition node's source. It feeds every UDF node that
reads from that partition node (directly or through frame nodes) and whose
references are known when the pass starts. The policy:

* a UDF node's *level* is the number of passes that must finish before it can run:
  the highest level among the nodes it references, where a UDF node's results are
  known one level after its own and a result node's as soon as all of its inputs
  and references are; frame nodes and partition nodes pass their references' level
  on to what reads them;
* every UDF node of one level and one partition node shares one pass; passes run in
  level order, and within a level in the order the partition nodes were added;
* a result node runs on the driver after the last pass it depends on (and, on
  partial results, during that pass); it is listed with that pass.

So a graph without references is one pass per partition node, and a chain
``sum -> find_disk -> com -> idpc`` is two passes: ``sum`` reads the data once, then
``com`` reads it again with the disk found in between. Planning looks at the model
only: it opens nothing.

Examples
--------
>>> from detflow.graph.model import GraphModel
>>> g = GraphModel("dpc")
>>> g.source("npy", path="scan.npy")
'source'
>>> g.partition()
'partition'
>>> g.udf("sum")
'sum'
>>> g.result("find_disk", id="disk", input="sum")
'disk'
>>> g.udf("com", cx=g.ref("disk.cx"))
'com'
>>> print(plan_graph(g))
pass 1: read 'partition' (source 'source'): sum; then disk
pass 2: read 'partition' (source 'source'): com
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from detflow.graph.model import (
    FramesNode,
    GraphModel,
    Node,
    PartitionNode,
    ResultNode,
    SourceNode,
    UDFNode,
    check_structure,
    inputs_of,
    refs_of,
)

__all__ = ["GraphPlan", "Pass", "plan_graph"]


@dataclass(frozen=True)
class Pass:
    """One read of one source: the UDF nodes it feeds and the frame nodes between."""

    index: int
    level: int
    source: str
    partition: str
    #: frame nodes run in this pass, each after its input
    frames: tuple[str, ...]
    udfs: tuple[str, ...]
    #: result nodes computed once this pass is done (and on its partial results)
    results: tuple[str, ...]

    def __str__(self) -> str:
        then = f"; then {', '.join(self.results)}" if self.results else ""
        return (f"pass {self.index + 1}: read {self.partition!r} (source {self.source!r}): "
                f"{', '.join(self.udfs)}{then}")


@dataclass(frozen=True)
class GraphPlan:
    """The passes of a graph, in the order they run."""

    passes: tuple[Pass, ...]
    #: the pass each UDF and result node belongs to
    pass_of: dict[str, int]

    def __iter__(self) -> Iterator[Pass]:
        return iter(self.passes)

    def __len__(self) -> int:
        return len(self.passes)

    def __getitem__(self, i: int) -> Pass:
        return self.passes[i]

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.passes) or "(no pass: nothing to compute)"


def _chain(g: GraphModel, node: Node) -> list[str]:
    """Frame nodes from the partition node down to (and including) ``node``."""
    out: list[str] = []
    while isinstance(node, FramesNode):
        out.append(node.id)
        node = g[node.input]
    return out[::-1]


def partition_of(g: GraphModel, node: Node) -> PartitionNode:
    """The partition node a frames or UDF node reads from."""
    while isinstance(node, FramesNode | UDFNode):
        node = g[node.input]
    assert isinstance(node, PartitionNode)
    return node


def plan_graph(g: GraphModel) -> GraphPlan:
    """Cut ``g`` into passes (skipped nodes are left out); checks the structure first."""
    check_structure(g)
    nodes = g.nodes
    known: dict[str, int] = {}  # node id -> level after which its results / parameters are known

    def level(node_id: str) -> int:
        if node_id in known:
            return known[node_id]
        n = nodes[node_id]
        ref_level = max((level(r.node) for _, r in refs_of(n)), default=0)
        if isinstance(n, SourceNode):
            value = 0
        elif isinstance(n, PartitionNode | FramesNode):
            value = max(ref_level, level(n.input))
        elif isinstance(n, UDFNode):
            value = max(ref_level, level(n.input)) + 1
        else:  # result node
            value = max([ref_level, *(level(i) for i in inputs_of(n))])
        known[node_id] = value
        return value

    order = {n.id: i for i, n in enumerate(g)}
    groups: dict[tuple[int, int], list[UDFNode]] = {}
    for n in g.udf_nodes():
        part = partition_of(g, n)
        groups.setdefault((level(n.id) - 1, order[part.id]), []).append(n)
    passes: list[Pass] = []
    pass_of: dict[str, int] = {}
    for i, (lvl, _) in enumerate(sorted(groups)):
        udfs = groups[(lvl, _)]
        part = partition_of(g, udfs[0])
        frames: list[str] = []
        for u in udfs:
            for f in _chain(g, nodes[u.input]):
                if f not in frames:
                    frames.append(f)
        for u in udfs:
            pass_of[u.id] = i
        passes.append(Pass(i, lvl, part.input, part.id, tuple(frames), tuple(u.id for u in udfs), ()))

    def result_pass(node_id: str) -> int:
        if node_id in pass_of:
            return pass_of[node_id]
        n = nodes[node_id]
        deps = [*inputs_of(n), *(r.node for _, r in refs_of(n))]
        value = max((result_pass(d) for d in deps), default=0)
        pass_of[node_id] = value
        return value

    by_pass: dict[int, list[str]] = {}
    for r in g.result_nodes():
        by_pass.setdefault(result_pass(r.id), []).append(r.id)
    passes = [Pass(p.index, p.level, p.source, p.partition, p.frames, p.udfs,
                   _topo(g, by_pass.get(p.index, []))) for p in passes]
    return GraphPlan(tuple(passes), pass_of)


def _topo(g: GraphModel, ids: list[str]) -> tuple[str, ...]:
    """Result nodes ordered so that each comes after the result nodes it needs."""
    out: list[str] = []
    wanted = set(ids)

    def visit(node_id: str) -> None:
        if node_id in out:
            return
        n = g[node_id]
        assert isinstance(n, ResultNode)
        for d in [*n.inputs, *(r.node for _, r in refs_of(n))]:
            if d in wanted:
                visit(d)
        out.append(node_id)

    for i in ids:
        visit(i)
    return tuple(out)
