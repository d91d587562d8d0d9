"""From a node's ``type`` (a registry name or an import path) to its class.

UDFs come from :data:`detflow.registry.UDFS`, frame nodes from
:func:`detflow.nodes.frames.frame_node_class`, result nodes from
:func:`detflow.nodes.results.result_node_class`. :func:`kind_of_type` tells which of
the three a type is, when the type alone tells (a graph file names the kind with
``kind:`` where it does not, as for a plain function by import path).
"""

from __future__ import annotations

from typing import Any

from detflow.errors import ConfigurationError, UnknownNameError
from detflow.nodes.base import UDF
from detflow.registry import UDFS, import_object

__all__ = ["KINDS", "kind_of_type", "node_class", "udf_class"]

#: node kinds that have a class behind their type
KINDS = ("frames", "udf", "result")


def udf_class(type_: str) -> type[UDF]:
    """The UDF class named by ``type_``; raises UnknownNameError, ImportError or TypeError."""
    cls = UDFS.get(type_) if ":" not in type_ else import_object(type_)
    if not (isinstance(cls, type) and issubclass(cls, UDF)):
        raise TypeError(f"{type_!r} is not a UDF class")
    return cls


def frames_class(type_: str) -> type:
    from detflow.nodes.frames import frame_node_class

    return frame_node_class(type_)


def result_class(type_: str) -> type:
    from detflow.nodes.results import result_node_class

    return result_node_class(type_)


_RESOLVERS = {"udf": udf_class, "frames": frames_class, "result": result_class}


def node_class(kind: str, type_: str) -> Any:
    """The class of a ``kind`` node (``"frames"``, ``"udf"``, ``"result"``) of type ``type_``."""
    return _RESOLVERS[kind](type_)


def kind_of_type(type_: str) -> str | None:
    """``"udf"``, ``"frames"`` or ``"result"`` when ``type_`` alone says which; else ``None``.

    A registry name belongs to the registry that knows it (UDFs first); an import path
    to a UDF class is a UDF, to a frame or result node class a frames or result node.
    """
    if ":" not in type_:
        for kind in ("udf", "frames", "result"):
            try:
                _RESOLVERS[kind](type_)
                return kind
            except (UnknownNameError, ConfigurationError, ImportError):
                continue
        return None
    try:
        obj = import_object(type_)
    except (ImportError, AttributeError, ValueError):
        return None
    if isinstance(obj, type) and issubclass(obj, UDF):
        return "udf"
    for kind, module, base in (("frames", "detflow.nodes.frames.base", "FrameNode"),
                               ("result", "detflow.nodes.results.base", "ResultNode")):
        try:
            cls = getattr(__import__(module, fromlist=[base]), base)
        except ImportError:
            continue
        if isinstance(obj, type) and issubclass(obj, cls):
            return kind
    return None
