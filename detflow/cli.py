"""The ``detflow`` command line: run, validate and show graph files; a demo.

Errors are printed as one paragraph on stderr with a non-zero exit code (2 for a graph
or option that is wrong, 1 for a run that failed); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click

import detflow
from detflow.errors import ConfigurationError, DetflowError


def _fail(err: BaseException, code: int) -> None:
    text = str(err) or type(err).__name__
    notes = [n for n in getattr(err, "__notes__", []) if not n.startswith("worker traceback")]
    if notes:
        text += " (" + "; ".join(notes) + ")"
    click.echo(f"error: {text}", err=True)
    sys.exit(code)


def _progress(flag: bool | None) -> bool:
    """``--progress`` / ``--no-progress`` as given; unset, a bar only where someone watches (a terminal)."""
    return sys.stderr.isatty() if flag is None else flag


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One paragraph instead of a traceback, unless ``--debug``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
        if debug:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, FileNotFoundError) as err:
            _fail(err, 2)
        except (DetflowError, OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            _fail(err, 1)
        except MemoryError as err:
            _fail(MemoryError(f"out of memory ({err or 'an allocation failed'}); use a smaller nav_shape, "
                              "sig_shape or frames_per_partition"), 1)

    return click.option("--debug", is_flag=True, help="Show tracebacks instead of a short error.")(wrapper)


def _import_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--trust-python-path", is_flag=True,
                      help="Also import from the folders the graph file's python_path: lists.")(fn)
    return click.option("--path", "import_paths", multiple=True, metavar="DIR",
                        type=click.Path(exists=True, file_okay=False),
                        help="A folder to import the graph's modules from (besides installed packages); "
                             "repeat for more. The graph file's own folder is not searched unless listed.")(fn)


def _graph_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = _import_options(fn)
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                      help="YAML file of per-node overrides ({nodes: {com: {r: 30}}}).")(fn)
    fn = click.option("--set", "assignments", multiple=True, metavar="NODE.PARAM=VALUE",
                      help="Override a parameter, e.g. --set com.r=35 --set bf.skip=true. "
                           "Wins over the graph file and --config.")(fn)
    fn = click.option("--input", "input_path", type=click.Path(),
                      help="Replace the source's path with this file.")(fn)
    return click.argument("graph_file", type=click.Path(dir_okay=False))(fn)


def _read(graph_file: str, import_paths: tuple[str, ...], trust_python_path: bool) -> detflow.Graph:
    from detflow.graph.config import add_import_folders

    add_import_folders(import_paths)
    return detflow.Graph.from_yaml(graph_file, trust_python_path=trust_python_path)


def _load(graph_file: str, input_path: str | None, assignments: tuple[str, ...],
          config_file: str | None, import_paths: tuple[str, ...] = (),
          trust_python_path: bool = False) -> detflow.Graph:
    from detflow.graph.config import apply_overrides, parse_set
    from detflow.graph.run import resolve_call

    g = _read(graph_file, import_paths, trust_python_path)
    sets = parse_set(g, assignments)
    g = resolve_call(g, input_path, config_file=config_file)
    return apply_overrides(g, sets) if sets else g


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(detflow.__version__, prog_name="detflow")
def main() -> None:
    """detflow: dataflow graphs for pixelated-detector data.

    \b
    detflow run GRAPH.yaml [--input FILE] [--set NODE.PARAM=VALUE ...]   run a graph file
    detflow validate GRAPH.yaml                                          check it without running
    detflow show GRAPH.yaml [--image graph.png]                          print (or draw) it
    detflow serve GRAPH.yaml [--port 5006] [--set NODE.PARAM=VALUE ...]  a live dashboard of a run
    detflow convert SCAN.hdr SCAN.zarr                                   convert a dataset to .npy or zarr
    detflow sim merlin SCAN.hdr [--data-port 6342]                       replay it as a Merlin detector
    detflow sim dectris SCAN.npy [--api-port 8910] [--data-port 9999]     ... or as a DECTRIS detector
    detflow sim asi-tpx3 SCAN.npz [--port 8283] [--chunk-frames 128]      ... or as an ASI Timepix3 CSR stream
    detflow batch GRAPH.yaml --inputs 'data/**/*.hdr' [--queue runs.db]  run it over many inputs, resumably
    detflow queue status|list|show|retry|purge QUEUE                     look into a batch queue
    detflow demo                                                         a self-checking example
    detflow doctor [--clean]                                             what crashed runs left behind
    """


@main.command()
@_graph_options
@click.option("--executor", help="Executor to run on (inline, threads, ...); default: the graph's, else threads.")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Folder for outputs ({output_dir} in sink paths); default: the input's folder.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (swapped in when the run completes).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@click.option("--partition-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop the run when one partition takes longer (every executor).")
@_errors
def run(graph_file: str, input_path: str | None, assignments: tuple[str, ...], config_file: str | None,
        import_paths: tuple[str, ...], trust_python_path: bool, executor: str | None, output_dir: str | None,
        overwrite: bool, progress: bool | None, partition_timeout: float | None) -> None:
    """Run GRAPH_FILE: read the data once, feed every node, write every sink.

    Parameters win in this order: the node's default < the graph file < --config <
    --set. Sink paths may use {output_dir}, {input_stem} and {graph}; a node with
    save_results writes {output_dir}/{input_stem}_{node}.zarr.
    """
    from detflow.graph.run import RunStats, default_context, run_graph

    g = _load(graph_file, input_path, assignments, config_file, import_paths, trust_python_path)
    ctx = default_context(g, output_dir=output_dir, overwrite=overwrite)
    progress = _progress(progress)
    stats = RunStats()
    started = time.perf_counter()
    if partition_timeout is None:
        results = run_graph(g, executor=executor, progress=progress, context=ctx, stats=stats)
    else:
        from detflow.executors.base import make_executor

        graph_ex = g.executor or {"type": "threads"}
        name = executor or graph_ex["type"]
        params = dict(graph_ex.get("params", {})) if name == graph_ex["type"] else {}
        ex = make_executor(name, **{**params, "partition_timeout": partition_timeout})
        try:
            results = run_graph(g, executor=ex, progress=progress, context=ctx, stats=stats)
        finally:
            ex.close()
    elapsed = time.perf_counter() - started
    for node_id, ds in results.items():
        names = ", ".join(f"{k} {tuple(v.shape)}" for k, v in ds.data_vars.items())
        click.echo(f"{node_id}: {names}")
    for path in stats.outputs:
        if os.path.exists(path):
            click.echo(f"wrote {path}")
    click.echo(f"read {stats.frames} frames ({stats.bytes / 2**20:.1f} MiB, {stats.partitions} partition(s)) "
               f"in {elapsed:.2f} s: "
               f"{stats.bytes / max(elapsed, 1e-9) / 1e9:.2f} GB/s")


@main.command()
@_graph_options
@click.option("--executor", help="Executor the run would use (for the partition count); default: the graph's.")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Folder the run would write to; default: the input's folder.")
@click.option("--overwrite", is_flag=True, help="Check as for a run with --overwrite.")
@_errors
def validate(graph_file: str, input_path: str | None, assignments: tuple[str, ...], config_file: str | None,
             import_paths: tuple[str, ...], trust_python_path: bool, executor: str | None, output_dir: str | None,
             overwrite: bool) -> None:
    """Check GRAPH_FILE (and the data it names) as `detflow run` would, without running it.

    Everything a run refuses before reading a frame is refused here too (parameters,
    geometry, sinks and their paths, outputs that exist); nothing is written.
    """
    from detflow.graph.run import check_run, default_context
    from detflow.graph.view import graph_reach, reach_text

    g = _load(graph_file, input_path, assignments, config_file, import_paths, trust_python_path)
    ctx = default_context(g, output_dir=output_dir, overwrite=overwrite)
    click.echo(reach_text(graph_reach(g, fill=lambda t, node: ctx.fill(t, graph=g.name, node=node))))
    counts, _ = check_run(g, context=ctx, executor=executor)
    compiled = g.validate()
    compiled.close()
    for p, n_parts in zip(compiled.plan, counts, strict=True):
        m = compiled.passes[p.index].meta
        which = f"pass {p.index + 1}: " if len(compiled.plan) > 1 else ""
        parts = f"{n_parts} partition(s)" if n_parts is not None else "partitions sized by the cluster's workers"
        click.echo(f"ok: graph {g.name!r}: {which}{len(p.udfs)} node(s) over nav {m.nav_shape} "
                   f"sig {m.sig_shape} {m.dtype}, {parts}")


def to_dot(g: detflow.Graph) -> str:
    """The graph in graphviz's DOT language."""
    from detflow.graph.view import graph_dot

    return graph_dot(g)


