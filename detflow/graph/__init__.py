"""Graph model, validation, lowering onto executors, results."""

from detflow.graph.model import Graph, PartitionNode, SourceNode, UDFNode
from detflow.graph.results import ResultBuffer, UDFResults

__all__ = ["Graph", "PartitionNode", "ResultBuffer", "SourceNode", "UDFNode", "UDFResults"]
