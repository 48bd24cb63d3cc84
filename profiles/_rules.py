"""Declarative profile constraints and the engine that checks them.

A :class:`Profile` is data: slices, cardinalities, fixed/pattern values, bindings to value
sets, reference targets and FHIRPath invariants (evaluated with fhirpathpy). ``parents``
chains profiles (TDDUI Patient INS -> FR Core Patient INS -> FR Core Patient).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import TypeInfo as _TypeInfo
from fhirpathpy.models import models as _fhirpath_models

from profiles._fhirpath import Fallback, compile_invariant
from profiles._paths import Node, compile_pattern, is_mapping, matches_pattern, select, split_path
from profiles._report import Issue, Severity, ValidationRunError

__all__ = [
    "Binding",
    "Card",
    "Fixed",
    "Invariant",
    "Profile",
    "RefTarget",
    "Rule",
    "Slice",
    "Types",
    "ValueSet",
    "check_profile",
]


@dataclass(frozen=True)
class ValueSet:
    """A value set as the validator needs it: its canonical, the allowed systems and codes."""

    url: str
    name: str
    codes: frozenset[str]
    systems: frozenset[str] = frozenset()  # empty: any system (or none) accepted
    available: bool = True  # False: no code list here, values are reported "not checked"
    open_systems: frozenset[str] = frozenset()  # whole code systems whose codes are not listed here
    partial: bool = False  # part of the value set has no code list: a code outside the rest is "not checked"

    def contains(self, system: Any, code: Any) -> bool:
        """Whether ``system|code`` is in the value set. They come from the JSON as they are: an
        object or array there (a structure error) is in no value set."""
        if _unhashable(system) or _unhashable(code):
            return False
        if system is not None and system in self.open_systems:
            return code is not None
        if code is None or code not in self.codes:
            return False
        return not self.systems or system is None or system in self.systems

    def describe(self) -> str:
        return self.name or self.url


def _unhashable(value: Any) -> bool:
    """A JSON object or array (what cannot be looked up in a set of codes or systems)."""
    return isinstance(value, (dict, list))


@functools.lru_cache(maxsize=2048)
def _plain_path(subpath: str) -> tuple[str, ...] | None:
    """The element names of a sub-path made of plain elements only (no choice, slice, extension
    url, list-typed JSON subclass...), read without nodes; ``None`` otherwise. "" is the item."""
    if not subpath:
        return ()
    names = split_path(subpath)
    if any(not name or not name.isidentifier() for name in names):
        return None
    return names


@dataclass(frozen=True)
class Slice:
    """A named slice: the items of the element whose sub-paths match any of the ``match`` patterns."""

    path: str  # e.g. "identifier:INS-NIR"
    match: tuple[tuple[str, Any], ...]

    def predicate(self, item: Any) -> bool:
        return self._matcher(item)

    @functools.cached_property
    def _matcher(self) -> Callable[[Any], bool]:
        """The recognition compiled once per slice: plain sub-paths read straight from the JSON,
        patterns compiled (``_paths.compile_pattern``); other sub-paths through ``select``."""
        tests = [(_plain_path(subpath), subpath, compile_pattern(pattern)) for subpath, pattern in self.match]

        def matcher(item: Any) -> bool:
            root: Node | None = None
            for plain, subpath, matches in tests:
                if plain is not None:
                    values = [item]
                    for name in plain:
                        found: list[Any] = []
                        for value in values:
                            if is_mapping(value):
                                child = value.get(name)
                                if child is None:
                                    continue
                                if isinstance(child, list):
                                    found.extend(x for x in child if x is not None)
                                else:
                                    found.append(child)
                        values = found
                    if any(matches(value) for value in values):
                        return True
                    continue
                if root is None:
                    root = Node("", item)
                for node in select(root, subpath):
                    if matches(node.value):
                        return True
            return False

        return matcher


@dataclass(frozen=True)
class Card:
    """``path`` occurs between ``min`` and ``max`` times under each instance of its parent."""

    path: str
    min: int
    max: int | None = None
    severity: Severity = "error"


@dataclass(frozen=True)
class Fixed:
    """Each value at ``path`` equals ``value`` (``pattern=True``: contains it, FHIR pattern[x])."""

    path: str
    value: Any
    pattern: bool = False
    severity: Severity = "error"


@dataclass(frozen=True)
class Binding:
    """Each code/Coding/CodeableConcept at ``path`` comes from ``valueset``."""

    path: str
    valueset: ValueSet
    strength: str = "required"  # required -> error, extensible -> warning


@dataclass(frozen=True)
class RefTarget:
    """Each Reference at ``path`` points to one of the resource ``types`` (when resolvable)."""

    path: str
    types: tuple[str, ...]
    severity: Severity = "error"


@dataclass(frozen=True)
class Invariant:
    """A FHIRPath constraint evaluated on each node at ``context`` ("" = the resource)."""

    key: str
    expression: str
    human: str
    severity: Severity = "error"
    context: str = ""
    when: tuple[str, ...] = ()  # evaluate only when the node has one of these elements (a shortcut, not a rule)


@dataclass(frozen=True)
class Types:
    """A choice element ``path`` (``value[x]``) restricted to the data ``types`` (FHIR type codes)."""

    path: str
    types: tuple[str, ...]
    severity: Severity = "error"


Rule = Card | Fixed | Binding | RefTarget | Invariant | Types


@dataclass(frozen=True)
class Profile:
    """One profile's constraints. ``parents`` are profile URLs whose constraints also apply."""

    url: str
    type: str
    title: str
    parents: tuple[str, ...] = ()
    slices: tuple[Slice, ...] = ()
    rules: tuple[Rule, ...] = ()


