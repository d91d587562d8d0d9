"""The exceptions detflow raises.

Every detflow error derives from :class:`DetflowError`; most also derive from the
builtin that a caller would naturally catch, so ``except ValueError`` keeps working::

    DetflowError
    ├── ConfigurationError (ValueError)        a bad argument, option or name
    │   ├── UnknownNameError                   a registry name nobody knows (lists the known ones)
    │   ├── ParameterError                     a parameter fails its declared type or range
    │   └── GraphValidationError               a graph that cannot run (names node and parameter)
    ├── SourceError                            reading input data failed
    │   ├── SourceNotFoundError (FileNotFoundError)
    │   ├── SourceFormatError (ValueError)     file contents or size do not match what was declared
    │   └── DetectorError                      a live detector or its connection failed
    │       ├── DetectorTimeoutError (TimeoutError)       it went silent longer than the timeout
    │       ├── DetectorDisconnectedError (ConnectionError) it closed the connection mid-acquisition
    │       ├── DetectorProtocolError (ValueError)         bytes on the wire that break its protocol
    │       └── DetectorCommandError                      a control command answered with an error
    ├── UDFError (RuntimeError)                a UDF broke the UDF contract
    │   ├── UDFMergeError (NotImplementedError)  sig/single buffers and no merge()
    │   ├── UDFMethodError (TypeError)          no process_* method
    │   ├── BufferAssignmentError (ValueError)  a value that does not fit a result buffer
    │   └── InvalidMaskError (ValueError)       a with_mask() mask that does not fit its data
    ├── PartitionTimeoutError (TimeoutError)   a partition ran longer than partition_timeout
    └── MissingDependencyError (ImportError)   an optional extra is not installed

An exception raised by user code inside a partition task is *not* wrapped: it reaches
the caller with its own type, and notes (PEP 678) that name the node and the partition,
plus the worker's traceback where the task ran in another process. ``node_id`` is set
on it as an attribute as well.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

__all__ = [
    "ConfigurationError",
    "DetectorCommandError",
    "DetectorDisconnectedError",
    "DetectorError",
    "DetectorProtocolError",
    "DetectorTimeoutError",
    "DetflowError",
    "GraphValidationError",
    "MissingDependencyError",
    "ParameterError",
    "PartitionTimeoutError",
    "SourceError",
    "SourceFormatError",
    "SourceNotFoundError",
    "UDFError",
    "UDFMergeError",
    "UDFMethodError",
    "UnknownNameError",
    "annotate_node_error",
    "did_you_mean",
    "import_optional",
    "unknown_name_text",
]


class DetflowError(Exception):
    """Root of every error detflow raises itself."""


class ConfigurationError(DetflowError, ValueError):
    """An argument, option or name given by the user is not acceptable."""


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``"did you mean 'r'? "`` for the known name closest to ``name``, or ``""``.

    Every report of an unknown name (registry names, parameters, node ids, mask
    types) goes through here, so the suggestions are the same everywhere.

    >>> did_you_mean("thread", ["inline", "threads", "dask"])
    "did you mean 'threads'? "
    >>> did_you_mean("radius", ["cx", "cy", "r", "ri"])
    "did you mean 'r'? "
    >>> did_you_mean("zzz", ["cx", "cy"])
    ''
    """
    if not isinstance(name, str):
        return ""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        # a short name the user abbreviated or spelled out (r / radius, circle / circular)
        low = name.lower()
        close = [k for k in known if k.lower().startswith(low) or low.startswith(k.lower())][:1]
    return f"did you mean {close[0]!r}? " if close else ""


def unknown_name_text(kind: str, name: object, known: Iterable[str], *, known_label: str | None = None) -> str:
    """``unknown executor 'thread'; did you mean 'threads'? known executors: inline, threads``."""
    names = sorted(known)
    label = known_label or f"known {kind}s"
    return f"unknown {kind} {name!r}; {did_you_mean(name, names)}{label}: {', '.join(names) or '(none)'}"


class UnknownNameError(ConfigurationError):
    """A short name (source, UDF, executor, ...) that no registry knows."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(unknown_name_text(kind, name, self.known))


class GraphValidationError(ConfigurationError):
    """A graph that cannot run, found before anything ran.

    ``node`` and ``parameter`` say where; the message reads
    ``node 'bf' (masks): parameter 'r' must be > 0; got -3``.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        node_type: str | None = None,
        parameter: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.node = node
        self.node_type = node_type
        self.parameter = parameter
        self.reason = message
        self.file = file
        self.line = line
        where = []
        if node is not None:
            where.append(f"node {node!r}" + (f" ({node_type})" if node_type else ""))
        if parameter is not None:
            where.append(f"parameter {parameter!r}")
        prefix = ", ".join(where)
        text = f"{prefix}: {message}" if prefix else message
        if file is not None:
            text = f"{file}{f':{line}' if line else ''}: {text}"
        super().__init__(text)

    def located(self, file: str | None, line: int | None) -> GraphValidationError:
        """The same error, naming the graph file and line it comes from."""
        if self.file is not None or file is None:
            return self
        err = GraphValidationError(
            self.reason, node=self.node, node_type=self.node_type, parameter=self.parameter,
            file=file, line=line,
        )
        err.__cause__ = self.__cause__
        return err


