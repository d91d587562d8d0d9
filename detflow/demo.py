"""A small end-to-end demo on generated data, with answers a person can check.

It simulates a 4D-STEM scan whose bright-field disk is deflected by a known field,
writes it as ``.npy``, runs one pass of four UDFs over it (sum frame, per-frame sum,
bright/dark-field masks, centre of mass), and compares each result with a plain
numpy computation and the centre of mass with the deflection that was put in.

The live variant (``detflow demo --live``) writes the same scan as a Merlin
acquisition, serves it from the Merlin simulator over the real protocol on local
ports, and analyses it as it arrives, triggered from the run itself (active mode).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["make_scan", "run_demo", "run_live_demo"]


def make_scan(
    nav: tuple[int, int] = (32, 32), sig: int = 64, radius: float = 8.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A scan whose disk is deflected by a known curl-free field; returns (data, shifts).

    The shifts are the gradient of ``cos(ky y) cos(kx x)``, up to 2 px; the disk edge
    is anti-aliased so its centre of mass is its centre, and a faint halo scattered
    around it gives the dark field something to see.
    """
    ny, nx = nav
    yy, xx = np.mgrid[:ny, :nx]
    ky, kx = 2 * np.pi / ny, 2 * np.pi / nx
    amp = 2.0
    shifts = np.stack(
        [-amp * np.sin(ky * yy) * np.cos(kx * xx), -amp * np.cos(ky * yy) * np.sin(kx * xx)], axis=-1
    )  # (y, x) shift of the disk at each scan position, pixels
    c = sig / 2
    py, px = np.mgrid[:sig, :sig]
    d = np.hypot(py - (c + shifts[..., 0, None, None]), px - (c + shifts[..., 1, None, None]))
    coverage = np.clip(radius + 0.5 - d, 0.0, 1.0)
    halo = 0.5 * np.exp(-d / 12.0) * (d > radius + 1)
    rng = np.random.default_rng(seed)
    data = rng.poisson(200.0 * coverage + halo).astype(np.uint16)
    return data, shifts


def run_demo(directory: str | Path, *, executor: str = "threads") -> bool:
    """Run the demo; print a report; return whether every check passed."""
    import detflow as df
    from detflow.nodes import ApplyMasksUDF, CoMUDF, SumSigUDF, SumUDF, masks

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data, shifts = make_scan()
    path = directory / "scan.npy"  # the name examples/graphs/*.yaml read
    np.save(path, data)
    ny, nx, sy, sx = data.shape
    print(f"wrote {path}: nav {(ny, nx)}, sig {(sy, sx)}, {data.dtype}, {data.nbytes / 2**20:.1f} MiB")

    c = sy / 2
    bf = lambda: masks.circular(c, c, sx, sy, 12)  # noqa: E731
    adf = lambda: masks.ring(c, c, sx, sy, 30, 14)  # noqa: E731
    with df.Context.make_with(executor) as ctx:
        ds = ctx.load("npy", path=path)
        t0 = time.perf_counter()
        total, framesum, fields, com = ctx.run_udf(
            dataset=ds,
            udf=[SumUDF(), SumSigUDF(), ApplyMasksUDF(mask_factories=[bf, adf]),
                 CoMUDF.with_params(cx=c, cy=c, r=20)],
            progress=True,
        )
        elapsed = time.perf_counter() - t0

    f64 = data.astype(np.float64)
    # the reference disks are drawn here with np.hypot, not with the mask functions under test
    yy, xx = np.mgrid[:sy, :sx]
    d = np.hypot(yy - c, xx - c)
    bf_ref, adf_ref = d <= 12, (d > 14) & (d <= 30)
    checks = {
        "sum frame equals numpy": np.allclose(total["intensity"].data, f64.sum(axis=(0, 1)), rtol=1e-6),
        "per-frame sums equal numpy": np.allclose(framesum["intensity"].data, f64.sum(axis=(2, 3)), rtol=1e-6),
        "bright field equals numpy": np.allclose(
            fields["intensity"].data[..., 0], (f64 * bf_ref).sum(axis=(2, 3)), rtol=1e-6),
        "annular dark field equals numpy": np.allclose(
            fields["intensity"].data[..., 1], (f64 * adf_ref).sum(axis=(2, 3)), rtol=1e-6),
    }
    err = np.abs(com["raw_shifts"].data - shifts)
    checks["centre of mass finds the deflection within 0.1 px"] = bool(err.max() < 0.1)
    curl = np.nanmax(np.abs(com["curl"].data))
    div = np.nanmax(np.abs(com["divergence"].data))
    checks["the recovered field is curl-free (curl < 1/4 of divergence)"] = bool(curl < div / 4)

    print(f"\none pass, 4 UDFs, {ny * nx} frames in {elapsed:.2f} s on the {executor!r} executor")
    print(f"  total counts            {total['intensity'].data.sum():,.0f}")
    print(f"  bright field, mean      {fields['intensity'].data[..., 0].mean():,.1f} counts")
    print(f"  dark field, mean        {fields['intensity'].data[..., 1].mean():,.1f} counts")
    print(f"  deflection put in       y in [{shifts[..., 0].min():+.2f}, {shifts[..., 0].max():+.2f}] px, "
          f"x in [{shifts[..., 1].min():+.2f}, {shifts[..., 1].max():+.2f}] px")
    print(f"  CoM error, max          {err.max():.3f} px")
    print(f"  divergence, max |.|     {div:.3f}   (the field put in has divergence, no curl)")
    print(f"  curl, max |.|           {curl:.3f}")
    print()
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return all(checks.values())


