"""The graph model: nodes as frozen data, and :class:`GraphModel`, which holds them.

Node kinds, and what each takes as input:

=============  ==========================================  ==============================
kind           what it is                                  input
=============  ==========================================  ==============================
source         a dataset or a live stream                  --
partition      how a source is cut (sizing, ROI,           one source
               detector corrections)
frames         a frame transform run inside the            a partition or frames node
               partition task (correct, bin, crop, ...)
udf            a UDF: map per block, merge per partition   a partition or frames node
result         computed on the driver from merged          UDF or result nodes
               results (find_disk, idpc, ...)
sink           writes or shows results                     UDF or result nodes (a
                                                           recorder: a partition node)
=============  ==========================================  ==============================

Any parameter of a frames, UDF or result node may be a :class:`Ref` to a result of
another node (``g.ref("disk.cx")``, ``{ref: disk.cx}`` in a graph file). Inputs and
references are the graph's edges; :func:`check_structure` checks that they point at
nodes that exist, of the right kind, without a cycle, and that no skipped node is
needed. This module is plain data: it opens nothing and runs nothing. Planning
(:mod:`detflow.graph.planning`), lowering and running (:mod:`detflow.graph.run`) sit
above it; :class:`detflow.graph.Graph` is this model with those abilities added.

Examples
--------
>>> g = GraphModel("demo")
>>> g.source("npy", path="scan.npy")
'source'
>>> g.partition()
'partition'
>>> g.frames("bin", factor=2)
'bin'
>>> g.udf("sum", input="bin")
'sum'
>>> g.result("find_disk", id="disk", input="sum")
'disk'
>>> g.udf("com", input="partition", cx=g.ref("disk.cx"))
'com'
>>> [str(r) for _, r in refs_of(g["com"])]
['disk.cx']
"""

from detflow.graph.model.graph import GraphModel
from detflow.graph.model.nodes import (
    FramesNode,
    Node,
    PartitionNode,
    Ref,
    ResultNode,
    SinkNode,
    SourceNode,
    UDFNode,
    as_flat_roi,
    bind_refs,
    dependencies,
    inputs_of,
    kind_of,
    refs_of,
    udf_type_name,
)
from detflow.graph.model.structure import check_structure

__all__ = [
    "FramesNode", "GraphModel", "Node", "PartitionNode", "Ref", "ResultNode", "SinkNode", "SourceNode",
    "UDFNode", "as_flat_roi", "bind_refs", "check_structure", "dependencies", "inputs_of", "kind_of", "refs_of",
    "udf_type_name",
]
