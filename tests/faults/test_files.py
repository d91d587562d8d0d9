"""Faults in files on disk: short, inconsistent or ambiguous inputs.

Never a silently wrong result: each case is an error that names the file and the
counts, or, where the user asks for padding, exactly the data there is plus zeros.
A new fault is one more entry in a table below.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import detflow as df
from detflow.errors import SourceFormatError
from detflow.sources.base import Source
from detflow.sources.mib import MibSource
from detflow.sources.mib_write import write_mib

RNG = np.random.default_rng(5)
DATA = RNG.integers(0, 4000, size=(4, 4, 8, 8)).astype(np.uint16)  # 16 frames, 12-bit counts


def read_all(src: Source) -> np.ndarray:
    return np.concatenate([p.read() for p in src.partitions()])


def load(kind: str, **kwargs: Any) -> Source:
    return df.Context.make_with("inline").load(kind, **kwargs)


# --- short inputs: (make the file, then load kwargs) -> error naming the file and counts ---
def _mib_cut_at_a_frame_boundary(tmp: Path) -> tuple[str, dict[str, Any], int]:
    write_mib(tmp / "cut.hdr", DATA)
    frame_bytes = os.path.getsize(tmp / "cut.mib") // 16
    os.truncate(tmp / "cut.mib", 10 * frame_bytes)  # 6 whole frames lost: nothing in the file looks wrong
    return "mib", {"path": str(tmp / "cut.hdr")}, 10


def _hdr_scan_larger_than_the_data(tmp: Path) -> tuple[str, dict[str, Any], int]:
    write_mib(tmp / "big.hdr", DATA)
    text = (tmp / "big.hdr").read_text("latin-1").replace("ScanX:\t4", "ScanX:\t6")
    (tmp / "big.hdr").write_text(text, "latin-1")
    return "mib", {"path": str(tmp / "big.hdr")}, 16


def _npy_nav_shape_larger(tmp: Path) -> tuple[str, dict[str, Any], int]:
    np.save(tmp / "d.npy", DATA)
    return "npy", {"path": str(tmp / "d.npy"), "nav_shape": (5, 4)}, 16


def _zarr_missing_chunk(tmp: Path) -> tuple[str, dict[str, Any], int]:
    import shutil

    import zarr

    z = zarr.create_array(tmp / "d.zarr", shape=DATA.shape, chunks=(1, 4, 8, 8), dtype=DATA.dtype)
    z[...] = DATA
    shutil.rmtree(tmp / "d.zarr" / "c" / "2")  # the chunk of nav row 2: 4 frames
    return "zarr", {"path": str(tmp / "d.zarr")}, 12


SHORT: dict[str, tuple[Callable[[Path], tuple[str, dict[str, Any], int]], str]] = {
    "mib cut at a frame boundary": (_mib_cut_at_a_frame_boundary, r"cut\.hdr: holds 10 frames .* needs 16: 6 missing"),
    "hdr ScanX x ScanY larger than the data": (_hdr_scan_larger_than_the_data,
                                               r"big\.hdr: holds 16 frames .*scan shape .*\(4, 6\) needs 24"),
    "npy with a larger nav_shape": (_npy_nav_shape_larger, r"d\.npy: holds 16 frames .*nav_shape \(5, 4\) needs 20"),
    "zarr with a missing chunk": (_zarr_missing_chunk, r"d\.zarr: 1 of the array's 4 chunks are missing"),
}


@pytest.mark.parametrize("case", sorted(SHORT))
def test_a_short_input_is_an_error_naming_the_file_and_the_counts(tmp_path: Path, case: str) -> None:
    make, message = SHORT[case]
    kind, kwargs, _ = make(tmp_path)
    with pytest.raises(SourceFormatError, match=message):
        load(kind, **kwargs)


@pytest.mark.parametrize("case", sorted(SHORT))
def test_allow_short_reads_what_there_is_and_zeros(tmp_path: Path, case: str) -> None:
    make, _ = SHORT[case]
    kind, kwargs, have = make(tmp_path)
    src = load(kind, **kwargs, allow_short=True)
    got = read_all(src).reshape(-1, 8, 8)
    flat = DATA.reshape(16, 8, 8)
    if kind == "zarr":  # the missing chunk is a hole in the middle
        expected = flat.copy()
        expected[8:12] = 0
    else:
        expected = np.zeros((src.meta.n_frames, 8, 8), DATA.dtype)
        expected[:have] = flat[:have]
    np.testing.assert_array_equal(got, expected)


def test_a_negative_sync_offset_is_padding_asked_for(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", DATA)
    src = load("npy", path=str(tmp_path / "d.npy"), sync_offset=-2)  # 2 blank frames, then 14 of the 16
    np.testing.assert_array_equal(read_all(src)[2:], DATA.reshape(16, 8, 8)[:14])


# --- which files make up a MIB acquisition -------------------------------------------------
def frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=(n, 8, 8)).astype(np.uint16)


def test_a_prefix_mib_that_exists_is_taken_alone(tmp_path: Path) -> None:
    """``r1.hdr`` next to ``r12.mib`` (another acquisition, another frame count)."""
    r1, r12 = frames(4, 1), frames(6, 2)
    write_mib(tmp_path / "r1.hdr", r1)
    write_mib(tmp_path / "r12.hdr", r12)
    src = MibSource(tmp_path / "r1.hdr")
    assert src.files == [str(tmp_path / "r1.mib")]
    np.testing.assert_array_equal(read_all(src), r1)
    np.testing.assert_array_equal(read_all(MibSource(tmp_path / "r12.mib")), r12)


def test_numbered_files_with_a_header_of_their_own_belong_to_that_acquisition(tmp_path: Path) -> None:
    r1, r12 = frames(4, 1), frames(3, 2)
    write_mib(tmp_path / "r1.hdr", r1, frames_per_file=2)  # as r11.mib, r12.mib; renamed r1_1, r1_2
    os.replace(tmp_path / "r11.mib", tmp_path / "r1_1.mib")
    os.replace(tmp_path / "r12.mib", tmp_path / "r1_2.mib")
    write_mib(tmp_path / "r12.hdr", r12, first_sequence=1)
    src = MibSource(tmp_path / "r1.hdr")
    assert sorted(os.path.basename(f) for f in src.files) == ["r1_1.mib", "r1_2.mib"]
    np.testing.assert_array_equal(read_all(src), r1)


def test_numbered_files_of_another_counter_depth_are_left_out(tmp_path: Path) -> None:
    scan = frames(4, 3)
    write_mib(tmp_path / "s.hdr", scan, frames_per_file=2)
    write_mib(tmp_path / "other", (frames(2, 4) % 64).astype(np.uint8), counter_depth=6, write_hdr=False,
              first_sequence=5)
    os.replace(tmp_path / "other.mib", tmp_path / "s3.mib")
    src = MibSource(tmp_path / "s.hdr")
    assert sorted(os.path.basename(f) for f in src.files) == ["s1.mib", "s2.mib"]
    np.testing.assert_array_equal(read_all(src), scan)


def test_numbered_files_of_mixed_sizes_name_the_files(tmp_path: Path) -> None:
    write_mib(tmp_path / "m.hdr", frames(4, 5), frames_per_file=2)
    write_mib(tmp_path / "other", np.zeros((2, 16, 16), np.uint16), write_hdr=False, first_sequence=5)
    os.replace(tmp_path / "other.mib", tmp_path / "m3.mib")
    with pytest.raises(SourceFormatError, match=r"m3\.mib, frame 0: mixed frame sizes.*16x16.*m1\.mib has 8x8"):
        MibSource(tmp_path / "m.hdr")


def test_a_loose_prefix_match_is_not_taken(tmp_path: Path) -> None:
    """``scan.hdr`` without ``scan.mib`` or ``scan<digits>.mib`` has no data, whatever ``scan*.mib`` holds."""
    write_mib(tmp_path / "scan.hdr", frames(2, 6))
    os.replace(tmp_path / "scan.mib", tmp_path / "scan_b.mib")
    with pytest.raises(FileNotFoundError, match=r"scan\*\.mib"):
        MibSource(tmp_path / "scan.hdr")


# --- YAML graph and config files ----------------------------------------------------------
def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """``levels`` of lists of ``width`` aliases each: width**levels leaves in a few hundred bytes."""
    lines = ["schema_version: 1", "name: bomb", f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _graph_file(path: Path) -> Any:
    from detflow.graph.io import read_graph_file

    return read_graph_file(path)


def _config_file(path: Path) -> Any:
    from detflow.graph.config import load_config_file

    return load_config_file(path)


YAML_READERS = {"graph file": _graph_file, "config file": _config_file}


@pytest.mark.parametrize("reader", sorted(YAML_READERS))
def test_a_yaml_alias_bomb_is_refused(tmp_path: Path, reader: str) -> None:
    from detflow.errors import GraphValidationError

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 700  # 9**9 = 387 million nodes once expanded
    with pytest.raises(GraphValidationError, match=r"bomb\.yaml.*YAML aliases expand the document to \d+ nodes"):
        YAML_READERS[reader](path)


@pytest.mark.parametrize("reader", sorted(YAML_READERS))
def test_a_duplicate_yaml_key_is_refused_naming_the_line(tmp_path: Path, reader: str) -> None:
    from detflow.errors import GraphValidationError

    path = tmp_path / "dup.yaml"
    path.write_text("nodes:\n  com:\n    cx: 10\n    cy: 12\n    cx: 130\n")
    with pytest.raises(GraphValidationError, match=r"dup\.yaml:5: duplicate key 'cx' \(first at line 3\)"):
        YAML_READERS[reader](path)


def test_modest_aliases_still_work_and_keep_their_lines(tmp_path: Path) -> None:
    from detflow.graph.io import read_graph_file

    np.save(tmp_path / "d.npy", DATA)
    path = tmp_path / "g.yaml"
    path.write_text(
        "schema_version: 1\n"
        "source: {type: npy, params: {path: d.npy}}\n"
        "nodes:\n"
        "  a: {type: com, params: &disk {cx: 4.0, cy: 4.0, r: 2.0}}\n"
        "  b: {type: com, params: *disk}\n"
    )
    g = read_graph_file(path)
    assert g.nodes["b"].params == g.nodes["a"].params == {"cx": 4.0, "cy": 4.0, "r": 2.0}
    assert g.line_of("nodes", "b") == 5 and g.line_of("nodes", "a", "params", "cx") == 4


# --- shapes too large to hold ---------------------------------------------------------------
def test_a_sig_shape_larger_than_the_data_is_blamed_on_sig_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", DATA)
    with pytest.raises(SourceFormatError, match=r"d\.npy: sig_shape \(64, 64\) needs 4096 pixels a frame; "
                                                r"the data holds 1024 pixels in all"):
        load("npy", path=str(tmp_path / "d.npy"), sig_shape=(64, 64))


def test_a_nav_shape_whose_buffers_cannot_fit_is_refused_with_the_size(tmp_path: Path) -> None:
    from detflow.errors import ConfigurationError

    np.save(tmp_path / "d.npy", DATA)
    with pytest.raises(ConfigurationError, match=r"nav_shape \(1000000, 1000000\) is too large: one float64 "
                                                 r"result per scan position would need 7.28 TiB"):
        load("npy", path=str(tmp_path / "d.npy"), nav_shape=(10**6, 10**6), allow_short=True)


def test_the_cli_reports_a_huge_scan_in_an_hdr_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    write_mib(tmp_path / "scan.hdr", DATA)
    text = (tmp_path / "scan.hdr").read_text("latin-1").replace("ScanX:\t4", "ScanX:\t100000000")
    (tmp_path / "scan.hdr").write_text(text, "latin-1")
    (tmp_path / "g.yaml").write_text("schema_version: 1\nsource: {type: mib, params: {path: scan.hdr}}\n"
                                     "nodes:\n  s: {type: sum}\n")
    proc = subprocess.run([sys.executable, "-m", "detflow.cli", "run", str(tmp_path / "g.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert "scan.hdr: holds 16 frames" in proc.stderr and "needs 400000000" in proc.stderr


# --- outputs: overwriting replaces only what detflow wrote -----------------------------------
def _output_graph(kind: str, path: Path, **sink_params: Any) -> df.Graph:
    g = df.Graph("out")
    g.source("memory", data=DATA)
    g.partition(num_partitions=2)
    g.udf("sumsig", id="s")
    inputs = ["partition"] if kind == "npy" else ["s"]
    g.sink(kind, inputs=inputs, id="out", path=str(path), **sink_params)
    return g


def _not_ours(tmp: Path, what: str) -> Path:
    target = tmp / "out"
    if what == "file":
        target.write_text("precious")
    else:
        (target / "sub").mkdir(parents=True)
        (target / "sub" / "notes.txt").write_text("precious")
    return target


def _untouched(target: Path, what: str) -> None:
    text = target.read_text() if what == "file" else (target / "sub" / "notes.txt").read_text()
    assert text == "precious"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out"]  # no .old, no .partial


@pytest.mark.parametrize("kind", ["zarr", "npy"])
def test_overwrite_in_a_graph_file_is_refused(tmp_path: Path, kind: str) -> None:
    from detflow.errors import GraphValidationError

    target = _not_ours(tmp_path, "dir")
    with pytest.raises(GraphValidationError, match=r"node 'out'.*parameter 'overwrite'.*--overwrite"):
        _output_graph(kind, target, overwrite=True).run(executor="inline")
    _untouched(target, "dir")


@pytest.mark.parametrize("what", ["file", "dir"])
@pytest.mark.parametrize("kind", ["zarr", "npy"])
def test_user_overwrite_replaces_only_what_detflow_wrote(tmp_path: Path, kind: str, what: str) -> None:
    target = _not_ours(tmp_path, what)
    name = "a zarr store detflow wrote" if kind == "zarr" else "a .npy file"
    with pytest.raises(ValueError, match=rf"out' exists and is not {name}"):
        _output_graph(kind, target).run(executor="inline", overwrite=True)
    _untouched(target, what)


@pytest.mark.parametrize("kind", ["zarr", "npy"])
def test_user_overwrite_replaces_detflows_own_output(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out"
    _output_graph(kind, target).run(executor="inline")
    _output_graph(kind, target).run(executor="inline", overwrite=True)
    # nothing left behind but the output (and an .npy file's provenance sidecar)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if kind == "zarr" else
                                                          ["out", "out.provenance.json"])
    if kind == "npy":
        np.testing.assert_array_equal(np.load(target), DATA)


def test_a_corrupt_zarr_chunk_names_the_store(tmp_path: Path) -> None:
    import zarr

    z = zarr.create_array(tmp_path / "c.zarr", shape=DATA.shape, chunks=(1, 4, 8, 8), dtype=DATA.dtype)
    z[...] = DATA
    chunk = tmp_path / "c.zarr" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(b"\x00garbage" * 7)  # not what the codec wrote
    src = load("zarr", path=str(tmp_path / "c.zarr"))
    # the store, the chunk's own key (the file to look at) and the scan positions it holds
    with pytest.raises(SourceFormatError, match=r"c\.zarr: cannot read \[0:4, 0:\]: chunk 'c/1/0/0/0' "
                                                r"\(scan positions \[1:2, 0:4\]\) is corrupt or unreadable"):
        read_all(src)


def test_a_corrupt_zarr_v2_chunk_is_named_by_its_key(tmp_path: Path) -> None:
    import zarr

    z = zarr.create_array(tmp_path / "v2.zarr", shape=(16, 8, 8), chunks=(4, 8, 4), dtype=DATA.dtype, zarr_format=2,
                          compressors=None)
    z[...] = DATA.reshape(16, 8, 8)
    (tmp_path / "v2.zarr" / "2.0.1").write_bytes(b"\x00garbage" * 3)  # too short for its 64 pixels
    with pytest.raises(SourceFormatError, match=r"v2\.zarr: cannot read .*chunk '2\.0\.1' \(scan positions \[8:12\]\)"):
        read_all(load("zarr", path=str(tmp_path / "v2.zarr")))