@main.command()
@click.argument("graph_file", type=click.Path(dir_okay=False))
@click.option("--dot", "dot_path", type=click.Path(dir_okay=False), help="Also write the graph as a DOT file.")
@click.option("--image", type=click.Path(dir_okay=False),
              help="Also draw it (PNG or SVG by suffix); needs graphviz's dot program.")
@_import_options
@_errors
def show(graph_file: str, dot_path: str | None, image: str | None, import_paths: tuple[str, ...],
         trust_python_path: bool) -> None:
    """Print GRAPH_FILE as a tree of nodes with their parameters, and what running it would
    import, write and connect to (a graph file is code: read one from someone else first)."""
    from detflow.graph.view import graph_reach, reach_text

    g = _read(graph_file, import_paths, trust_python_path)
    click.echo(g.to_text())
    click.echo(reach_text(graph_reach(g)))
    dot = to_dot(g)
    if dot_path:
        with open(dot_path, "w") as f:
            f.write(dot)
    if image:
        exe = shutil.which("dot")
        if exe is None:
            raise ConfigurationError("--image needs graphviz's 'dot' program (e.g. apt install graphviz); "
                                     "use --dot to write the DOT file instead")
        fmt = os.path.splitext(image)[1].lstrip(".") or "png"
        subprocess.run([exe, f"-T{fmt}", "-o", image], input=dot, text=True, check=True, timeout=60)
        click.echo(f"drew {image}")


