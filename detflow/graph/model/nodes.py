"""Graph nodes as frozen data, references between them, and the edges they make."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from detflow.errors import GraphValidationError
from detflow.registry import UDFS

if TYPE_CHECKING:
    from detflow.nodes.base import UDF
    from detflow.sources.base import Source

__all__ = [
    "FramesNode", "Node", "PartitionNode", "Ref", "ResultNode", "SinkNode", "SourceNode", "UDFNode",
    "as_flat_roi", "bind_refs", "dependencies", "inputs_of", "kind_of", "refs_of", "udf_type_name",
]

@dataclass(frozen=True)
class Ref:
    """A reference to result ``name`` of node ``node``, as a parameter value.

    Examples
    --------
    >>> Ref.parse("disk.cx")
    Ref(node='disk', name='cx')
    """

    node: str
    name: str

    @classmethod
    def parse(cls, text: Any) -> Ref:
        node, dot, name = str(text).partition(".")
        if not dot or not node or not name:
            raise GraphValidationError(f"a reference reads NODE.RESULT (e.g. disk.cx); got {text!r}")
        return cls(node, name)

    def __str__(self) -> str:
        return f"{self.node}.{self.name}"


@dataclass(frozen=True)
class SourceNode:
    id: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: Source | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PartitionNode:
    id: str
    input: str
    frames_per_partition: int | None = None
    num_partitions: int | None = None
    roi: Any = field(default=None, compare=False)
    #: a CorrectionSet, or a mapping of dark/gain/excluded_pixels (arrays or .npy paths)
    corrections: Any = field(default=None, compare=False)
    #: array backends the UDFs may take their input in (LiberTEM's ``run_udf(backends=)``)
    backends: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FramesNode:
    """A frame node: ``type`` is a frames registry name or an import path; ``obj`` a ready node."""

    id: str
    input: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = field(default=None, compare=False)
    skip: bool = False


@dataclass(frozen=True)
class UDFNode:
    """A UDF node. ``params`` are the UDF's own keyword arguments; ``skip`` and
    ``save_results`` are node options every UDF node has, kept apart from them."""

    id: str
    input: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: UDF | None = field(default=None, compare=False)
    skip: bool = False
    save_results: bool = False


@dataclass(frozen=True)
class ResultNode:
    """A result node: computed on the driver from the merged results of ``inputs``."""

    id: str
    inputs: tuple[str, ...]
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = field(default=None, compare=False)
    skip: bool = False
    save_results: bool = False


@dataclass(frozen=True)
class SinkNode:
    """A sink fed by UDF or result nodes (or, for recorders, by the partition node)."""

    id: str
    type: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    skip: bool = False


Node = SourceNode | PartitionNode | FramesNode | UDFNode | ResultNode | SinkNode

_KINDS: dict[type, str] = {SourceNode: "source", PartitionNode: "partition", FramesNode: "frames",
                           UDFNode: "udf", ResultNode: "result", SinkNode: "sink"}


def kind_of(node: Node) -> str:
    """``"source"``, ``"partition"``, ``"frames"``, ``"udf"``, ``"result"`` or ``"sink"``."""
    return _KINDS[type(node)]


def inputs_of(node: Node) -> tuple[str, ...]:
    """The ids a node takes its data from (not its references)."""
    if isinstance(node, SourceNode):
        return ()
    if isinstance(node, ResultNode | SinkNode):
        return node.inputs
    return (node.input,)


def _walk_refs(value: Any, path: str) -> Iterator[tuple[str, Ref]]:
    if isinstance(value, Ref):
        yield path, value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _walk_refs(v, path)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk_refs(v, path)


def refs_of(node: Node) -> list[tuple[str, Ref]]:
    """``(parameter, ref)`` for every reference in the node's parameters."""
    out: list[tuple[str, Ref]] = []
    params = getattr(node, "params", None) or {}
    for name, value in params.items():
        out.extend(_walk_refs(value, name))
    if isinstance(node, PartitionNode):
        for name in ("roi", "corrections"):
            out.extend(_walk_refs(getattr(node, name), name))
    return out


def dependencies(node: Node) -> tuple[str, ...]:
    """Inputs, then referenced nodes: everything ``node`` waits for."""
    deps = list(inputs_of(node))
    deps += [r.node for _, r in refs_of(node) if r.node not in deps]
    return tuple(deps)


def bind_refs(value: Any, values: Mapping[tuple[str, str], Any]) -> Any:
    """``value`` with every :class:`Ref` replaced by ``values[(node, name)]``."""
    if isinstance(value, Ref):
        return values[(value.node, value.name)]
    if isinstance(value, Mapping):
        return {k: bind_refs(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [bind_refs(v, values) for v in value]
    if isinstance(value, tuple):
        return tuple(bind_refs(v, values) for v in value)
    return value


def udf_type_name(udf: UDF) -> str:
    """The registry name of ``udf``'s class, else its import path."""
    cls = type(udf)
    return UDFS.name_of(cls) or f"{cls.__module__}:{cls.__qualname__}"


def _short(udf: UDF) -> str:
    name = type(udf).__name__
    name = name[:-3] if name.endswith("UDF") and len(name) > 3 else name
    return name.lower()


def as_flat_roi(roi: Any, nav_shape: tuple[int, ...]) -> np.ndarray | None:
    """A ROI as a flat boolean array over the nav positions (``None`` stays ``None``)."""
    if roi is None:
        return None
    arr = np.asarray(roi)
    n = int(np.prod(nav_shape))
    if arr.dtype != bool:
        raise ValueError(f"must be a boolean array; got dtype {arr.dtype}")
    if arr.shape != tuple(nav_shape) and arr.shape != (n,):
        raise ValueError(f"must have the nav shape {tuple(nav_shape)}; got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(-1))
