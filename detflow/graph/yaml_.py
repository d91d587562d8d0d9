"""Reading YAML that someone else wrote: safe, bounded, with a line for every key.

``yaml.safe_load`` runs no code, but it still trusts the file's shape. Three things
are checked here, on the composed node tree, before any Python object is built:

* **Alias expansion.** An alias (``*a``) reuses its anchor's node, so ten lines of
  nested aliases describe a tree of a billion nodes (the "billion laughs"): loading
  it is quick, but whatever walks the result (the line map, validation, a copy, a
  dump) walks every expanded node. The number of nodes the aliases *add* is counted
  once per distinct node (memoised), and a file whose aliases add more than
  :data:`MAX_ALIAS_NODES` is refused, as is an alias inside its own anchor.
* **Duplicate keys.** YAML says keys are unique, PyYAML keeps the last one silently;
  here a repeated key is an error naming both lines.
* **Line map.** ``lines[(key, key, index, ...)] = line`` for every path, walking each
  distinct node once: what is under an alias gets the alias's own line, never a walk
  of the expanded tree.

Examples
--------
>>> data, lines = loads("a: 1\\nb:\\n  c: [1, 2]\\n")
>>> data, lines[("b", "c")]
({'a': 1, 'b': {'c': [1, 2]}}, 3)
>>> loads("a: 1\\na: 2\\n", "g.yaml")
Traceback (most recent call last):
...
detflow.errors.GraphValidationError: g.yaml:2: duplicate key 'a' (first at line 1); ...
"""

from __future__ import annotations

from typing import Any

import yaml

from detflow.errors import GraphValidationError

__all__ = ["MAX_ALIAS_NODES", "Lines", "loads"]

#: how many nodes aliases may add to a document, beyond the ones written out
MAX_ALIAS_NODES = 10_000

Lines = dict[tuple[Any, ...], int]


def loads(text: str, file: str | None = None) -> tuple[Any, Lines]:
    """``(data, lines)`` of a YAML document, checked as the module docstring says.

    Raises :class:`~detflow.errors.GraphValidationError` naming ``file`` and the line
    for a syntax error, a duplicate key or an alias bomb.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        lines: Lines = {}
        if root is not None:
            _check_aliases(root, file)
            _walk(root, (), lines, set(), file)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise GraphValidationError(f"YAML syntax error: {problem}", file=file,
                                   line=mark.line + 1 if mark else None) from err
    finally:
        loader.dispose()
    return data, lines


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_aliases(root: yaml.Node, file: str | None) -> None:
    """Refuse a document whose aliases add more than MAX_ALIAS_NODES nodes, or loop."""
    size: dict[int, int] = {}  # id(node) -> nodes in its expanded tree
    open_: set[int] = set()
    distinct: set[int] = set()

    def expanded(node: yaml.Node) -> int:  # iterative: a deep document must not hit the recursion limit
        stack: list[tuple[yaml.Node, bool]] = [(node, False)]
        while stack:
            n, done = stack.pop()
            key = id(n)
            if done:
                open_.discard(key)
                size[key] = 1 + sum(size[id(c)] for c in _children(n))
                continue
            if key in size:
                continue
            if key in open_:
                raise GraphValidationError("a YAML alias refers to its own anchor (a recursive document)",
                                           file=file, line=n.start_mark.line + 1)
            open_.add(key)
            distinct.add(key)
            stack.append((n, True))
            stack.extend((c, False) for c in _children(n) if id(c) not in size)
        return size[id(node)]

    total = expanded(root)
    added = total - len(distinct)
    if added > MAX_ALIAS_NODES:
        raise GraphValidationError(
            f"YAML aliases expand the document to {total} nodes ({added} through aliases; the limit is "
            f"{MAX_ALIAS_NODES}): write the repeated parts out, or reuse fewer levels of aliases",
            file=file, line=root.start_mark.line + 1,
        )


def _walk(node: yaml.Node, path: tuple[Any, ...], out: Lines, seen: set[int], file: str | None) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:  # under an alias: already mapped where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                ident = (key.tag, key.value)
                if ident in first:
                    raise GraphValidationError(
                        f"duplicate key {key.value!r} (first at line {first[ident]}); "
                        "YAML keys must be unique in a mapping: remove or rename one",
                        file=file, line=line,
                    )
                first[ident] = line
            sub = (*path, key.value if isinstance(key, yaml.ScalarNode) else line)
            out[sub] = line
            _walk(value, sub, out, seen, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _walk(value, (*path, i), out, seen, file)