Resolver = Callable[[str], str | None]  # reference -> resource type, within a Bundle


# fhirpathpy sets this class attribute on the first ``is()``/``as()`` it evaluates, and some of its
# answers depend on it afterwards (type paths): set it once here, so that a report does not depend on
# what the process evaluated before (nor on which invariants the compiled closures answered).
_TypeInfo.model = _fhirpath_models["r4"]  # type: ignore[assignment]


@functools.lru_cache(maxsize=512)
def _reference(expression: str) -> Callable[[Any], list[Any]]:
    """fhirpathpy's evaluation of ``expression`` (the reference the compiled closures follow)."""
    compiled = fhirpathpy.compile(expression, _fhirpath_models["r4"])
    return lambda value: compiled(value, None)


@functools.lru_cache(maxsize=512)
def _compiled(expression: str) -> Callable[[Any], list[Any]]:
    """``expression`` compiled to closures (``profiles._fhirpath``), fhirpathpy where they step aside."""
    fast = compile_invariant(expression)
    reference = _reference(expression)
    if fast is None:
        return reference

    def evaluate(value: Any) -> list[Any]:
        try:
            return fast(value)
        except Fallback:
            return reference(value)

    return evaluate


def _element_label(segment: str) -> str:
    if segment.startswith("extension("):
        return "extension"
    if segment.startswith("modifierExtension("):
        return "modifierExtension"
    return segment.partition(":")[0].replace("[x]", "")


def _slice_note(segment: str) -> str:
    if ":" in segment and "(" not in segment:
        return f" (slice {segment.partition(':')[2]})"
    if segment.startswith("extension(") or segment.startswith("modifierExtension("):
        return f" (url {segment[segment.index('(') + 1 : -1]})"
    return ""


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


_REF_TYPE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")
_CONDITIONAL_TYPE = re.compile(r"^([A-Z][A-Za-z]+)\?")


def reference_type(reference: str, resolve: Resolver | None) -> str | None:
    """The resource type a reference points to, or ``None`` when it cannot be told."""
    if reference.startswith("#"):  # a contained resource (its type when the container holds it)
        return resolve(reference) if resolve is not None else None
    if resolve is not None:
        resolved = resolve(reference)
        if resolved is not None:
            return resolved
    if reference.startswith("urn:"):
        return None
    match = _CONDITIONAL_TYPE.match(reference) or _REF_TYPE.search(reference)
    return match.group(1) if match else None


@functools.lru_cache(maxsize=8192)
def _split_last(path: str, prefix: str) -> tuple[str | None, str, str]:
    """(parent path, last segment, rule-path prefix of the last segment); no parent: ``None``."""
    segments = split_path(path)
    if len(segments) <= 1:
        return None, path, prefix
    parent_path = ".".join(segments[:-1])
    return parent_path, segments[-1], f"{prefix}.{parent_path}" if prefix else parent_path


