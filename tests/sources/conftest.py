"""Builders for every source type, for the conformance suite.

Each builder writes (or wraps) ``data``, an array of shape ``nav + sig``, with an
independent writer (``np.save``, ``ndarray.tofile``, h5py, zarr's API, detflow's MIB
writer, which tests/sources/test_mib.py checks against hand-built bytes), and returns
the keyword arguments for ``ctx.load(kind, ...)``; a format that cannot hold a dtype
skips the test. A new format adds one builder here and gets
the whole conformance suite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

Builder = Callable[[np.ndarray, Path], tuple[str, dict[str, Any]]]


def _memory(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    return "memory", {"data": data}


def _npy(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    path = tmp / "data.npy"
    np.save(path, data)
    return "npy", {"path": str(path)}


def _raw(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    path = tmp / "data.raw"
    header = b"\x7fHEADER!" * 3
    with open(path, "wb") as f:
        f.write(header)
        data.tofile(f)
    return "raw", {
        "path": str(path), "dtype": data.dtype.str, "nav_shape": data.shape[:-2],
        "sig_shape": data.shape[-2:], "offset": len(header),
    }


def _mib(raw: bool) -> Builder:
    """A Merlin acquisition, 4 frames per file (so reads cross file boundaries);
    6-bit for uint8, 12-bit for uint16, 24-bit for uint32 (U08/U16/U32 frames, or raw
    R6/R12/R24)."""

    def build(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
        from detflow.sources.mib import write_mib

        depth = {np.dtype("uint8"): 6, np.dtype("uint16"): 12, np.dtype("uint32"): 24}.get(data.dtype)
        if depth is None:  # the format itself: counts decode to native-endian unsigned integers
            pytest.skip(f"a Merlin detector records unsigned counts; MIB cannot hold {data.dtype} data")
        write_mib(tmp / "scan.hdr", data, counter_depth=depth, raw=raw, frames_per_file=4)
        return "mib", {"path": str(tmp / "scan.hdr")}

    return build


def _nav_chunks(data: np.ndarray) -> tuple[int, ...]:
    """Chunks of 2 along the first nav axis, whole along the rest: partitions snap to them."""
    return (2, *data.shape[1:])


def _hdf5(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    import h5py

    path = tmp / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/instrument/data", data=data, chunks=_nav_chunks(data), compression="gzip")
        f.create_dataset("entry/mask", data=np.ones(data.shape[-2:], dtype=bool))
    return "hdf5", {"path": str(path)}


def _zarr(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    import zarr

    path = tmp / "data.zarr"
    # zarr v3 decodes to native byte order; v2 keeps a big-endian dtype, so test that there
    fmt = 2 if data.dtype.byteorder == ">" else 3
    z = zarr.create_array(path, shape=data.shape, chunks=_nav_chunks(data), dtype=data.dtype, zarr_format=fmt)
    z[...] = data
    return "zarr", {"path": str(path)}


def _dask(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    import dask.array as da

    return "dask", {"arr": da.from_array(data, chunks=_nav_chunks(data))}


def _csr(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    from detflow.sources.csr import save_csr

    path = tmp / "data.npz"
    save_csr(path, data)
    return "csr", {"path": str(path)}


def _dm(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    """A DM4 file (see tests/sources/dm_files.py: written from the format's layout, checked by rosettasciio)."""
    pytest.importorskip("rsciio.digitalmicrograph", reason="the formats extra: pip install -e '.[formats]'")
    from tests.sources.dm_files import IMAGE_TYPES, write_dm

    if data.dtype.byteorder == ">" or data.dtype not in IMAGE_TYPES:
        pytest.skip(f"a DM file written here holds little-endian pixels of {sorted(map(str, IMAGE_TYPES))}")
    return "dm", {"path": str(write_dm(tmp / "data.dm4", data))}


def _seq(data: np.ndarray, tmp: Path) -> tuple[str, dict[str, Any]]:
    """A Norpix .seq file (see tests/sources/test_seq.py: written from the format's layout); frames in one line."""
    from tests.sources.test_seq import write_seq

    if data.dtype.kind != "u" or data.dtype.byteorder == ">":
        pytest.skip(f"a .seq file holds little-endian unsigned pixels; not {data.dtype}")
    frames = data.reshape(-1, *data.shape[-2:])
    return "seq", {"path": str(write_seq(tmp / "data.seq", frames)), "nav_shape": data.shape[:-2]}


BUILDERS: dict[str, Builder] = {
    "memory": _memory, "npy": _npy, "raw": _raw, "mib": _mib(False), "mib-raw": _mib(True),
    "hdf5": _hdf5, "zarr": _zarr, "dask": _dask, "csr": _csr, "dm": _dm, "seq": _seq,
}
#: kinds whose partitions carry data: pickles are not recipe-small
CARRY_DATA = {"memory", "dask", "csr"}


@pytest.fixture(params=sorted(BUILDERS))
def make_source(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """``make_source(data, **load_kwargs)`` -> a loaded source of each type."""
    import detflow as df

    builder = BUILDERS[request.param]

    def make(data: np.ndarray, **load_kwargs: Any) -> Any:
        kind, kwargs = builder(data, tmp_path)
        return df.Context.make_with("inline").load(kind, **{**kwargs, **load_kwargs})

    make.kind = request.param  # type: ignore[attr-defined]
    return make
