"""Data sources of the core benchmark: the same frames as ``.npy``, raw, or in memory.

Imported by ``bench_core.py`` (``--sources``), in the detflow interpreter and in the
LiberTEM worker alike:

* ``npy``: the cached ``.npy``, memory-mapped (``ctx.load("npy", path=...)``);
* ``raw``: a headerless copy of the same frames (``<name>.raw`` next to the ``.npy``,
  written once and cached), read with either framework's raw reader
  (``ctx.load("raw", path=..., dtype="uint16", nav_shape=..., sig_shape=...)``). LiberTEM
  0.16's ``RawFileDataSet`` has no byte-offset parameter (only ``sync_offset``, in
  frames), so both frameworks read the copy, not the ``.npy`` behind its header;
* ``memory``: the whole array read into RAM (``np.load`` without ``mmap_mode``) and
  handed over as ``ctx.load("memory", data=arr)`` (LiberTEM: ``sig_dims=2``). Each
  framework's half loads its own array and drops it before the next half starts, so
  the benchmark never holds two copies at once.

It also prints the memory-source target of the report (detflow's ``pipelined`` and
``dask`` on the in-memory array: >= 1 GB/s and < 2 GiB above the array).
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SOURCES = ("npy", "raw", "memory")
DEFAULT_SOURCES = "npy"

#: the memory-source target: these detflow executors, this throughput, this much above the array
TARGET_EXECUTORS = ("pipelined", "dask")
TARGET_GBS = 1.0
TARGET_ABOVE = 2 * 2**30

ABOVE_NOTE = (
    "+RSS / +PSS: the row's peak minus a baseline taken just before that executor's context\n"
    "  was created (for 'memory' rows: after the array was loaded, so the array itself is\n"
    "  not in it), both summed over the process doing the work and all its descendants.\n"
    "  +RSS counts a shared page once per process that maps it (a shared-memory transport\n"
    "  counts twice while in flight); +PSS (Pss from /proc/PID/smaps_rollup, sampled every\n"
    "  100 ms, memory rows only) splits shared pages among the processes that map them, so\n"
    "  it is the footprint the machine actually pays."
)


def npy_header_len(path: Path) -> int:
    """Byte offset of the data in a ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


def raw_path(npy: Path) -> Path:
    return npy.with_suffix(".raw")


def ensure_raw(npy: Path, *, regen: bool = False) -> tuple[Path, str]:
    """The ``.npy``'s frames without the header (written once, cached next to it)."""
    dst = raw_path(npy)
    offset = npy_header_len(npy)
    size = npy.stat().st_size - offset
    if not regen and dst.exists() and dst.stat().st_size == size and dst.stat().st_mtime >= npy.stat().st_mtime:
        return dst, "cached"
    tmp = dst.with_name(dst.name + ".part")
    with open(npy, "rb") as src, open(tmp, "wb") as out:
        src.seek(offset)
        shutil.copyfileobj(src, out, 64 * 2**20)
    os.replace(tmp, dst)
    return dst, f"written from the .npy (header of {offset} bytes dropped)"


def source_file(source: str, npy: Path) -> Path:
    """The file a source reads (``memory`` reads the ``.npy`` once, into RAM)."""
    return raw_path(npy) if source == "raw" else npy


def load_array(npy: Path) -> np.ndarray:
    """The whole dataset in RAM: anonymous memory, all of it resident."""
    return np.load(npy)


def loader(framework: str, source: str, npy: Path, arr: np.ndarray | None) -> Callable[[Any], Any]:
    """``ctx -> dataset`` for ``framework`` (``detflow`` / ``LiberTEM``) and ``source``."""
    if source == "npy":
        return lambda ctx: ctx.load("npy", path=str(npy))
    if source == "raw":
        path = raw_path(npy)
        shape = np.load(npy, mmap_mode="r").shape
        nav, sig = tuple(shape[:2]), tuple(shape[2:])
        return lambda ctx: ctx.load("raw", path=str(path), dtype="uint16", nav_shape=nav, sig_shape=sig)
    if source == "memory":
        if arr is None:
            raise ValueError("memory source without an array")
        if framework == "LiberTEM":
            return lambda ctx: ctx.load("memory", data=arr, sig_dims=2)
        return lambda ctx: ctx.load("memory", data=arr)
    raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")


def run_with_source(
    framework: str,
    source: str,
    npy: Path,
    bench: Callable[[Callable[[Any], Any], bool], list[dict[str, Any]]],
    log: Callable[[str], None],
    rss_now: Callable[[], int],
) -> list[dict[str, Any]]:
    """Run ``bench(load, pss)`` on ``source``; for ``memory`` load the array first and
    free it afterwards, so that the other framework's half never meets a second copy."""
    arr = None
    if source == "memory":
        log(f"[{framework}] loading {npy.name} into memory ...")
        arr = load_array(npy)
        log(f"[{framework}] array loaded ({arr.nbytes / 2**30:.2f} GiB); process RSS {rss_now() / 2**30:.2f} GiB")
    load = loader(framework, source, npy, arr)
    try:
        rows = bench(load, source == "memory")
    finally:
        del load, arr
        gc.collect()
    for r in rows:
        r["source"] = source
    if source == "memory":
        log(f"[{framework}] array freed; process RSS {rss_now() / 2**30:.2f} GiB")
    return rows


def report_memory_target(
    rows: Sequence[dict[str, Any]],
    nbytes: int,
    stat_of: Callable[[Sequence[float], str], float],
    stat: str,
    p: Callable[..., None],
) -> None:
    """detflow's executors on the in-memory array against the target."""
    mem = [r for r in rows if r.get("source") == "memory" and r["framework"] == "detflow" and "times" in r]
    if not mem:
        return
    p()
    p(
        f"detflow on the in-memory array ({nbytes / 2**30:.2f} GiB): target for "
        f"{' and '.join(TARGET_EXECUTORS)}: >= {TARGET_GBS:g} GB/s and < {TARGET_ABOVE / 2**30:g} GiB above the array"
    )
    p("  ('above the array' = peak +RSS / +PSS as in the table; 'met' needs the GB/s and the +RSS condition)")
    for r in mem:
        g = nbytes / stat_of(r["times"], stat) / 1e9
        above_rss = r["rss"] - r["base_rss"] if "rss" in r and "base_rss" in r else None
        above_pss = r["pss"] - r["base_pss"] if r.get("pss") and r.get("base_pss") else None
        parts = [f"{g:5.2f} GB/s"]
        parts.append("+RSS " + ("?" if above_rss is None else f"{above_rss / 2**30:.2f} GiB"))
        parts.append("+PSS " + ("-" if above_pss is None else f"{above_pss / 2**30:.2f} GiB"))
        verdict = ""
        if r["executor"] in TARGET_EXECUTORS:
            ok = g >= TARGET_GBS and above_rss is not None and above_rss < TARGET_ABOVE
            verdict = "  target: " + ("met" if ok else "MISSED")
            if not ok and above_pss is not None and g >= TARGET_GBS and above_pss < TARGET_ABOVE:
                verdict += " (met by +PSS)"
        p(f"  {r['executor']:<10} {r['analysis']:<7} " + ", ".join(parts) + verdict)
