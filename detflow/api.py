"""The offline entry point, in the manner of LiberTEM's ``Context``.

Every ``run_udf`` builds a :class:`~detflow.graph.Graph` (source → partition → one
node per UDF) and runs it; there is no second engine behind the convenience API.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from detflow.errors import ConfigurationError, ParameterError
from detflow.executors.base import Executor, make_executor
from detflow.graph import Graph
from detflow.graph.results import ResultBuffer, ResultDict, UDFResults
from detflow.nodes.base import UDF
from detflow.registry import SOURCES
from detflow.sources.base import Source
from detflow.sources.params import open_source

if TYPE_CHECKING:
    from detflow.sinks.base import Sink

__all__ = ["Context"]


async def _aiter(gen: Generator[UDFResults, None, None]) -> AsyncIterator[UDFResults]:
    """``gen`` stepped in a worker thread, one item per ``await``."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, gen, done)
            if item is done:
                return
            yield item  # type: ignore[misc]
    finally:
        gen.close()


class Context:
    """Loads datasets and runs UDFs over them on an executor.

    Parameters
    ----------
    executor
        An executor object, or ``None`` for threads on all available cores.
    plot_class
        What ``run_udf(plots=...)`` draws with: ``None`` for HoloViews images
        (:class:`~detflow.sinks.plots.HoloViewsPlot`), or
        :class:`~detflow.sinks.plots.NullPlot` for headless runs and tests. The plots
        of the last run are kept in ``ctx.plots``.

    Examples
    --------
    >>> import numpy as np
    >>> import detflow as df
    >>> from detflow.nodes import SumUDF
    >>> with df.Context.make_with("inline") as ctx:
    ...     ds = ctx.load("memory", data=np.ones((4, 4, 8, 8), dtype=np.uint16))
    ...     float(ctx.run_udf(dataset=ds, udf=SumUDF())["intensity"].data[0, 0])
    16.0
    """

    def __init__(self, executor: Executor | None = None, *, plot_class: Any = None) -> None:
        self.executor = executor if executor is not None else make_executor("threads")
        self.plot_class = plot_class
        #: the plot objects of the last run with ``plots=``, one per image
        self.plots: list[Any] = []

    @classmethod
    def make_with(cls, spec: str = "threads", *, cpus: int | None = None, plot_class: Any = None,
                  **kwargs: Any) -> Context:
        """A context on the executor ``spec`` (``"inline"``, ``"threads"``, ...).

        ``kwargs`` go to the executor, e.g. ``partition_timeout=60`` (threads,
        pipelined): a partition running longer stops the run with a
        :class:`~detflow.errors.PartitionTimeoutError` naming it.
        """
        return cls(make_executor(spec, cpus=cpus, **kwargs), plot_class=plot_class)

    # --- data -----------------------------------------------------------------------
    def load(
        self,
        filetype: str,
        *args: Any,
        num_partitions: int | None = None,
        frames_per_partition: int | None = None,
        io_backend: Any = None,
        **kwargs: Any,
    ) -> Source:
        """Open a dataset: ``ctx.load("npy", path=...)``, ``"raw"``, ``"memory"``, ...

        ``nav_shape``, ``sig_shape`` and ``sync_offset`` work for every type;
        ``num_partitions`` / ``frames_per_partition`` set how it is cut for runs.
        ``io_backend`` (LiberTEM's mmap/buffered/direct choice) is accepted and not
        needed: each source reads its format in the way that suits it.
        """
        cls = SOURCES.get(filetype.lower())
        try:
            source = open_source(cls, *args, **kwargs)
        except ParameterError as err:
            raise ConfigurationError(f"{filetype} source, parameter {err.parameter!r}: {err.reason}") from err
        except TypeError as err:
            raise ConfigurationError(f"{filetype} source: {err}") from err
        source.partition_sizing = (frames_per_partition, num_partitions)
        return source

    # --- running --------------------------------------------------------------------
    def _graph(self, dataset: Source, udfs: Sequence[UDF], roi: Any, corrections: Any = None,
               backends: Any = None) -> Graph:
        if not isinstance(dataset, Source):
            raise ConfigurationError(
                f"dataset must be a dataset from ctx.load(); got {type(dataset).__name__}"
            )
        g = Graph("run_udf")
        g.source(dataset)
        fpp, nparts = getattr(dataset, "partition_sizing", (None, None))
        g.partition(frames_per_partition=fpp, num_partitions=nparts, roi=roi, corrections=corrections,
                    backends=backends)
        for udf in udfs:
            if not isinstance(udf, UDF):
                raise ConfigurationError(f"udf must be a UDF instance; got {udf!r}")
            g.udf(udf)
        return g

    def run_udf_iter(
        self,
        dataset: Source,
        udf: UDF | Sequence[UDF],
        roi: Any = None,
        *,
        progress: bool = False,
        plots: Any = None,
        corrections: Any = None,
        backends: Any = None,
        sync: bool = True,
    ) -> Iterator[UDFResults]:
        """Yield :class:`~detflow.graph.results.UDFResults` after each partition merges.

        ``corrections`` (a :class:`~detflow.sources.corrections.CorrectionSet`) are
        applied to every frame before any UDF sees it. ``progress=True`` shows a bar of
        frames done (ROI frames only). ``plots=True`` draws every 2-D result live
        (in a notebook they fill in as the run goes), ``plots=[["intensity"],
        [("magnitude", np.log1p)]]`` chosen buffers per UDF, optionally transformed;
        the plot objects are kept in ``ctx.plots`` (see ``plot_class``).

        ``sync=False`` returns an asynchronous iterator instead (LiberTEM's asyncio API):
        ``async for part in ctx.run_udf_iter(..., sync=False)``; the run proceeds in a
        worker thread, one partial result at a time, so the event loop stays free."""
        if not sync:
            # an AsyncIterator: typed as the common case, sync=True
            return _aiter(self._iter(dataset, udf, roi, progress, plots, corrections, backends))  # type: ignore[return-value]
        return self._iter(dataset, udf, roi, progress, plots, corrections, backends)

    def _iter(self, dataset: Source, udf: UDF | Sequence[UDF], roi: Any, progress: bool, plots: Any,
              corrections: Any, backends: Any) -> Generator[UDFResults, None, None]:
        udfs = [udf] if isinstance(udf, UDF) else list(udf)
        graph = self._graph(dataset, udfs, roi, corrections, backends)
        sinks: list[Sink] = []
        if plots is not None and plots is not False:
            from detflow.sinks.plots import LivePlotSink

            sink = LivePlotSink(plots, udfs=udfs, plot_class=self.plot_class)
            self.plots = sink.plots
            sinks.append(sink)
        yield from graph.run_iter(executor=self.executor, progress=progress, sinks=sinks)

    @overload
    def run_udf(self, dataset: Source, udf: UDF, roi: Any = None, *, progress: bool = False,
                plots: Any = None, corrections: Any = None, backends: Any = None,
                sync: bool = True) -> ResultDict: ...

    @overload
    def run_udf(self, dataset: Source, udf: Sequence[UDF], roi: Any = None, *,
                progress: bool = False, plots: Any = None, corrections: Any = None,
                backends: Any = None, sync: bool = True) -> tuple[ResultDict, ...]: ...

    def run_udf(
        self,
        dataset: Source,
        udf: UDF | Sequence[UDF],
        roi: Any = None,
        *,
        progress: bool = False,
        plots: Any = None,
        corrections: Any = None,
        backends: Any = None,
        sync: bool = True,
    ) -> ResultDict | tuple[ResultDict, ...]:
        """Run one UDF (returns its results) or a list of UDFs (a tuple, one per UDF)
        in one pass over the data. ``sync=False`` returns an awaitable of the same
        (the run proceeds in a worker thread).

        Each UDF's results are LiberTEM's ``{name: buffer}`` dict with a
        ``to_xarray()`` (:class:`~detflow.graph.results.ResultDict`): the same dims,
        coordinates and attributes as ``Graph.run`` and the zarr sink give."""
        if not sync:
            kw = dict(progress=progress, plots=plots, corrections=corrections, backends=backends)
            return asyncio.to_thread(self.run_udf, dataset, udf, roi, **kw)  # type: ignore[arg-type, return-value]
        last = None
        for last in self._iter(dataset, udf, roi, progress, plots, corrections, backends):  # noqa: B007
            pass
        assert last is not None
        buffers = tuple(b if isinstance(b, ResultDict) else ResultDict(b) for b in last.buffers)
        return buffers[0] if isinstance(udf, UDF) else buffers

    def map(
        self,
        dataset: Source,
        f: Callable[[np.ndarray], Any],
        roi: Any = None,
        *,
        progress: bool = False,
        backends: Any = None,
    ) -> ResultBuffer:
        """Apply ``f`` to every frame; the nav-shaped result (``AutoUDF``)."""
        from detflow.nodes.auto import AutoUDF

        res = self.run_udf(dataset, AutoUDF(f=f), roi, progress=progress, backends=backends)
        return res["result"]

    def export_dataset(
        self,
        dataset: Source,
        *,
        path: str | os.PathLike[str],
        progress: bool = False,
        overwrite: bool = False,
        provenance: Mapping[str, Any] | None = None,
    ) -> str:
        """Write ``dataset`` (as loaded: nav/sig shape, sync_offset) to ``.npy`` or zarr.

        The format follows the suffix (``.npy``; ``.zarr`` or a directory: zarr v3);
        an existing ``path`` is an error unless ``overwrite=True``. Partitions are read
        and written on this context's executor. Returns the path written.
        """
        from detflow.export import export_dataset

        return export_dataset(dataset, path, executor=self.executor, progress=progress, overwrite=overwrite,
                              provenance=provenance)

    # --- lifetime -----------------------------------------------------------------
    def close(self) -> None:
        self.executor.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Context executor={self.executor!r}>"