@main.command()
@_graph_options
@click.option("--executor", help="Executor to run on (inline, threads, ...); default: the graph's, else threads.")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Folder for outputs ({output_dir} in sink paths); default: the input's folder.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (re-runs always replace their own).")
@click.option("--port", type=click.IntRange(0, 65535), default=5006, show_default=True,
              help="Port to serve on; 0 picks a free one.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but 127.0.0.1 lets other machines see and control the run.")
@click.option("--show/--no-show", default=True, show_default=True, help="Open the dashboard in a web browser.")
@click.option("--autostart/--no-autostart", default=True, show_default=True,
              help="Start the run as soon as the server is up (else: the Start button).")
@click.option("--max-rate", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Image updates per second at most.")
@click.option("--password", envvar="DETFLOW_SERVE_PASSWORD", default=None,
              help="Password the page asks for; required on any --address but loopback "
                   "(better given as DETFLOW_SERVE_PASSWORD than on the command line).")
@_errors
def serve(graph_file: str, input_path: str | None, assignments: tuple[str, ...], config_file: str | None,
          import_paths: tuple[str, ...], trust_python_path: bool, executor: str | None, output_dir: str | None,
          overwrite: bool, port: int, address: str, show: bool, autostart: bool, max_rate: float,
          password: str | None) -> None:
    """Serve a live dashboard of GRAPH_FILE: progress, every 2-D result filling in as the
    data arrives, the latest frame and the sum frame, and start / stop / re-run buttons.

    Parameters are overridden as for `detflow run`. The graph is checked before the
    server starts. Ctrl-C stops the run after the partition in flight (the sinks are
    left consistent) and then the server.
    """
    from detflow.dashboard import serve as serve_dashboard
    from detflow.graph.run import default_context

    g = _load(graph_file, input_path, assignments, config_file, import_paths, trust_python_path)
    if password:  # the dashboard reads it from there (as for a password set in the environment)
        os.environ["DETFLOW_SERVE_PASSWORD"] = password
    serve_dashboard(g, port=port, address=address, show=show, autostart=autostart, executor=executor,
                    context=default_context(g, output_dir=output_dir, overwrite=overwrite), max_rate=max_rate)


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Keep the generated scan (scan.npy; scan.hdr + scan.mib with --live) in this folder "
                   "(default: a temporary folder, deleted at the end).")
@click.option("--executor", default=None,
              help="Executor to run on (default: threads; pipelined with --live).")
@click.option("--live", is_flag=True,
              help="Stream the scan from the Merlin simulator and analyse it as it arrives.")