class ParameterError(ConfigurationError):
    """A parameter value that fails its declared type or range check.

    Raised by :class:`detflow.nodes.params.Param` and by ``UDF.validate``; the graph
    turns it into a :class:`GraphValidationError` that also names the node.
    """

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.reason = message
        super().__init__(f"parameter {parameter!r} {message}")


class SourceError(DetflowError):
    """Reading input data failed."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """The file or resource a source names does not exist."""

    def __init__(self, path: Any, hint: str = "") -> None:
        self.path = path
        msg = f"no such file: {str(path)!r}"
        super().__init__(msg + (f"; {hint}" if hint else ""))

    def __str__(self) -> str:  # FileNotFoundError would print errno-style otherwise
        return str(self.args[0])


class SourceFormatError(SourceError, ValueError):
    """File contents, size or layout do not match what the source expects."""


class DetectorError(SourceError):
    """A live detector, its simulator or the connection to it failed.

    ``frames_received`` counts the frames of the current acquisition that arrived
    before the failure (``None`` where no acquisition was running).
    """

    def __init__(self, message: str, *, frames_received: int | None = None) -> None:
        self.frames_received = frames_received
        super().__init__(message)


class DetectorTimeoutError(DetectorError, TimeoutError):
    """The detector sent nothing for longer than the timeout."""


class DetectorDisconnectedError(DetectorError, ConnectionError):
    """The detector closed the connection (mid-acquisition, or before it began)."""


class DetectorProtocolError(DetectorError, ValueError):
    """Bytes on the wire that the detector's protocol does not allow (garbage, a bad header)."""


class DetectorCommandError(DetectorError):
    """A control command was answered with a non-zero status.

    ``command`` is the command as sent (``"SET NUMFRAMESTOACQUIRE 1024"``), ``status``
    the detector's code and ``reason`` what that code means.
    """

    def __init__(self, command: str, status: int, reason: str) -> None:
        self.command = command
        self.status = status
        self.reason = reason
        super().__init__(f"detector refused {command!r}: status {status} ({reason})")


class UDFError(DetflowError, RuntimeError):
    """A UDF broke the UDF contract (e.g. a ``result_only`` buffer it never produced)."""


class PartitionTimeoutError(DetflowError, TimeoutError):
    """A partition task ran longer than the executor's ``partition_timeout``; names the partition."""
class UDFMergeError(UDFError, NotImplementedError):
    """A UDF with ``sig`` or ``single`` buffers and no ``merge`` (LiberTEM: ``NotImplementedError``)."""


class UDFMethodError(UDFError, TypeError):
    """A UDF that implements none of the ``process_*`` methods (LiberTEM: ``TypeError``)."""


class MissingDependencyError(DetflowError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, what: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{what} needs the package {package!r}, which is not installed; install it with "
            f"pip install 'detflow[{extra}]'",
            name=package,
        )


#: top-level module -> (the name pip knows it by, the extra of pyproject.toml that installs it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "h5py": ("h5py", "hdf5"),
    "hdf5plugin": ("hdf5plugin", "hdf5"),
    "holoviews": ("holoviews", "plots"),
    "bokeh": ("bokeh", "plots"),
    "panel": ("panel", "plots"),
    "distributed": ("distributed", "distributed"),
    "sparse": ("sparse", "sparse"),
    "scipy": ("scipy", "scipy"),
    "rsciio": ("rosettasciio", "formats"),
    "mrcfile": ("mrcfile", "formats"),
    "psycopg": ("psycopg", "postgres"),
    "zmq": ("pyzmq", "live"),
    "lz4": ("lz4", "live"),
    "bitshuffle": ("bitshuffle", "live"),
    "cbor2": ("cbor2", "live"),
}


def import_optional(module: str, what: str, *, extra: str | None = None) -> ModuleType:
    """Import ``module`` for ``what``; if it is missing, say which extra installs it.

    Every optional import in detflow goes through here, so the message is the same
    everywhere: ``the hdf5 source needs the package 'h5py', which is not installed;
    install it with pip install 'detflow[hdf5]'``.

    Examples
    --------
    >>> import_optional("json", "the example").__name__
    'json'
    >>> import_optional("h5py_not_a_module", "the example", extra="hdf5")
    Traceback (most recent call last):
    ...
    detflow.errors.MissingDependencyError: the example needs the package 'h5py_not_a_module', ...
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.partition(".")[0]
        missing = (err.name or top).partition(".")[0]
        # an installed module that fails on something else than an optional package is a bug, not "missing"
        if missing != top and missing not in OPTIONAL_MODULES:
            raise
        package, default_extra = OPTIONAL_MODULES.get(missing, (missing, "all"))
        raise MissingDependencyError(package, extra or default_extra, what) from err


def annotate_node_error(
    err: BaseException, *, node_id: str, node_type: str, where: str, traceback_text: str = ""
) -> BaseException:
    """Add the node (and where it ran) to an exception raised by user code.

    The exception keeps its type, so ``except ZeroDivisionError`` still works;
    notes travel with it through pickle to the driver.
    """
    if getattr(err, "node_id", None) is None:
        with contextlib.suppress(AttributeError):  # exceptions with __slots__
            err.node_id = node_id  # type: ignore[attr-defined]
        err.add_note(f"raised in node {node_id!r} ({node_type}) {where}")
        if traceback_text:
            err.add_note("worker traceback:\n" + traceback_text.rstrip())
    return err