@functools.lru_cache(maxsize=8192)
def _card_plan(path: str) -> tuple[str, str, str, str]:
    """A cardinality rule's (parent path, last segment, element label, slice/url note)."""
    segments = split_path(path)
    last = segments[-1]
    return ".".join(segments[:-1]), last, _element_label(last), _slice_note(last)


_CHAIN_SLICES: dict[tuple[int, ...], tuple[tuple[Profile, ...], dict[str, Slice]]] = {}


def _chain_slices(profiles: tuple[Profile, ...]) -> dict[str, Slice]:
    """The slices of a chain (a slice named by several profiles: any of their recognitions), merged
    once per chain so that each merged slice compiles its recognition once. Keyed by the profiles'
    identities (a Profile may hold unhashable values); the entry keeps them alive."""
    key = tuple(id(p) for p in profiles)
    cached = _CHAIN_SLICES.get(key)
    if cached is not None and all(a is b for a, b in zip(cached[0], profiles, strict=True)):
        return cached[1]
    slices: dict[str, Slice] = {}
    for profile in profiles:
        for slice_ in profile.slices:
            known = slices.get(slice_.path)
            slices[slice_.path] = Slice(slice_.path, known.match + slice_.match) if known else slice_
    if len(_CHAIN_SLICES) > 1024:
        _CHAIN_SLICES.clear()
    _CHAIN_SLICES[key] = (profiles, slices)
    return slices


