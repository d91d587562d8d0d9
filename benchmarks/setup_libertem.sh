#!/usr/bin/env bash
# Create benchmarks/.venv-libertem: LiberTEM and LiberTEM-live in their own virtualenv, for the benchmarks.
# Usage: bash benchmarks/setup_libertem.sh [VERSION]     (default 0.16.0)
# PYTHON=python3.11 bash benchmarks/setup_libertem.sh    picks the interpreter.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-libertem"
version="${1:-0.16.0}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
if ! "$venv/bin/python" -m pip install "libertem==$version"; then
    echo "libertem==$version did not install with $("$venv/bin/python" --version)." >&2
    echo "Versions available for this Python:" >&2
    "$venv/bin/python" -m pip index versions libertem >&2 || true
    echo "Re-run with one of them: bash $0 VERSION" >&2
    exit 1
fi
# LiberTEM-live (and its Merlin receiver) for bench_live.py
"$venv/bin/python" -m pip install --quiet "libertem-live==${LIVE_VERSION:-0.3.0}"
"$venv/bin/python" -c "import libertem, libertem_live; print('LiberTEM', libertem.__version__, 'and LiberTEM-live', libertem_live.__version__, 'in', '$venv')"
