"""Strict JSON for request bodies: what ``json.loads`` lets through and the gateway must not.

One parser for every JSON entry point (``/v1/submissions``, FHIR ``$validate``): UTF-8 only,
no ``NaN``/``Infinity`` (neither as constants nor as overflowing literals such as ``1e400``),
integers of at most 4,300 digits (Python's limit), no duplicate member names (which member
wins differs between parsers), and at most :data:`MAX_JSON_DEPTH` levels of nesting (a DUI
record or a FHIR resource is far shallower; deeper input would exhaust the parser's recursion).
Every refusal is :class:`~gateway.api.problems.InvalidJson` (400), whose detail never quotes
the input.
"""

from __future__ import annotations

import json
import math
from typing import Any

from connectors._json import nests_deeper_than
from gateway.api.problems import InvalidJson

__all__ = ["MAX_JSON_DEPTH", "json_depth_exceeds", "parse_json_body"]

MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large to be represented")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("an object has the same member name twice")
    return out


# built once: json.loads with keyword arguments builds a decoder (and its scanner) per call
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_unique_members
)


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests objects/arrays more than ``limit`` levels (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json_body(body: bytes) -> Any:
    """Parse a request body as strict JSON, or raise :class:`InvalidJson` (400) saying why (no values)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"request body is not UTF-8 (byte {exc.start})", extra={"position": exc.start}) from None
    if nests_deeper_than(text, MAX_JSON_DEPTH):
        raise InvalidJson(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        if text.startswith("\ufeff"):  # json.loads' own refusal, kept word for word
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            extra={"line": exc.lineno, "column": exc.colno, "position": exc.pos},
        ) from None
    except ValueError as exc:  # NaN, an infinite number, a duplicate member, too many digits: no input quoted
        reason = "a number has too many digits" if "digits" in str(exc) else str(exc)
        raise InvalidJson(f"request body is not valid JSON: {reason}") from None
    except RecursionError:  # belt and braces: the scan above already refused deep nesting
        raise InvalidJson(f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
