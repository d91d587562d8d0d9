"""The package's imports point down its layers and never form a circle.

Every import in ``detflow/`` is read with ``ast``: module-level ones and those inside
functions (a lazy import hides a circle, it does not remove it); imports under
``if TYPE_CHECKING:`` are left out, as they never run. Package ``__init__`` modules
only re-export and are not judged. The layers, lowest first (DESIGN.md, "Layers"):
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detflow"

#: longest matching dotted prefix wins; a module may import its own layer or lower ones
LAYERS: list[tuple[str, int]] = [
    ("errors", 0), ("registry", 0),
    ("shm", 1), ("sources", 1), ("nodes", 1),
    ("executors", 2),
    ("graph.model", 3), ("graph.results", 3), ("graph.events", 3), ("graph.stream", 3), ("graph.yaml_", 3),
    ("graph.io", 4), ("graph.config", 4),
    ("graph.planning", 5), ("graph.view", 5),
    ("graph", 6),  # lowering, merging, the driver, outputs, the dask graph
    ("graph.run", 7),
    ("sinks", 8),
    ("dashboard", 9), ("export", 9), ("batch", 9),
    ("api", 10), ("live", 10),
    ("demo", 11), ("compat", 11), ("rerun", 11),
    ("cli", 12), ("__main__", 12),
]


def layer_of(module: str) -> int | None:
    best, length = None, -1
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
            best, length = layer, len(prefix)
    return best


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _parse(path: Path) -> ast.Module:
    source = path.read_text(encoding="utf-8")
    for _ in range(3):
        try:
            return ast.parse(source, str(path))
        except SystemError as err:  # CPython 3.11 (gh-106905): a spurious "AST constructor
            if "recursion depth mismatch" not in str(err):  # recursion depth mismatch"; parse again
                raise
    return ast.parse(source, str(path))


def _imports(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import that runs."""
    tree = _parse(path)
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: list[tuple[str, int]] = []

    def resolve(name: str | None, level: int) -> str | None:
        if level:
            parts = base[: len(base) - (level - 1)] if level > 1 else base
            full = ".".join([p for p in parts if p] + ([name] if name else []))
        elif name and (name == "detflow" or name.startswith("detflow.")):
            full = name[len("detflow."):] if name != "detflow" else ""
        else:
            return None
        while full and full not in known:
            full = full.rpartition(".")[0]
        return full if full in known else None

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    walk(ast.Module(body=[sub], type_ignores=[]))
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = resolve(alias.name, 0)
                    if target is not None:
                        found.append((target, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child.module, child.level)
                if target is not None:
                    subs = [resolve(f"{child.module}.{a.name}" if child.module else a.name, child.level)
                            for a in child.names]
                    picked = [s for s in subs if s and s != target and s.startswith(target)]
                    found.extend((s, child.lineno) for s in (picked or [target]))
            walk(child)

    walk(tree)
    return [(t, line) for t, line in found if t and t != module and not module.startswith(t + ".")]


def _graph(*, packages: bool = False) -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    """Import edges; a package's ``__init__`` re-exports, so its own are left out unless ``packages``."""
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], int] = {}
    for module, path in mods.items():
        if path.name == "__init__.py" and not packages:
            continue
        for target, line in _imports(path, module, set(mods)):
            edges[module].add(target)
            where.setdefault((module, target), line)
    return edges, where


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_circle() -> None:
    edges, where = _graph(packages=True)  # a circle through a package's re-exports is a circle too
    circles = _circles(edges)
    detail = [", ".join(c) + ": " + "; ".join(f"{a} -> {b} (line {where[(a, b)]})" for a in c for b in c
                                            if (a, b) in where) for c in circles]
    assert not circles, "import circles:\n" + "\n".join(detail)


def test_no_upward_import() -> None:
    edges, where = _graph()
    up = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)}), line {where[(a, b)]}"
          for a, targets in sorted(edges.items()) for b in sorted(targets)
          if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)]  # type: ignore[operator]
    assert not up, "imports that run up the layers:\n" + "\n".join(up)


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in _modules() if m and layer_of(m) is None)
    assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


def test_the_check_sees_function_level_imports(tmp_path) -> None:
    """The walker counts an import inside a function, and not one under TYPE_CHECKING."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from detflow import cli\n"
                   "def f():\n    from detflow.graph import run\n")
    found = _imports(src, "nodes.m", {"cli", "graph", "graph.run", "nodes", "nodes.m"})
    assert found == [("graph.run", 5)]
