"""The notebooks in ``notebooks/`` run top to bottom, and none is committed with outputs.

Each notebook runs in a fresh Jupyter kernel on *this* interpreter (the ``kernel_name``
fixture in ``tests/conftest.py``). A failure names the notebook, the cell and the error;
a warning a notebook prints is a failure too, since a reader would see it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: seconds one cell may take (each notebook takes seconds in all)
CELL_TIMEOUT = 120
#: ``warnings.showwarning``'s format: ``file:line: SomeWarning: message``
_WARNING = re.compile(r"\b\w*Warning: ")
#: colours in IPython's tracebacks
_ANSI = re.compile(r"\x1b\[[0-9;]*m")




def _check_rich_outputs(name: str, outputs: list) -> None:
    """Notebook 02 shows a graph as HTML (its nodes and passes), a run's progress as a notebook
    widget (tqdm's notebook mode), and results as xarray's HTML repr."""
    html = [out.get("data", {}).get("text/html", "") for out in outputs if out.output_type in
            ("execute_result", "display_data")]
    graphs = [h for h in html if 'class="detflow-graph"' in h]
    assert graphs, f"{name}: no graph was shown as HTML"
    assert any("<b>com</b>" in h and "cx &larr; disk.cx" in h and "<li>pass 2: read" in h for h in graphs), \
        f"{name}: the DPC graph's HTML misses its nodes, references or passes"
    widgets = [out for out in outputs if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert widgets, f"{name}: the run with progress=True showed no notebook progress bar"
    assert any("xr-wrap" in h or "xarray.Dataset" in h for h in html), f"{name}: no result shown as xarray"


def _source_line(cell: dict) -> str:
    first = next((line for line in cell["source"].splitlines() if line.strip()), "")
    return first if len(first) <= 80 else first[:77] + "..."


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_name: str) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    current: dict[str, float] = {}
    timings: list[tuple[int, float]] = []

    def on_cell_start(cell: dict, cell_index: int) -> None:
        current.update(index=cell_index, t0=time.perf_counter())

    def on_cell_executed(cell: dict, cell_index: int, execute_reply: dict) -> None:
        timings.append((cell_index, time.perf_counter() - current["t0"]))

    client = NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT,
        # the folder a reader's Jupyter would start the kernel in; notebooks write only to temporary folders
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        on_cell_start=on_cell_start, on_cell_executed=on_cell_executed,
    )
    before = sorted(NOTEBOOK_DIR.rglob("*"))
    t0 = time.perf_counter()
    failure = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as err:
        index = int(current.get("index", -1))
        cell = nb.cells[index] if index >= 0 else {"source": ""}
        failure = f"{path.name}: cell {index} ({_source_line(cell)!r}) failed:\n{_ANSI.sub('', str(err))}"
    if failure is not None:  # outside the except block: the message once, without the chained traceback
        pytest.fail(failure, pytrace=False)
    elapsed = time.perf_counter() - t0
    slowest = sorted(timings, key=lambda t: -t[1])[:3]
    print(f"{path.name}: {elapsed:.1f} s; slowest cells: "
          + ", ".join(f"{i} ({s:.1f} s)" for i, s in slowest))

    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    for i, cell in code:
        where = f"{path.name}: cell {i} ({_source_line(cell)!r})"
        assert cell.execution_count is not None, f"{where} did not run"
        for out in cell.outputs:
            assert out.output_type != "error", f"{where} shows an error: {out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream" and out.name == "stderr":
                assert not _WARNING.search(out.text), f"{where} printed a warning:\n{out.text}"
    assert sum(len(c.outputs) for _, c in code) >= len(code) // 2, f"{path.name}: most cells showed nothing"
    if path.name == "02-graph-by-hand.ipynb":
        _check_rich_outputs(path.name, [out for _, c in code for out in c.outputs])
    assert sorted(NOTEBOOK_DIR.rglob("*")) == before, f"{path.name} wrote files into {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        assert not cell["outputs"], f"{path.name}: cell {i} ({src[:60]!r}) is committed with outputs"
        assert cell["execution_count"] is None, f"{path.name}: cell {i} ({src[:60]!r}) has an execution count"


def test_there_are_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01-offline-analysis.ipynb", "02-graph-by-hand.ipynb", "03-live-acquisition.ipynb"} <= names