def demo(directory: str | None, executor: str | None, live: bool) -> None:
    """Generate a small 4D-STEM scan and analyse it end to end, checking every result.

    \b
    detflow demo --dir examples/graphs && detflow run examples/graphs/bright-field.yaml
    keeps the scan where the example graphs look for it, then runs one of them on it.
    """
    from detflow.demo import run_demo, run_live_demo

    def go(where: str) -> bool:
        if live:
            return run_live_demo(where, executor=executor or "pipelined")
        return run_demo(where, executor=executor or "threads")

    if directory is None:
        with tempfile.TemporaryDirectory(prefix="detflow-demo-") as tmp:
            click.echo(f"(a temporary folder, {tmp}, deleted when the demo ends; "
                       "keep the scan with --dir DIR)")
            ok = go(tmp)
    else:
        ok = go(directory)
        if not live:
            click.echo(f"\nnext: detflow run {os.path.join(directory, 'bright-field.yaml')}"
                       if os.path.exists(os.path.join(directory, "bright-field.yaml")) else
                       f"\nthe scan stays in {directory}; try: detflow run GRAPH.yaml --input "
                       f"{os.path.join(directory, 'scan.npy')}")
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--clean", is_flag=True, help="Remove what it lists.")
def doctor(clean: bool) -> None:
    """List what crashed runs left behind (shared-memory segments of dead detflow processes); --clean removes it."""
    from detflow.executors.shm_stale import SHM_DIR, remove_stale_segments, stale_segments
    from detflow.sources.limits import format_bytes

    found = remove_stale_segments() if clean else stale_segments()
    for seg in found:
        click.echo(f"{'removed' if clean else 'stale'}: {SHM_DIR}/{seg.name} ({format_bytes(seg.size)}, "
                   f"owner pid {seg.pid} is gone)")
    total = format_bytes(sum(s.size for s in found))
    click.echo(f"{len(found)} stale shared-memory segment(s), {total}"
               + ("" if clean or not found else "; run `detflow doctor --clean` to remove them"))


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@click.argument("output", type=click.Path())
@click.option("--type", "kind", default="auto", show_default=True,
              help="Source type of INPUT (mib, hdf5, npy, raw, ...; auto: from its contents).")
@click.option("--set", "params", multiple=True, metavar="PARAM=VALUE",
              help="A source parameter, e.g. --set nav_shape=[32,32] --set sync_offset=2.")
