"""``inline``: run every item in the calling thread, one after another."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["InlineExecutor"]


class InlineExecutor:
    """Runs items sequentially in the calling thread.

    Parameters
    ----------
    debug
        Round-trip every item and result through cloudpickle, so what would break in a
        separate process (an unpicklable UDF, a partition that carries an open file)
        breaks here too. The test suite runs with ``debug=True``.

    Examples
    --------
    >>> list(InlineExecutor(debug=True).map_unordered(len, ["ab", "c"]))
    [2, 1]
    """

    n_workers = 1
    remote = False

    def __init__(self, *, debug: bool = False) -> None:
        self.debug = debug

    @classmethod
    def make_local(cls, *, cpus: int | None = None, debug: bool = False) -> InlineExecutor:
        return cls(debug=debug)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if not self.debug:
            for item in items:
                yield fn(item)
            return
        import cloudpickle

        fn = cloudpickle.loads(cloudpickle.dumps(fn))
        for item in items:
            result = fn(cloudpickle.loads(cloudpickle.dumps(item)))
            yield cloudpickle.loads(cloudpickle.dumps(result))

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"InlineExecutor(debug={self.debug})"
