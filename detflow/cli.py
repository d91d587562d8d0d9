"""The ``detflow`` command line."""

from __future__ import annotations

import sys
import tempfile

import click

import detflow


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(detflow.__version__, prog_name="detflow")
def main() -> None:
    """detflow: dataflow graphs for pixelated-detector data."""


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to write the generated scan (default: a temporary directory).")
@click.option("--executor", default="threads", show_default=True,
              help="Executor to run on: inline or threads.")
def demo(directory: str | None, executor: str) -> None:
    """Generate a small 4D-STEM scan and analyse it end to end, checking every result."""
    from detflow.demo import run_demo

    if directory is None:
        with tempfile.TemporaryDirectory(prefix="detflow-demo-") as tmp:
            ok = run_demo(tmp, executor=executor)
    else:
        ok = run_demo(directory, executor=executor)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