@click.option("--executor", default="threads", show_default=True, help="Executor that reads and writes.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (swapped in when complete).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@_errors
def convert(input_path: str, output: str, kind: str, params: tuple[str, ...], executor: str, overwrite: bool,
            progress: bool | None) -> None:
    """Convert INPUT (a MIB acquisition, HDF5, raw, ... file) to OUTPUT, a .npy file or a zarr store.

    \b
    detflow convert scan.hdr scan.zarr
    detflow convert scan.raw scan.npy --type raw --set dtype=uint16 --set nav_shape=[64,64] --set sig_shape=[256,256]
    """
    import yaml

    kwargs: dict[str, Any] = {}
    for text in params:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(f"--set {text!r}: expected PARAM=VALUE, e.g. sync_offset=2")
        kwargs[name.strip()] = yaml.safe_load(value)
    from detflow.graph.provenance import conversion_provenance

    record = conversion_provenance(kind, input_path, kwargs)
    with detflow.Context.make_with(executor) as ctx:
        ds = ctx.load(kind, path=input_path, **kwargs)
        written = ctx.export_dataset(ds, path=output, progress=_progress(progress), overwrite=overwrite,
                                     provenance=record)
        m = ds.meta
    click.echo(f"wrote {written}: nav {m.nav_shape}, sig {m.sig_shape}, {m.dtype}, "
               f"{m.n_frames * m.frame_bytes / 2**20:.1f} MiB")


@main.group()
def sim() -> None:
    """Detector simulators: replay a recording over the detector's own protocol."""


@sim.command("merlin")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--data-port", default=6342, show_default=True, help="Data port (0: any free port).")
@click.option("--control-port", default=6341, show_default=True, help="Control port (0: any free port).")
@click.option("--trigger-port", type=int, default=None, help="Also serve the simulator-only trigger port.")
@click.option("--wait-trigger", is_flag=True, help="Header on STARTACQUISITION, frames on SOFTTRIGGER.")
@click.option("--continuous", is_flag=True, help="Replay acquisition after acquisition until stopped.")
@click.option("--frame-rate", type=float, default=None, help="Frames per second (default: as fast as possible).")
@click.option("--garbage", is_flag=True, help="Send junk bytes before the first header of each connection.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A progress bar of the frames sent, per acquisition (on stderr).")
@_errors
def sim_merlin(path: str, **options: Any) -> None:
    """Serve the Merlin acquisition PATH (.hdr or .mib) as a Merlin detector would, until Ctrl-C."""
    from detflow.sources.live.merlin.sim import run_simulator

    run_simulator(path, echo=click.echo, **options)


@sim.command("dectris")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--api-port", default=8910, show_default=True, help="SIMPLON REST port (0: any free port).")
@click.option("--data-port", default=9999, show_default=True, help="ZeroMQ stream port (0: any free port).")
@click.option("--encoding", type=click.Choice(["bs8-lz4<", "bs16-lz4<", "bs32-lz4<", "lz4<", "<"]), default=None,
              help="Blob encoding of a .npy (default: bitshuffle-LZ4 of its element size).")
@click.option("--trigger-mode", type=click.Choice(["exte", "inte", "exts", "ints"]), default=None,
              help="Trigger mode to start in (clients may change it over REST); default: the file's, else exte.")
@click.option("--format", "stream_format", type=click.Choice(["legacy", "cbor"]), default="legacy",
              show_default=True, help="Stream format to start in: the JSON parts (legacy) or the newer CBOR "
                                      "messages (clients may change it: PUT stream/.../config/format).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A progress bar of the images sent, per series (on stderr).")
@_errors
def sim_dectris(path: str, **options: Any) -> None:
    """Serve PATH (.npy, HDF5 master file, or a stream dump) as a DECTRIS detector would, until Ctrl-C."""
    from detflow.sources.live.dectris.sim import run_simulator

    run_simulator(path, echo=click.echo, **options)


@sim.command("asi-tpx3")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8283, show_default=True, help="Data port (0: any free port, printed).")
@click.option("--chunk-frames", default=128, show_default=True, type=click.IntRange(min=1),
              help="Frames per ArrayChunk.")
@click.option("--metadata-bytes", default=0, show_default=True, type=click.IntRange(min=0),
              help="Bytes of ScanStart metadata to send with each scan.")
@click.option("--acquisitions", default=1, show_default=True, type=click.IntRange(min=1),
              help="Acquisitions sent to each client that connects.")
@click.option("--nav-shape", type=(int, int), default=None, help="Scan shape, for a .npz without one.")
@click.option("--sig-shape", type=(int, int), default=None, help="Frame shape, for a .npz without one.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A progress bar of the bytes sent, per client (on stderr).")
@_errors
def sim_asi_tpx3(path: str, **options: Any) -> None:
    """Serve PATH (CSR .npz, or dense .npy converted) as an ASI Timepix3 CSR stream, until Ctrl-C."""
    from detflow.sources.live.asi_tpx3.sim import run_simulator

    run_simulator(path, echo=click.echo, **options)


@main.command()
@click.argument("store", type=click.Path(exists=True))
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Folder for {output_dir} outputs; default: the one the store's run used.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (swapped in when the run completes).")
@click.option("--allow-changed", is_flag=True, help="Rerun even where an input changed size or time (a warning).")
@click.option("--executor", default=None, help="Executor to run on; default: the graph's, else threads.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@_errors
def rerun(store: str, output_dir: str | None, overwrite: bool, allow_changed: bool, executor: str | None,
          progress: bool) -> None:
    """Run again exactly the graph that wrote STORE (a zarr store, or an .npy file with its sidecar)."""
    from detflow.rerun import rerun as rerun_store

    results = rerun_store(store, output_dir=output_dir, overwrite=overwrite, allow_changed=allow_changed,
                          executor=executor, progress=progress)
    click.echo(f"reran {store}: " + ", ".join(results) if results else f"converted again into {store}")


from detflow.batch.cli import batch, queue  # noqa: E402 - the batch commands live with the batch package

main.add_command(batch)
main.add_command(queue)


if __name__ == "__main__":
    # `python -m detflow.cli` puts the working directory first on sys.path; the `detflow` command
    # does not. Imports named by a graph file come from installed packages and --path folders only.
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.getcwd():
        del sys.path[0]
    main()