class _Checker:
    """Checks one resource against a chain of profiles.

    The resource is not changed while it is checked, so what a rule path selects and whether an
    item belongs to a slice are computed once per checker and shared by every rule that asks
    (many rules of a chain share their paths and slices; a Bundle profile's slices are asked
    about every entry)."""

    def __init__(self, profiles: list[Profile], root: Node, resolve: Resolver | None, lenient: bool) -> None:
        self.root = root
        self.resolve = resolve
        self.lenient = lenient
        self.slices = _chain_slices(tuple(profiles))
        self.issues: list[Issue] = []
        self._predicates: dict[str, Callable[[Any], bool]] = {}
        self._selected: dict[tuple[str, str, str], list[Node]] = {}

    def lookup(self, rule_path: str) -> Callable[[Any], bool] | None:
        found = self._predicates.get(rule_path)
        if found is not None:
            return found
        slice_ = self.slices.get(rule_path)
        if slice_ is None:
            return None
        memo: dict[int, tuple[Any, bool]] = {}  # id(item) -> (item, verdict): the item is kept alive

        def predicate(item: Any) -> bool:
            known = memo.get(id(item))
            if known is not None and known[0] is item:
                return known[1]
            verdict = slice_.predicate(item)
            memo[id(item)] = (item, verdict)
            return verdict

        self._predicates[rule_path] = predicate
        return predicate

    def select(self, node: Node, path: str, prefix: str = "") -> list[Node]:
        """``select(node, path, self.lookup, prefix)``, computed once per node location and path;
        a path's parent path is selected through the same memo (rules share their prefixes)."""
        key = (node.path, path, prefix)
        found = self._selected.get(key)
        if found is not None:
            return found
        parent_path, last, last_prefix = _split_last(path, prefix)
        if parent_path is None:
            found = select(node, path, self.lookup, prefix=prefix)
        else:
            found = [
                child
                for parent in self.select(node, parent_path, prefix)
                for child in select(parent, last, self.lookup, prefix=last_prefix)
            ]
        self._selected[key] = found
        return found

    def nodes(self, path: str) -> list[Node]:
        if not path:
            return [self.root]
        found = self._selected.get((self.root.path, path, ""))
        return found if found is not None else self.select(self.root, path)

    def issue(self, profile: Profile, severity: Severity, code: Any, path: str, message: str, rule: str) -> None:
        self.issues.append(Issue(severity, code, path, message, profile.url, rule))

    def run(self, profile: Profile) -> None:
        checks = {
            Card: self.card,
            Fixed: self.fixed,
            Binding: self.binding,
            RefTarget: self.ref_target,
            Types: self.types,
            Invariant: self.invariant,
        }
        for rule in profile.rules:
            check: Any = checks.get(type(rule)) or self._check_for(rule)
            check(profile, rule)

    def _check_for(self, rule: Rule) -> Callable[[Profile, Any], None]:
        """The check of a rule whose class is a subclass of a rule kind (the isinstance order of old)."""
        for kind, check in (
            (Card, self.card),
            (Fixed, self.fixed),
            (Binding, self.binding),
            (RefTarget, self.ref_target),
            (Types, self.types),
        ):
            if isinstance(rule, kind):
                return check
        return self.invariant

    def card(self, profile: Profile, rule: Card) -> None:
        parent_path, last, label, note = _card_plan(rule.path)
        for parent in self.nodes(parent_path):
            children = self.select(parent, last, parent_path)
            count = len(children)
            if count < rule.min:
                where = f"{parent.path}.{label}"
                self.issue(
                    profile,
                    rule.severity,
                    "required",
                    where,
                    f"{where}{note}: minimum cardinality {rule.min}, found {count}",
                    "card",
                )
            if rule.max is not None and count > rule.max:
                where = f"{parent.path}.{label}"
                self.issue(
                    profile,
                    rule.severity,
                    "structure",
                    children[rule.max].path,
                    f"{where}{note}: maximum cardinality {rule.max}, found {count}",
                    "card",
                )

    def fixed(self, profile: Profile, rule: Fixed) -> None:
        for node in self.nodes(rule.path):
            ok = matches_pattern(node.value, rule.value) if rule.pattern else node.value == rule.value
            if not ok:
                kind = "pattern" if rule.pattern else "fixed value"
                self.issue(
                    profile,
                    rule.severity,
                    "value",
                    node.path,
                    f"{node.path}: {kind} {_short(rule.value)} expected, found {_short(node.value)}",
                    "pattern" if rule.pattern else "fixed",
                )

    def binding(self, profile: Profile, rule: Binding) -> None:
        severity: Severity = "error" if rule.strength == "required" else "warning"
        if rule.strength not in ("required", "extensible"):
            return
        vs = rule.valueset
        if not vs.available:
            for node in self.nodes(rule.path):
                self.issue(
                    profile,
                    "warning",
                    "not-supported",
                    node.path,
                    f"{node.path}: value set {vs.describe()} has no code list here: binding not checked",
                    "binding-unchecked",
                )
            return
        for node in self.nodes(rule.path):
            failed = self._binding_failure(node, vs)
            if failed is None:
                unlisted = self._open_system_code(node, vs)
                if unlisted:
                    self.issue(
                        profile,
                        "information",
                        "informational",
                        node.path,
                        f"{node.path}: {unlisted}: the code system has no code list here, only the system was checked",
                        "binding-system-only",
                    )
                continue
            where, message = failed
            if vs.partial:  # the code may be in the part of the value set without a code list
                self.issue(
                    profile,
                    "warning",
                    "not-supported",
                    where,
                    f"{message} (the rest of the value set has no code list here: not checked)",
                    "binding-unchecked",
                )
            else:
                self.issue(profile, severity, "code-invalid", where, message, "binding")

    @staticmethod
    def _open_system_code(node: Node, vs: ValueSet) -> str | None:
        """``system|code`` when the code was accepted only because its whole system is in ``vs``."""
        if not vs.open_systems or not is_mapping(node.value):
            return None
        codings = node.value.get("coding") if "coding" in node.value else [node.value]
        if not isinstance(codings, list):
            return None
        pairs = [(c.get("system"), c.get("code")) for c in codings if is_mapping(c)]
        pairs = [(system, code) for system, code in pairs if not _unhashable(system) and not _unhashable(code)]
        if any(code in vs.codes and (not vs.systems or system in vs.systems) for system, code in pairs):
            return None
        opened = [f"{system}|{code}" for system, code in pairs if system in vs.open_systems]
        return opened[0] if opened else None

    @staticmethod
    def _binding_failure(node: Node, vs: ValueSet) -> tuple[str, str] | None:
        """(location, message) when the code(s) at ``node`` are not in ``vs``, else ``None``."""
        value = node.value
        if isinstance(value, str):
            if value in vs.codes:
                return None
            return node.path, f"{node.path}: code {value!r} is not in value set {vs.describe()}"
        if not is_mapping(value):
            return None
        if "coding" in value or "text" in value:  # CodeableConcept
            coding = value.get("coding")
            # not an array (a structure error): no Coding to check, as for an array without one
            codings = [c for c in coding if is_mapping(c)] if isinstance(coding, list) else []
            if not codings or any(vs.contains(c.get("system"), c.get("code")) for c in codings):
                return None  # text only: nothing coded to check (the HL7 validator accepts it too)
            where = f"{node.path}.coding[0].code" if len(codings) == 1 else node.path
            found = ", ".join(f"{c.get('system')}|{c.get('code')}" for c in codings)
            return where, f"{node.path}: none of the codings ({found}) is in value set {vs.describe()}"
        if vs.contains(value.get("system"), value.get("code")):  # Coding
            return None
        return (
            f"{node.path}.code",
            f"{node.path}: {value.get('system')}|{value.get('code')} is not in value set {vs.describe()}",
        )

    def types(self, profile: Profile, rule: Types) -> None:
        segments = split_path(rule.path)
        parent_path = ".".join(segments[:-1])
        prefix = segments[-1].removesuffix("[x]")
        allowed = {t[:1].upper() + t[1:] for t in rule.types}
        for parent in self.nodes(parent_path):
            if not is_mapping(parent.value):
                continue
            for key in parent.value:
                if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                    if key[len(prefix) :] not in allowed:
                        where = f"{parent.path}.{key}"
                        self.issue(
                            profile,
                            rule.severity,
                            "structure",
                            where,
                            f"{where}: type {key[len(prefix) :]} not allowed, expected {' or '.join(rule.types)}",
                            "type",
                        )

    def ref_target(self, profile: Profile, rule: RefTarget) -> None:
        for node in self.nodes(rule.path):
            if not is_mapping(node.value):
                continue
            reference = node.value.get("reference")
            if not isinstance(reference, str):
                continue
            target = reference_type(reference, self.resolve)
            if target is not None and target not in rule.types:
                self.issue(
                    profile,
                    rule.severity,
                    "value",
                    f"{node.path}.reference",
                    f"{node.path}: reference to {target} where {' or '.join(rule.types)} is expected",
                    "reference",
                )

    def invariant(self, profile: Profile, rule: Invariant) -> None:
        for node in self.nodes(rule.context):
            if rule.when and not (is_mapping(node.value) and any(k.startswith(rule.when) for k in node.value)):
                continue
            try:
                result = _compiled(rule.expression)(node.value)
            except Exception as exc:
                # fhirpathpy fails on some primitives that carry extensions (``reference`` beside
                # ``_reference``: "Expected string, but got [...]"); the constraint is about the
                # value, so it is evaluated again on the value alone before giving up
                plain = _without_primitive_extensions(node.value)
                if plain is not node.value:
                    try:
                        result = _compiled(rule.expression)(plain)
                    except Exception:  # noqa: S110 - the first failure is the one reported
                        pass
                    else:
                        if result and result != [True]:
                            self.issue(
                                profile, rule.severity, "invariant", node.path, f"{rule.key}: {rule.human}", rule.key
                            )
                        continue
                if not self.lenient:  # the resource is well-formed: the engine (or the constraint) failed
                    raise ValidationRunError(
                        f"{profile.url} {rule.key}: FHIRPath evaluation failed at {node.path}: {type(exc).__name__}"
                    ) from exc
                # structure errors already fail the resource and may be what broke the expression
                self.issue(
                    profile, "error", "processing", node.path, f"{rule.key}: could not evaluate ({exc})", rule.key
                )
                continue
            # FHIR: a constraint fails when it evaluates to false; an empty result is not a failure.
            if result and result != [True]:
                self.issue(profile, rule.severity, "invariant", node.path, f"{rule.key}: {rule.human}", rule.key)


def _without_primitive_extensions(value: Any) -> Any:
    """``value`` without the ``_name`` siblings of primitives that have a value (their id and
    extensions); the same object when there is none."""
    if isinstance(value, Mapping):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("_") and key[1:] in value:
                changed = True
                continue
            plain = _without_primitive_extensions(item)
            changed = changed or plain is not item
            out[key] = plain
        return out if changed else value
    if isinstance(value, list):
        items = [_without_primitive_extensions(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def check_profile(
    chain: list[Profile], root: Node, resolve: Resolver | None = None, *, lenient: bool = False
) -> list[Issue]:
    """Check ``root`` against every profile of ``chain`` (the profile first, then its ancestors).

    A FHIRPath evaluation that fails raises :class:`ValidationRunError`, unless ``lenient`` (the
    resource has structure errors already): then it is a ``processing`` issue."""
    checker = _Checker(chain, root, resolve, lenient)
    for profile in chain:
        checker.run(profile)
    return checker.issues
