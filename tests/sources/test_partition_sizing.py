"""Default partition sizing, as the README promises: about 128 MiB of native data a
partition, and at least one partition per worker where the data allows."""

from __future__ import annotations

import numpy as np

import detflow as df
from detflow.nodes import SumSigUDF
from detflow.sources.base import DatasetMeta, PartitionPlan


def test_default_partitions_hold_about_128_mib() -> None:
    # 1 MiB frames (512 x 1024 uint16): 128 frames a partition
    meta = DatasetMeta(nav_shape=(300,), sig_shape=(512, 1024), dtype="uint16")
    assert [(r.start, r.stop) for r in PartitionPlan().ranges(meta)] == [(0, 128), (128, 256), (256, 300)]
    # 4-byte pixels: half as many frames
    meta32 = DatasetMeta(nav_shape=(130,), sig_shape=(512, 1024), dtype="uint32")
    assert [r.stop - r.start for r in PartitionPlan().ranges(meta32)] == [64, 64, 2]


def test_at_least_one_partition_per_worker() -> None:
    small = DatasetMeta(nav_shape=(10,), sig_shape=(8, 8), dtype="uint16")  # far below 128 MiB
    assert len(PartitionPlan().ranges(small)) == 1
    assert len(PartitionPlan(min_partitions=4).ranges(small)) == 4
    assert len(PartitionPlan(min_partitions=40).ranges(small)) == 10  # no more than frames


def test_a_run_cuts_a_small_dataset_once_per_worker() -> None:
    data = np.random.default_rng(1).integers(0, 100, size=(4, 6, 8, 8)).astype(np.uint16)
    with df.Context.make_with("threads", cpus=3) as ctx:
        parts = list(ctx.run_udf_iter(dataset=ctx.load("memory", data=data), udf=SumSigUDF()))
    assert len(parts) == 3
    np.testing.assert_allclose(parts[-1][0]["intensity"].data, data.sum(axis=(2, 3)))
