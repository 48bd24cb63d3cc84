"""Navigating FHIR JSON by element paths, keeping concrete FHIRPath-like locations.

A rule path is dot-separated, relative to the resource; each segment is one of

- ``name``: a child element (``identifier``, ``period.start``);
- ``name[x]``: a choice element (``value[x]`` matches ``valueCoding``, ``valueString``...);
- ``name:slice``: the items of ``name`` that belong to a slice declared by the profile;
- ``extension(url)``: the extensions with that url (also on primitives, through ``_name``).

Every selected node carries its concrete location, e.g. ``Patient.identifier[0].system``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Node", "compile_pattern", "is_mapping", "matches_pattern", "select", "split_path"]


class Node:
    """One value found in a resource, with its location and how it was reached.

    A plain class with slots (not a frozen dataclass): thousands are made per Bundle and a frozen
    dataclass's ``__init__`` costs several times more. Treat it as immutable."""

    __slots__ = ("key", "parent", "path", "value")

    def __init__(self, path: str, value: Any, parent: Any = None, key: str = "") -> None:
        self.path = path
        self.value = value
        self.parent = parent  # the JSON object holding it, for primitive extensions (``_name``)
        self.key = key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return (self.path, self.value, self.parent, self.key) == (other.path, other.value, other.parent, other.key)

    __hash__ = None  # type: ignore[assignment]  # as the dataclass: the value is a dict

    def __repr__(self) -> str:
        return f"Node(path={self.path!r}, value={self.value!r}, parent={self.parent!r}, key={self.key!r})"


#: slice name -> predicate on an item; the key is the rule-path prefix ending with ``name:slice``
SliceLookup = Callable[[str], Callable[[Any], bool] | None]


@functools.lru_cache(maxsize=8192)
def split_path(path: str) -> tuple[str, ...]:
    """Split on dots that are not inside parentheses (extension urls contain dots).

    Rule paths are few and checked again and again: the split is computed once per path."""
    if "(" not in path:
        parts = path.split(".")
        return tuple(parts[:-1] if parts[-1] == "" else parts)  # as below: a trailing dot adds nothing
    out: list[str] = []
    depth = 0
    current = ""
    for char in path:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "." and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    if current:
        out.append(current)
    return tuple(out)


@functools.lru_cache(maxsize=8192)
def _segment(segment: str) -> tuple[str, str]:
    """A path segment -> (element name, slice name or "")."""
    if "(" in segment:
        return segment, ""
    name, _, slice_name = segment.partition(":")
    return name, slice_name


@functools.lru_cache(maxsize=2048)
def _extension_name(name: str) -> tuple[str, str] | None:
    """``extension(url)`` -> ("extension", url); ``None`` for any other element name."""
    if name.startswith("extension(") or name.startswith("modifierExtension("):
        element, _, rest = name.partition("(")
        return element, rest[:-1]
    return None


def is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, without the ABC check for JSON's own types (the hot path)."""
    kind = type(value)
    if kind is dict:
        return True
    if kind is str or kind is list or kind is int or kind is bool:
        return False
    return isinstance(value, Mapping)


@functools.lru_cache(maxsize=8192)
def _name_plan(name: str) -> tuple[int, str, str]:
    """How ``_children`` reads element ``name``: (0, name, "") a plain element, (1, prefix, "") a
    choice ``name[x]``, (2, element, url) ``extension(url)``; computed once per name."""
    if name.endswith("[x]"):
        return 1, name[:-3], ""
    extension = _extension_name(name)
    if extension is not None:
        return 2, extension[0], extension[1]
    return 0, name, ""