def run_live_demo(directory: str | Path, *, executor: str = "pipelined", frame_rate: float = 2000.0) -> bool:
    """The scan streamed by the Merlin simulator, analysed live; print a report; all checks passed?"""
    import detflow as df
    from detflow.nodes import CoMUDF, SignalMonitorUDF, SumSigUDF, SumUDF
    from detflow.sources.live.merlin.connection import MerlinConnection, SoftTriggerHooks
    from detflow.sources.live.merlin.sim import MerlinSimulator
    from detflow.sources.mib_write import write_mib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data, shifts = make_scan()
    hdr = directory / "scan.hdr"
    write_mib(hdr, data, counter_depth=12)
    ny, nx, sy, sx = data.shape
    c = sy / 2
    print(f"wrote {hdr} (+ .mib): nav {(ny, nx)}, sig {(sy, sx)}, 12-bit Merlin frames")
    with MerlinSimulator(hdr, data_port=0, control_port=0, wait_trigger=True, frame_rate=frame_rate) as sim:
        print(f"Merlin simulator: control port {sim.control_port}, data port {sim.data_port}, "
              f"{frame_rate:g} frames/s, waiting for a trigger")
        with df.LiveContext.make_with(executor) as ctx, MerlinConnection.open(
            api_port=sim.control_port, data_port=sim.data_port
        ) as conn:
            conn.control.set("NUMFRAMESTOACQUIRE", ny * nx)
            aq = ctx.make_acquisition(conn=conn, nav_shape=(ny, nx), hooks=SoftTriggerHooks(), frames_per_partition=64)
            t0 = time.perf_counter()
            parts = list(ctx.run_udf_iter(
                dataset=aq, udf=[SumUDF(), SumSigUDF(), CoMUDF.with_params(cx=c, cy=c, r=20), SignalMonitorUDF()],
                progress=True,
            ))
            elapsed = time.perf_counter() - t0
    updates, part = len(parts), parts[-1]
    total, framesum, com, latest = part.buffers
    f64 = data.astype(np.float64)
    err = np.abs(com["raw_shifts"].data - shifts)
    checks = {
        "every frame arrived": part.frames_done == ny * nx,
        "sum frame equals numpy": np.allclose(total["intensity"].data, f64.sum(axis=(0, 1)), rtol=1e-6),
        "per-frame sums equal numpy": np.allclose(framesum["intensity"].data, f64.sum(axis=(2, 3)), rtol=1e-6),
        "latest frame is the scan's last": np.array_equal(latest["intensity"].data, data[-1, -1]),
        "centre of mass finds the deflection within 0.1 px": bool(err.max() < 0.1),
    }
    print(f"\nlive: {ny * nx} frames in {elapsed:.2f} s ({ny * nx / elapsed:,.0f} frames/s, paced by the "
          f"simulator), {updates} partial results, on the {executor!r} executor")
    print(f"  CoM error, max          {err.max():.3f} px")
    print()
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return all(checks.values())
