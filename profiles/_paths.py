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
from dataclasses import dataclass
from typing import Any

__all__ = ["Node", "matches_pattern", "select", "split_path"]


@dataclass(frozen=True)
class Node:
    """One value found in a resource, with its location and how it was reached."""

    path: str
    value: Any
    parent: Any = None  # the JSON object holding it, for primitive extensions (``_name``)
    key: str = ""


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


def _children(node: Node, name: str) -> list[Node]:
    """The nodes of element ``name`` under ``node`` (one per list item)."""
    value = node.value
    results: list[Node] = []
    if name.endswith("[x]"):
        prefix = name[:-3]
        if isinstance(value, Mapping):
            for key, child in value.items():
                if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                    results.extend(_wrap(node.path, key, child, value))
        return results
    extension = _extension_name(name)
    if extension is not None:
        element, url = extension
        holder = value
        holder_path = node.path
        if not isinstance(value, Mapping):  # a primitive: its extensions live in "_<key>"
            holder = node.parent.get("_" + node.key) if isinstance(node.parent, Mapping) else None
            holder_path = _sibling(node.path, node.key)
        if not isinstance(holder, Mapping):
            return []
        items = holder.get(element)
        if not isinstance(items, list):
            return []
        for index, item in enumerate(items):
            if isinstance(item, Mapping) and item.get("url") == url:
                results.append(Node(f"{holder_path}.{element}[{index}]", item, holder, element))
        return results
    if not isinstance(value, Mapping):
        return []
    if name not in value:
        return []
    return _wrap(node.path, name, value[name], value)


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


def select(root: Node, path: str, slice_lookup: SliceLookup | None = None, prefix: str = "") -> list[Node]:
    """All nodes reached from ``root`` by the rule ``path`` (``prefix`` = rule path of ``root``)."""
    nodes = [root]
    rule_prefix = prefix
    for segment in split_path(path):
        name, slice_name = _segment(segment)
        rule_prefix = f"{rule_prefix}.{segment}" if rule_prefix else segment
        predicate = slice_lookup(rule_prefix) if (slice_name and slice_lookup) else None
        if slice_name and predicate is None:
            raise KeyError(f"undeclared slice {rule_prefix!r}")
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
    if isinstance(pattern, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(matches_pattern(actual.get(key), value) for key, value in pattern.items())
    if isinstance(pattern, list):
        if not isinstance(actual, list):
            return False
        return all(any(matches_pattern(item, wanted) for item in actual) for wanted in pattern)
    return bool(actual == pattern)