def _children(node: Node, name: str) -> list[Node]:
    """The nodes of element ``name`` under ``node`` (one per list item)."""
    value = node.value
    kind, element, url = _name_plan(name)
    if kind == 0:
        if not is_mapping(value):
            return []
        child = value.get(element)
        if child is None:
            return []
        return _wrap(node.path, element, child, value)
    results: list[Node] = []
    if kind == 1:
        prefix = element
        if is_mapping(value):
            for key, child in value.items():
                if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                    results.extend(_wrap(node.path, key, child, value))
        return results
    holder = value
    holder_path = node.path
    if not is_mapping(value):  # a primitive: its extensions live in "_<key>"
        holder = node.parent.get("_" + node.key) if is_mapping(node.parent) else None
        holder_path = _sibling(node.path, node.key)
    if not is_mapping(holder):
        return []
    items = holder.get(element)
    if not isinstance(items, list):
        return []
    for index, item in enumerate(items):
        if is_mapping(item) and item.get("url") == url:
            results.append(Node(f"{holder_path}.{element}[{index}]", item, holder, element))
    return results


def _sibling(path: str, key: str) -> str:
    """``Patient.birthDate`` -> ``Patient._birthDate`` (where a primitive's extensions live)."""
    if path.endswith("." + key):
        return path[: -len(key)] + "_" + key
    return path


def _wrap(base: str, key: str, child: Any, holder: Mapping[str, Any]) -> list[Node]:
    if child is None:
        return []
    if isinstance(child, list):
        return [Node(f"{base}.{key}[{i}]", item, holder, key) for i, item in enumerate(child) if item is not None]
    return [Node(f"{base}.{key}", child, holder, key)]


@functools.lru_cache(maxsize=8192)
def _select_plan(path: str, prefix: str) -> tuple[tuple[str, str, str], ...]:
    """(element name, slice name, rule-path prefix) of each segment of ``path`` under ``prefix``."""
    plan = []
    rule_prefix = prefix
    for segment in split_path(path):
        name, slice_name = _segment(segment)
        rule_prefix = f"{rule_prefix}.{segment}" if rule_prefix else segment
        plan.append((name, slice_name, rule_prefix))
    return tuple(plan)


def select(root: Node, path: str, slice_lookup: SliceLookup | None = None, prefix: str = "") -> list[Node]:
    """All nodes reached from ``root`` by the rule ``path`` (``prefix`` = rule path of ``root``)."""
    nodes = [root]
    for name, slice_name, rule_prefix in _select_plan(path, prefix):
        predicate = slice_lookup(rule_prefix) if (slice_name and slice_lookup) else None
        if slice_name and predicate is None:
            raise KeyError(f"undeclared slice {rule_prefix!r}")
        if len(nodes) == 1 and predicate is None:
            nodes = _children(nodes[0], name)
        else:
            next_nodes: list[Node] = []
            for node in nodes:
                for child in _children(node, name):
                    if predicate is None or predicate(child.value):
                        next_nodes.append(child)
            nodes = next_nodes
        if not nodes:
            break
    return nodes


def matches_pattern(actual: Any, pattern: Any) -> bool:
    """FHIR ``pattern[x]`` semantics: every element of the pattern is present with the same value."""
    if is_mapping(pattern):
        if not is_mapping(actual):
            return False
        return all(matches_pattern(actual.get(key), value) for key, value in pattern.items())
    if isinstance(pattern, list):
        if not isinstance(actual, list):
            return False
        return all(any(matches_pattern(item, wanted) for item in actual) for wanted in pattern)
    return bool(actual == pattern)


def compile_pattern(pattern: Any) -> Callable[[Any], bool]:
    """``lambda actual: matches_pattern(actual, pattern)``, with the pattern's structure walked once."""
    if is_mapping(pattern):
        items = tuple((key, compile_pattern(value)) for key, value in pattern.items())

        def mapping(actual: Any) -> bool:
            if not is_mapping(actual):
                return False
            return all(matches(actual.get(key)) for key, matches in items)

        return mapping
    if isinstance(pattern, list):
        wanted = tuple(compile_pattern(value) for value in pattern)

        def sequence(actual: Any) -> bool:
            if not isinstance(actual, list):
                return False
            return all(any(matches(item) for item in actual) for matches in wanted)

        return sequence
    return lambda actual: bool(actual == pattern)
