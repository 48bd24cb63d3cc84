"""One bounded JSON reader for what peers send (receipts, FHIR answers, notifications).

``loads_bounded(content, max_depth=…)`` refuses, with :class:`JsonRefused` and a message that
never quotes the content: bytes that are not UTF-8, nesting deeper than ``max_depth`` (checked
by a scan before the parser recurses), integers of more than 30 digits, ``NaN``/``Infinity``,
and anything that is not JSON. Callers translate :class:`JsonRefused` into their own outcome
(a note on an inbound message, a transient or permanent delivery error).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_INT_DIGITS", "JsonRefused", "loads_bounded", "nests_deeper_than"]

MAX_INT_DIGITS = 30


class JsonRefused(ValueError):
    """The content is not JSON within the limits (the message never quotes it)."""


def nests_deeper_than(text: str, limit: int) -> bool:
    """True when the JSON text opens more than ``limit`` nested arrays/objects (strings skipped)."""
    if text.count("[") + text.count("{") <= limit:  # cheap: most bodies never need the scan
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonRefused("a number is too large")
    return int(digits)


def _parse_constant(name: str) -> float:
    raise JsonRefused("NaN and Infinity are not JSON")


def loads_bounded(content: bytes | str, *, max_depth: int, what: str = "the body") -> Any:
    """Parse ``content`` as JSON within the limits, or raise :class:`JsonRefused`."""
    if isinstance(content, bytes):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused(f"{what} is not UTF-8") from None
    else:
        text = content
    if nests_deeper_than(text, max_depth):
        raise JsonRefused(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except JsonRefused:
        raise
    except (ValueError, RecursionError):
        raise JsonRefused(f"{what} is not JSON") from None
