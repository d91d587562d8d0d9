"""Structural checks of a graph: inputs and references that exist, of the right kind, no
cycle, no skipped node that another needs. Errors name the nodes and point into the file."""

from __future__ import annotations

from detflow.errors import GraphValidationError, did_you_mean
from detflow.graph.model.graph import GraphModel
from detflow.graph.model.nodes import (
    FramesNode,
    PartitionNode,
    ResultNode,
    SinkNode,
    SourceNode,
    UDFNode,
    dependencies,
    inputs_of,
    kind_of,
    refs_of,
)

__all__ = ["check_structure"]


#: what each kind of node may take as input
_INPUT_KINDS: dict[type, tuple[type, ...]] = {
    PartitionNode: (SourceNode,),
    FramesNode: (PartitionNode, FramesNode),
    UDFNode: (PartitionNode, FramesNode),
    ResultNode: (UDFNode, ResultNode),
    SinkNode: (UDFNode, ResultNode, PartitionNode),
}
_INPUT_TEXT = {
    PartitionNode: "a source", FramesNode: "a partition or frames node", UDFNode: "a partition or frames node",
    ResultNode: "a UDF or result node", SinkNode: "a UDF or result node (or, for recorders, a partition node)",
}


def check_structure(g: GraphModel) -> None:
    """Inputs and references that exist and are of the right kind, no cycle, no skipped
    node that another needs. Errors name the nodes (and point into the graph file)."""
    nodes = g.nodes
    _check_cycles(g)
    for n in nodes.values():
        if isinstance(n, SourceNode):
            continue
        key = "inputs" if isinstance(n, ResultNode | SinkNode) else "input"
        for name in inputs_of(n):
            if name not in nodes:
                raise g.locate(GraphValidationError(
                    f"input {name!r} is not a node of this graph; {did_you_mean(name, nodes)}"
                    f"nodes: {', '.join(sorted(nodes))}",
                    node=n.id, node_type=getattr(n, "type", None), parameter=key))
            if not isinstance(nodes[name], _INPUT_KINDS[type(n)]):
                raise g.locate(GraphValidationError(
                    f"input {name!r} is a {kind_of(nodes[name])} node; a {kind_of(n)} node takes "
                    f"{_INPUT_TEXT[type(n)]}", node=n.id, node_type=getattr(n, "type", None), parameter=key))
        for param, ref in refs_of(n):
            target = nodes.get(ref.node)
            if target is None:
                raise g.locate(GraphValidationError(
                    f"refers to {str(ref)!r}, but the graph has no node {ref.node!r}; nodes: "
                    f"{', '.join(sorted(nodes))}", node=n.id, node_type=getattr(n, "type", None), parameter=param))
            if not isinstance(target, UDFNode | ResultNode):
                raise g.locate(GraphValidationError(
                    f"refers to {str(ref)!r}, but {ref.node!r} is a {kind_of(target)} node; references "
                    "name a result of a UDF or result node", node=n.id, parameter=param))
    _check_skipped(g)


def _check_cycles(g: GraphModel) -> None:
    nodes = g.nodes
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node):], node]
            raise g.locate(GraphValidationError(
                f"the inputs form a cycle: {' -> '.join(cycle)}", node=node, parameter="input"))
        state[node] = 1
        for nxt in dependencies(nodes[node]):
            if nxt in nodes:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in nodes:
        visit(node, [])


def _check_skipped(g: GraphModel) -> None:
    nodes = g.nodes
    for n in nodes.values():
        if not getattr(n, "skip", False):
            continue
        needed_by = [m.id for m in nodes.values()
                     if not isinstance(m, SinkNode) and not getattr(m, "skip", False) and n.id in dependencies(m)]
        if needed_by:
            raise g.locate(GraphValidationError(
                f"is skipped, but {', '.join(repr(m) for m in needed_by)} need"
                f"{'s' if len(needed_by) == 1 else ''} it (as input or by reference); skip "
                f"{'it' if len(needed_by) == 1 else 'them'} too, or do not skip this node",
                node=n.id, parameter="skip"))
