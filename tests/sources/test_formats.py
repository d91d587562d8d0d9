"""Formats read through the libraries that maintain them: each file here is written by that library."""

from __future__ import annotations

import os

import numpy as np
import pytest

import detflow as df
from detflow.nodes import SumSigUDF, SumUDF
from detflow.registry import SOURCES
from detflow.sources import auto
from detflow.sources.auto import detect_format
from detflow.sources.base import DatasetMeta, Source
from detflow.sources.readers import ArrayReader

mrcfile = pytest.importorskip("mrcfile", reason="the formats extra: pip install -e '.[formats]'")
tvips = pytest.importorskip("rsciio.tvips", reason="the formats extra: pip install -e '.[formats]'")

RNG = np.random.default_rng(7)
FRAMES = RNG.integers(0, 4000, (12, 16, 20), dtype=np.uint16)


def write_mrc(path, data) -> None:
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.set_extended_header(np.zeros(3, dtype=[("x", "<i4")]))  # the data start after it


def write_tvips(path, data) -> None:
    axes = [{"name": "t", "size": data.shape[0], "navigate": True, "units": "ms", "scale": 1.0, "offset": 0.0}]
    axes += [{"name": n, "size": s, "navigate": False, "units": "1/nm", "scale": 1.0, "offset": 0.0}
             for n, s in zip("yx", data.shape[1:], strict=True)]
    tvips.file_writer(str(path), {"data": data, "axes": axes, "metadata": {"Signal": {"signal_type": "diffraction"}},
                                  "original_metadata": {}, "attributes": {"_lazy": False}}, show_progressbar=False)


FORMATS = {
    "mrc": ("scan.mrc", write_mrc, "scan.mrc"),
    "tvips": ("rec.tvips", write_tvips, "rec_000.tvips"),  # the writer numbers its files
}


@pytest.fixture(params=sorted(FORMATS))
def written(request, tmp_path):
    name, write, opened = FORMATS[request.param]
    write(tmp_path / name, FRAMES)
    return request.param, tmp_path / opened


@pytest.mark.parametrize("executor", ["inline", "threads", "pipelined"])
def test_results_equal_numpy(written, executor) -> None:
    kind, path = written
    assert detect_format(path) == kind
    with df.Context.make_with(executor, cpus=2) as ctx:
        ds = ctx.load("auto", path=path, nav_shape=(3, 4), frames_per_partition=5)
        assert ds.name == kind and ds.dtype == FRAMES.dtype
        assert tuple(ds.shape.nav) == (3, 4) and tuple(ds.shape.sig) == (16, 20)
        total, sums = ctx.run_udf(dataset=ds, udf=[SumUDF(), SumSigUDF()])
    f64 = FRAMES.astype(np.float64)
    np.testing.assert_allclose(total["intensity"].data, f64.sum(axis=0))
    np.testing.assert_allclose(sums["intensity"].data, f64.sum(axis=(1, 2)).reshape(3, 4))


def test_frames_read_back_exactly(written) -> None:
    kind, path = written
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load(kind, path=path)
        assert ds.shape.nav == (12,)
        np.testing.assert_array_equal(np.concatenate([p.read() for p in ds.partitions()]), FRAMES)


def test_misspelled_parameter_and_missing_file(tmp_path) -> None:
    ctx = df.Context.make_with("inline")
    with pytest.raises(df.DetflowError, match="did you mean 'nav_shape'"):
        ctx.load("mrc", path=tmp_path / "x.mrc", navshape=(2, 2))
    with pytest.raises(FileNotFoundError, match="x.mrc"):
        ctx.load("mrc", path=tmp_path / "x.mrc")


def test_suffix_hints_agree_with_the_declarations() -> None:
    for name, suffixes in auto._builtin_suffix_hints().items():
        assert SOURCES.get(name).suffixes == suffixes, name


class _TaggedSource(Source):
    """A third-party format: files that start with ``TAGGED``, 4x4 uint8 frames after it."""

    name = "tagged"
    suffixes = (".tag",)

    def __init__(self, path, **common) -> None:
        self.path = os.fspath(path)
        super().__init__(**common)

    @classmethod
    def can_open(cls, path: str) -> bool:
        with open(path, "rb") as f:
            return f.read(6) == b"TAGGED"

    def _open(self):
        with open(self.path, "rb") as f:
            body = np.frombuffer(f.read()[6:], np.uint8)
        meta = DatasetMeta((body.size // 16,), (4, 4), np.uint8)
        return meta.nav_shape, meta.sig_shape, ArrayReader(body.copy())


def test_a_registered_format_takes_part_in_auto(tmp_path) -> None:
    path = tmp_path / "odd.bin"  # no suffix to go by: its contents decide
    path.write_bytes(b"TAGGED" + bytes(range(32)))
    SOURCES.register("tagged", _TaggedSource)
    try:
        assert detect_format(path) == "tagged"
        with df.Context.make_with("inline") as ctx:
            ds = ctx.load("auto", path=path)
            np.testing.assert_array_equal(ds.partitions().__next__().read().ravel(), np.arange(32))
    finally:
        SOURCES._paths.pop("tagged")
        SOURCES._loaded.pop("tagged", None)


_PLUGIN = '''
import numpy as np
from detflow.sources.base import Source
from detflow.sources.readers import ArrayReader


class PluginSource(Source):
    """Files that start with ``PLUGIN``, 2x2 uint8 frames after it."""

    name = "plugged"
    suffixes = (".plg",)

    def __init__(self, path, **common):
        self.path = str(path)
        super().__init__(**common)

    @classmethod
    def can_open(cls, path):
        with open(path, "rb") as f:
            return f.read(6) == b"PLUGIN"

    def _open(self):
        with open(self.path, "rb") as f:
            body = np.frombuffer(f.read()[6:], np.uint8).copy()
        return (body.size // 4,), (2, 2), ArrayReader(body)
'''


def test_an_installed_plugin_format_takes_part_in_auto(tmp_path, monkeypatch) -> None:
    """A format from another distribution's ``detflow.sources`` entry point, found by ``auto`` by its contents."""
    import sys

    import detflow.registry as registry

    (tmp_path / "detflow_format_plugin.py").write_text(_PLUGIN)
    info = tmp_path / "detflow_format_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: detflow-format-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[detflow.sources]\nplugged = detflow_format_plugin:PluginSource\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "detflow_format_plugin", raising=False)
    fresh = registry.Registry("source", "detflow.sources", dict(SOURCES._paths))  # reads the entry points anew
    monkeypatch.setattr(registry, "SOURCES", fresh)
    path = tmp_path / "odd.bin"  # neither the suffix nor any built-in format's magic
    path.write_bytes(b"PLUGIN" + bytes(range(12)))
    assert detect_format(path) == "plugged"
    with df.Context.make_with("inline") as ctx:
        ds = ctx.load("auto", path=path)
        assert type(ds).__module__ == "detflow_format_plugin" and ds.shape == (3, 2, 2)
        np.testing.assert_array_equal(next(ds.partitions()).read().ravel(), np.arange(12))
    (tmp_path / "empty.plg").write_bytes(b"")  # no contents to go by: its suffix names the plugin
    assert detect_format(tmp_path / "empty.plg") == "plugged"
