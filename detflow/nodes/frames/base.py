"""The frame-node contract: a transformation of blocks of frames, run inside the partition task.

A frame node sits between a partition (or another frame node) and the UDFs. The graph
calls :meth:`FrameNode.output_signature` on the driver, before any data is read, to
check the parameters against the input geometry and learn the output's signal shape
and dtype; a worker then calls :meth:`FrameNode.apply` once per block (a tile of a few
MiB, shape ``(n, *sig)``), chaining nodes block by block so no intermediate leaves the
worker. A node never writes into the block it is given: blocks may be read-only file
maps or shared memory. It returns a new array or a view.

Parameters are declared once in ``params_spec`` (:mod:`detflow.nodes.params`), exactly
as UDFs declare theirs; a worker rebuilds the node as ``cls(**node.kwargs)``.

Errors: a parameter that does not fit the input (a crop box outside the frame, a bin
factor that does not divide it, a dark frame of another shape) raises
:class:`~detflow.errors.ParameterError` naming it; an input the node cannot take at
all, whatever its parameters (3-D frames for ``crop``), raises
:class:`~detflow.errors.ConfigurationError`.

Examples
--------
>>> import numpy as np
>>> from detflow.nodes.frames import frame_node_class
>>> clip = frame_node_class("numpy:clip")(kwargs={"a_min": 2, "a_max": 5})
>>> clip.output_signature((2, 2), np.dtype("uint16"))
((2, 2), dtype('uint16'))
>>> block = np.arange(8, dtype=np.uint16).reshape(2, 2, 2)
>>> block.setflags(write=False)
>>> clip.apply(block)[1]
array([[4, 5],
       [5, 5]], dtype=uint16)
"""

from __future__ import annotations

import builtins
import functools
import inspect
from typing import Any, ClassVar

import numpy as np

from detflow.errors import ConfigurationError
from detflow.nodes.declared import DeclaredNode
from detflow.registry import FRAMES, import_object

__all__ = ["FrameNode", "frame_node_class", "is_sparse"]


def is_sparse(block: Any) -> bool:
    """Whether ``block`` is a scipy.sparse matrix or array (rows: frames, columns: pixels)."""
    return hasattr(block, "tocsr") and hasattr(block, "nnz")


class FrameNode(DeclaredNode):
    """Base class of frame nodes; subclasses implement :meth:`output_signature` and :meth:`apply`.

    ``sparse_input = True`` declares that :meth:`apply` also takes a scipy.sparse CSR block
    of shape ``(n, prod(sig))`` and returns one of shape ``(n, prod(sig_out))``.
    """

    sparse_input: ClassVar[bool] = False

    def output_signature(self, sig_shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], np.dtype]:
        """Check the parameters against frames of ``sig_shape`` and ``dtype``; return the
        output's ``(sig_shape, dtype)``. Pure: no data is read."""
        raise NotImplementedError(f"{type(self).__name__} must implement output_signature()")

    def apply(self, block: Any, *, sig_shape: tuple[int, ...] | None = None) -> Any:
        """``(n, *sig_in) -> (n, *sig_out)`` in the dtype :meth:`output_signature` gives.

        Never writes into ``block``. ``sig_shape`` is the input's frame shape; a dense
        block carries it, a sparse one ``(n, prod(sig))`` needs it given.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    # helpers for subclasses ---------------------------------------------------------
    def _need_2d(self, sig_shape: tuple[int, ...]) -> tuple[int, int]:
        if len(sig_shape) != 2:
            raise ConfigurationError(
                f"frame node {self.type_name!r} needs 2-D frames; got the signal shape {tuple(sig_shape)}"
            )
        return int(sig_shape[0]), int(sig_shape[1])


def frame_node_class(type: str) -> type[FrameNode]:
    """The frame-node class for a registry name or an import path.

    ``type`` is a registered name (``"crop"``, ``"bin"``, see
    :data:`detflow.registry.FRAMES`), the import path of a :class:`FrameNode`
    subclass (``"pkg.mod:MyNode"``), or the import path of a plain function
    ``func(block, **kwargs)``: then the result is
    :class:`~detflow.nodes.frames.function.FunctionFrames` with ``func`` bound to that
    path, taking the remaining parameters (``sig_shape``, ``dtype``, ``kwargs``).

    Raises
    ------
    UnknownNameError
        For a plain name that is not registered; it lists the registered ones.
    ConfigurationError
        For an import path that cannot be imported or names something else.

    Examples
    --------
    >>> frame_node_class("function").__name__
    'FunctionFrames'
    >>> cls = frame_node_class("numpy:negative")
    >>> cls(dtype="float32").output_signature((4, 4), np.dtype("uint8"))
    ((4, 4), dtype('float32'))
    """
    if ":" not in type and "." not in type:
        return _check_frame_class(FRAMES.get(type), type)
    obj = _import(type, "frame node")
    if inspect.isclass(obj):
        return _check_frame_class(obj, type)
    if callable(obj):
        return _bound_function_class(type)
    raise ConfigurationError(f"frame node {type!r}: names a {obj.__class__.__name__}, not a class or function")


def _import(path: str, what: str) -> Any:
    try:
        return import_object(path)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigurationError(f"{what} {path!r}: cannot import it ({err})") from err


def _check_frame_class(cls: Any, name: str) -> builtins.type[FrameNode]:
    if not (inspect.isclass(cls) and issubclass(cls, FrameNode)):
        raise ConfigurationError(
            f"frame node {name!r}: {getattr(cls, '__name__', cls)!r} is not a FrameNode subclass"
            " (a UDF or result node goes elsewhere in the graph)"
        )
    return cls


@functools.cache
def _bound_function_class(path: str) -> type[FrameNode]:
    # through the registry, so this contract module imports no implementation
    return FRAMES.get("function").bound_to(path)
