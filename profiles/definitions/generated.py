"""Profiles generated from the IGs' StructureDefinitions (``profiles/data/generated.json``).

The data is produced at authoring time by ``scripts/gen_profiles.py`` (see
``profiles/_generator.py``) from FR Core 2.2.0-ballot-2, TDDUI 2.0.0 (packages), TDDUI 2.2.0,
IHE MHD 4.2.4-current, PDSm 3.1.1 and SDO 4.0.5 (transcribed differentials, ``profiles/sources/``).
The gateway's own rules (keys ``dui-*``) are added on top by :func:`overlay`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from profiles._report import Severity
from profiles._rules import Binding, Card, Fixed, Invariant, Profile, RefTarget, Rule, Slice, Types, ValueSet

__all__ = ["SOURCES", "load", "overlay"]


@cache
def _data() -> dict[str, Any]:
    text = resources.files("profiles").joinpath("data/generated.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _valueset(url: str, spec: Mapping[str, Any]) -> ValueSet:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if not spec.get("available"):
        return ValueSet(url=url, name=name, codes=frozenset(), available=False)
    return ValueSet(
        url=url,
        name=name,
        codes=frozenset(spec["codes"]),
        systems=frozenset(spec.get("systems", [])),
        open_systems=frozenset(spec.get("open_systems", [])),
        partial=bool(spec.get("partial")),
    )


def _rule(spec: Mapping[str, Any], valuesets: Mapping[str, ValueSet]) -> Rule:
    kind = spec["kind"]
    severity: Severity = "warning" if spec.get("severity") == "warning" else "error"
    if kind == "card":
        return Card(spec["path"], spec["min"], spec["max"], severity)
    if kind == "fixed":
        return Fixed(spec["path"], spec["value"], bool(spec["pattern"]), severity)
    if kind == "binding":
        strength = "required" if severity == "error" else "extensible"
        return Binding(spec["path"], valuesets[spec["valueset"]], strength)
    if kind == "reference":
        return RefTarget(spec["path"], tuple(spec["types"]), severity)
    if kind == "types":
        return Types(spec["path"], tuple(spec["types"]), severity)
    if kind == "invariant":
        return Invariant(spec["key"], spec["expression"], spec["human"], spec["severity"], spec["context"])
    raise ValueError(f"unknown generated rule kind {kind!r}")


@cache
def load() -> tuple[Profile, ...]:
    """The generated profiles, as engine :class:`Profile` objects."""
    data = _data()
    valuesets = {url: _valueset(url, spec) for url, spec in data["valuesets"].items()}
    out = []
    for spec in data["profiles"]:
        out.append(
            Profile(
                url=spec["url"],
                type=spec["type"],
                title=spec["title"],
                parents=tuple(spec["parents"]),
                slices=tuple(Slice(s["path"], tuple((m[0], m[1]) for m in s["match"])) for s in spec["slices"]),
                rules=tuple(_rule(r, valuesets) for r in spec["rules"]),
            )
        )
    return tuple(out)


def overlay(profile: Profile, slices: tuple[Slice, ...], rules: tuple[Rule, ...]) -> Profile:
    """``profile`` with the gateway's own rules, and its own slice recognitions added to the IG's
    (an item matching either is in the slice, so that a wrong value is reported on the slice)."""
    extra = {s.path: s for s in slices}
    merged = tuple(Slice(s.path, s.match + extra.pop(s.path).match) if s.path in extra else s for s in profile.slices)
    return Profile(
        url=profile.url,
        type=profile.type,
        title=profile.title,
        parents=profile.parents,
        slices=merged + tuple(extra.values()),
        rules=profile.rules + rules,
    )


#: the IG builds the data comes from (as recorded by the generator)
SOURCES: tuple[str, ...] = tuple(s["source"] for s in _data()["sources"])
