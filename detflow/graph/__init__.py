"""Graphs: the model (plain data), planning into passes, lowering onto executors, results."""

from detflow.graph.model import (
    FramesNode,
    GraphModel,
    PartitionNode,
    Ref,
    ResultNode,
    SinkNode,
    SourceNode,
    UDFNode,
)
from detflow.graph.results import ResultBuffer, UDFResults
from detflow.graph.run import Graph

__all__ = ["FramesNode", "Graph", "GraphModel", "PartitionNode", "Ref", "ResultBuffer", "ResultNode", "SinkNode",
           "SourceNode", "UDFNode", "UDFResults"]
