"""Break each generated constraint once on a valid instance and check the validator reports it.

Used by ``test_mutations.py``: for every rule of every generated profile, find a valid sample
(IG examples, the gateway's PPA bundle entries) declaring the profile or one of its descendants,
apply the one mutation that breaks only that rule (remove a required element, repeat one past its
maximum, change a fixed/pattern value, put a code outside the bound value set, point a reference to
another resource type, change a choice's type) and look for the issue at the rule's location.
"""

from __future__ import annotations

import copy
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from profiles import definitions, validate
from profiles._paths import Node, select, split_path
from profiles._rules import Binding, Card, Fixed, Profile, RefTarget, Rule, Types, _Checker, _element_label

KIND_LABELS = {
    "binding": "required bindings",
    "card0": "0..0",
    "cardmin": "min cardinality",
    "cardmax": "max cardinality",
    "extcard": "extension cardinality",
    "slice": "slices",
    "pattern": "patterns / fixed values",
    "reference": "reference targets",
    "types": "choice types",
}

#: canonical prefix -> IG label of the coverage table's "by IG" part
FAMILY_LABELS = (
    ("https://hl7.fr/ig/fhir/core/", "FR Core"),
    ("https://interop.esante.gouv.fr/ig/fhir/tddui/", "TDDUI"),
    ("https://interop.esante.gouv.fr/ig/fhir/sdo/", "SDO"),
    ("https://profiles.ihe.net/ITI/MHD/", "IHE MHD (ITI-65, ITI-105)"),
    ("https://interop.esante.gouv.fr/ig/fhir/pdsm/", "PDSm"),
)

_SEGMENT = re.compile(r"^([^\[]+)(?:\[(\d+)\])?$")


def kind_of(rule: Rule) -> str:
    path = getattr(rule, "path", "")
    if isinstance(rule, Card):
        if rule.max == 0:
            return "card0"
        if "extension(" in split_path(path)[-1]:
            return "extcard"
        if ":" in split_path(path)[-1]:
            return "slice"
        return "cardmin" if rule.min > 0 else "cardmax"
    if isinstance(rule, Fixed):
        return "pattern"
    if isinstance(rule, Binding):
        return "binding"
    if isinstance(rule, RefTarget):
        return "reference"
    if isinstance(rule, Types):
        return "types"
    return "invariant"


def _locate(resource: dict[str, Any], path: str) -> tuple[Any, Any]:
    """The container and key/index of the element at a concrete ``path`` (``Patient.name[0].given``)."""
    parts = split_path(path)[1:]
    target: Any = resource
    for part in parts[:-1]:
        name, index = _SEGMENT.match(part).groups()  # type: ignore[union-attr]
        target = target[name]
        if index is not None:
            target = target[int(index)]
    name, index = _SEGMENT.match(parts[-1]).groups()  # type: ignore[union-attr]
    if index is not None:
        return target[name], int(index)
    return target, name


def _other_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value + "-mutated" if not value.startswith("http") else "https://example.org/mutated"
    if isinstance(value, dict):
        out = copy.deepcopy(value)
        codings = out.get("coding")
        if isinstance(codings, list) and codings:
            codings[0]["system"] = "https://example.org/mutated-system"
            return out
        if "system" in out:
            out["system"] = "https://example.org/mutated-system"
            return out
        if "code" in out:
            out["code"] = "mutated"
        return out
    return value


@dataclass
class Outcome:
    profile: str
    rule: Rule
    kind: str
    status: str  # caught, missed, not-exercised
    detail: str = ""


@dataclass
class Result:
    outcomes: list[Outcome] = field(default_factory=list)

    def by_kind(self) -> dict[str, tuple[int, int, int]]:
        """kind -> (caught, attempted, not exercised)."""
        caught: Counter[str] = Counter()
        tried: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        for o in self.outcomes:
            if o.status == "not-exercised":
                skipped[o.kind] += 1
            else:
                tried[o.kind] += 1
                caught[o.kind] += o.status == "caught"
        kinds = sorted(set(tried) | set(skipped))
        return {k: (caught[k], tried[k], skipped[k]) for k in kinds}

    def by_family(self) -> dict[str, tuple[int, int, int]]:
        """IG -> (caught, tried, not exercised), as :meth:`by_kind`."""
        out: dict[str, tuple[int, int, int]] = {}
        for outcome in self.outcomes:
            family = next((name for prefix, name in FAMILY_LABELS if outcome.profile.startswith(prefix)), "other")
            c, t, s = out.get(family, (0, 0, 0))
            if outcome.status == "not-exercised":
                out[family] = (c, t, s + 1)
            else:
                out[family] = (c + (outcome.status == "caught"), t + 1, s)
        return {name: out[name] for _, name in FAMILY_LABELS if name in out}

    def table(self) -> str:
        lines = [f"{'kind':28} caught/tried  not exercised"]
        total_c = total_t = total_s = 0
        for kind, (c, t, s) in self.by_kind().items():
            lines.append(f"{KIND_LABELS.get(kind, kind):28} {c:4}/{t:<4}      {s}")
            total_c, total_t, total_s = total_c + c, total_t + t, total_s + s
        pct = 100.0 * total_c / total_t if total_t else 0.0
        lines.append(f"{'total':28} {total_c:4}/{total_t:<4} ({pct:.1f} %)  not exercised {total_s}")
        lines.append(f"{'by IG':28} caught/tried  not exercised")
        for family, (c, t, s) in self.by_family().items():
            lines.append(f"{family:28} {c:4}/{t:<4}      {s}")
        lines.append("not exercised, by reason:")
        for reason, count in self.reasons().most_common():
            lines.append(f"  {count:4}  {reason}")
        return "\n".join(lines)

    def reasons(self) -> Counter[str]:
        return Counter(o.detail for o in self.outcomes if o.status == "not-exercised")


Mutation = Callable[[dict[str, Any]], tuple[str, str] | None]  # -> (expected path, expected rule name)


def _drop(resource: dict[str, Any], children: list[Node]) -> None:
    # the last first, by index ("[9]" sorts after "[10]" as text)
    for child in sorted(children, key=lambda n: [int(i) for i in re.findall(r"\[(\d+)\]", n.path)], reverse=True):
        container, key = _locate(resource, child.path)
        del container[key]
        if isinstance(container, list) and not container:
            holder, holder_key = _locate(resource, re.sub(r"\[\d+\]$", "", child.path))
            del holder[holder_key]


def _synth(segment: str, checker: _Checker) -> tuple[str, Any] | None:
    """A JSON key and value that create one item of the element ``segment`` (for 0..0 rules)."""
    name, _, slice_name = segment.partition(":") if "(" not in segment else (segment, "", "")
    if name.startswith(("extension(", "modifierExtension(")):
        return None
    if name in ("extension", "modifierExtension"):
        return name, [{"url": "https://example.org/mutation", "valueString": "x"}]
    if name.endswith("[x]"):
        return name[:-3] + "String", "x"
    if slice_name:
        slice_ = next((s for p, s in checker.slices.items() if p.endswith(segment)), None)
        if slice_ is None:
            return None
        item: dict[str, Any] = {"value": "x"}
        for sub, value in slice_.match:
            if "." not in sub and sub:
                item[sub] = value
        return name, [item]
    return name, "x"


def _is_discriminator(path: str, checker: _Checker, only: bool = False) -> bool:
    """``path`` is what recognises the items of an enclosing slice (removing it unslices the item:
    FHIR semantics, nothing to report unless the slice is required, which its own rule checks)."""
    segments = split_path(path)
    for cut in range(len(segments) - 1, 0, -1):
        slice_ = checker.slices.get(".".join(segments[:cut]))
        if slice_ is None:
            continue
        rest = ".".join(segments[cut:])
        if only:  # the item would leave its slice: no other discriminator recognises it
            return all(sub == rest or sub.startswith(rest + ".") for sub, _ in slice_.match)
        return any(sub == rest or sub.startswith(rest + ".") for sub, _ in slice_.match)
    return False


def _mutations(rule: Rule, checker: _Checker) -> Iterator[Mutation]:
    """Candidate mutations of a sample (each returns the expected finding, or None when not applicable)."""
    nodes = _nodes(checker)
    if isinstance(rule, Card):
        segments = split_path(rule.path)
        parent_path = ".".join(segments[:-1])
        last = segments[-1]
        label = _element_label(last)

        def children_of(parent: Node) -> list[Node]:
            return select(parent, last, checker.lookup, prefix=parent_path)

        if rule.min > 0 and not _is_discriminator(rule.path, checker) and rule.path != "meta":

            def drop(resource: dict[str, Any]) -> tuple[str, str] | None:
                for parent in nodes(parent_path):
                    children = children_of(parent)
                    if children:
                        _drop(resource, children)
                        return f"{parent.path}.{label}", "card"
                return None

            yield drop
        if rule.max is not None:

            def repeat(resource: dict[str, Any]) -> tuple[str, str] | None:
                for parent in nodes(parent_path):
                    children = children_of(parent)
                    if not children:
                        continue
                    container, key = _locate(resource, children[0].path)
                    if not isinstance(container, list):
                        return None
                    for _ in range((rule.max or 0) + 1 - len(children)):
                        container.append(copy.deepcopy(container[key]))
                    base = children[0].path[: children[0].path.rindex("[")]
                    return f"{base}[{len(container) - 1}]", "card"
                if rule.max == 0:
                    made = _synth(last, checker)
                    parents = nodes(parent_path)
                    if made is None or not parents or not isinstance(parents[0].value, dict):
                        return None
                    container, key = _locate(resource, parents[0].path) if parent_path else (None, None)
                    target = container[key] if container is not None else resource
                    target[made[0]] = made[1]
                    suffix = "[0]" if isinstance(made[1], list) else ""
                    return f"{parents[0].path}.{made[0]}{suffix}", "card"
                return None

            yield repeat
    elif isinstance(rule, Fixed) and not _is_discriminator(rule.path, checker, only=True):

        def change(resource: dict[str, Any]) -> tuple[str, str] | None:
            found = nodes(rule.path)
            if not found:
                return None
            container, key = _locate(resource, found[0].path)
            container[key] = _other_value(container[key])
            return found[0].path, "pattern" if rule.pattern else "fixed"

        yield change
    elif isinstance(rule, Binding) and rule.valueset.available and not rule.valueset.partial:

        def recode(resource: dict[str, Any]) -> tuple[str, str] | None:
            found = nodes(rule.path)
            if not found:
                return None
            container, key = _locate(resource, found[0].path)
            value = container[key]
            if isinstance(value, str):
                container[key] = "not-a-code"
            elif isinstance(value, dict) and value.get("coding"):
                for coding in value["coding"]:
                    coding["code"] = "not-a-code"
            elif isinstance(value, dict) and "code" in value:
                value["code"] = "not-a-code"
            else:
                return None
            return found[0].path, "binding"

        yield recode
    elif isinstance(rule, RefTarget):

        def retarget(resource: dict[str, Any]) -> tuple[str, str] | None:
            found = [n for n in nodes(rule.path) if isinstance(n.value, dict) and "reference" in n.value]
            if not found:
                return None
            other = next(t for t in ("Basic", "Device", "Medication") if t not in rule.types)
            container, key = _locate(resource, found[0].path)
            container[key]["reference"] = f"{other}/mutated"
            return found[0].path + ".reference", "reference"

        yield retarget
    elif isinstance(rule, Types):

        def retype(resource: dict[str, Any]) -> tuple[str, str] | None:
            found = nodes(rule.path)
            if not found:
                return None
            container, key = _locate(resource, found[0].path)
            prefix = split_path(rule.path)[-1].removesuffix("[x]")
            other = next(t for t in ("Integer", "Boolean") if t.lower() not in {x.lower() for x in rule.types})
            container.pop(key)
            container[prefix + other] = 1 if other == "Integer" else True
            parent = found[0].path[: found[0].path.rindex(".")]
            return f"{parent}.{prefix}{other}", "type"

        yield retype


def _chain_of(sample: dict[str, Any]) -> list[Profile]:
    out: list[Profile] = []
    for url in sample.get("meta", {}).get("profile", []):
        out.extend(p for p in definitions.chain(url) if p not in out)
    return out


def run(samples: list[dict[str, Any]], generated: tuple[Profile, ...]) -> Result:
    """Mutate ``samples`` once per rule of the ``generated`` profiles (rules of the gateway overlay
    and base R4 are not counted).

    A rule whose element is present in a carrier is broken on it (``_mutations``); one whose element
    is absent everywhere but whose parent is present gets the element made up with a value breaking
    the rule (``_synthesized``: a code outside the value set, another pattern, a forbidden type,
    one extension too many). What cannot be exercised keeps the reason in ``Outcome.detail``."""
    result = Result()
    baselines = {id(s): {(i.expression, i.rule, i.message) for i in validate(s).issues} for s in samples}
    for profile in generated:
        users = [s for s in samples if profile.url in {p.url for p in _chain_of(s)}]
        for rule in profile.rules:
            kind = kind_of(rule)
            if kind == "invariant":
                continue  # invariants are exercised one by one (test_mutations.py)
            outcome = Outcome(profile.url, rule, kind, "not-exercised", _reason(rule, users))
            for sample in users:
                chain = _chain_of(sample)
                checker = _selector(sample, chain)
                for mutation in _mutations(rule, checker):
                    broken = copy.deepcopy(sample)
                    expected = mutation(broken)
                    if expected is None:
                        continue
                    new = _new_findings(broken, baselines[id(sample)])
                    path, name = expected
                    hit = any(_reported(path, name, p, r) for p, r in new)
                    outcome = Outcome(
                        profile.url, rule, kind, "caught" if hit else "missed", f"{path} {name}: {sorted(new)[:4]}"
                    )
                    break
                if outcome.status != "not-exercised":
                    break
            if outcome.status == "not-exercised":
                outcome = _try_synthesized(profile, rule, kind, users, baselines) or outcome
            result.outcomes.append(outcome)
    return result


def _new_findings(resource: dict[str, Any], baseline: set[tuple[str, str, str]]) -> set[tuple[str, str]]:
    report = validate(resource)
    # compared with the message: a slice's cardinality finding on a sliced element that already has
    # one for another slice (Task.input) is a new finding
    new = {(i.expression, i.rule, i.message) for i in report.issues if i.severity in ("error", "warning")}
    return {(p, r) for p, r, m in new if (p, r, m) not in baseline}


def _try_synthesized(
    profile: Profile, rule: Rule, kind: str, users: list[dict[str, Any]], baselines: dict[int, Any]
) -> Outcome | None:
    """Make the absent element up on the first carrier holding its parent; the candidate values are
    tried in turn until one is well-formed R4 there (no structure finding at the element)."""
    for sample in users:
        checker = _selector(sample, _chain_of(sample))
        for candidate in _synthesized(rule, checker):
            broken = copy.deepcopy(sample)
            expected = candidate(broken)
            if expected is None:
                continue
            path, name = expected
            new = _new_findings(broken, baselines[id(sample)])
            if any(r == "structure" and _at_or_under(p, path) for p, r in new):
                continue  # not this shape (a list where one value was given, another data type...)
            # the rule's own finding, at the made-up element or inside it
            hit = any(r == name and _at_or_under(p, path) for p, r in new)
            detail = f"{path} {name} (made up): {sorted(new)[:4]}"
            return Outcome(profile.url, rule, kind, "caught" if hit else "missed", detail)
    return None


def _at_or_under(found: str, path: str) -> bool:
    return found == path or found.startswith((path + ".", path + "["))


def _reason(rule: Rule, users: list[dict[str, Any]]) -> str:
    """Why a rule may not be exercised (kept when no mutation applies)."""
    if not users:
        return "no carrier: no IG example or gateway output declares the profile"
    if isinstance(rule, Binding) and (not rule.valueset.available or rule.valueset.partial):
        return "value set without (complete) code list here: a code outside it is a warning, not checked"
    path = getattr(rule, "path", "")
    if isinstance(rule, Card) and path == "meta":
        return "meta holds the declared profile (removing it takes the resource out of the profile)"
    segments = split_path(path)
    parent_path = ".".join(segments[:-1])
    parents = [n for s in users for n in _nodes(_selector(s, _chain_of(s)))(parent_path)]
    if not parents:
        return "its parent element is absent from every carrier"
    if isinstance(rule, Card) and rule.min > 0:
        return "a discriminator of its slice (removing it takes the item out of the slice)"
    if isinstance(rule, Card):
        return "absent from every carrier, and a valid item cannot be made up"
    if isinstance(rule, Fixed):
        return "a discriminator of its slice (changing it takes the item out of the slice)"
    return "absent from every carrier, and no value breaking it can be made up"


_MUTATED_SYSTEM = "https://example.org/mutated-system"


def _wrong_values(rule: Rule) -> list[Any]:
    """Values breaking ``rule`` when put in place of the absent element (the first well-formed wins)."""
    if isinstance(rule, Binding):
        coding = {"system": _MUTATED_SYSTEM, "code": "not-a-code"}
        return [{"coding": [coding]}, [{"coding": [coding]}], coding, [coding], "not-a-code", ["not-a-code"]]
    if isinstance(rule, Fixed):
        other = _other_value(rule.value)
        if other == rule.value:
            other = rule.value + 1 if isinstance(rule.value, int) and not isinstance(rule.value, bool) else None
        return [] if other is None else [other, [other]]
    return []


def _synthesized(rule: Rule, checker: _Checker) -> Iterator[Mutation]:
    """Mutations creating the absent element of ``rule`` under a present parent."""
    nodes = _nodes(checker)
    segments = split_path(getattr(rule, "path", ""))
    if not segments:
        return
    parent_path = ".".join(segments[:-1])
    last = segments[-1]
    name, _, slice_name = last.partition(":") if "(" not in last else (last, "", "")
    parents = [n for n in nodes(parent_path) if isinstance(n.value, dict)]
    if not parents or slice_name or _is_discriminator(getattr(rule, "path", ""), checker):
        return  # a discriminator: changing it takes the item out of its slice, nothing to report
    if isinstance(rule, Binding) and (not rule.valueset.available or rule.valueset.partial):
        return  # a code outside the value set is a warning ("not checked"), by design
    parent = parents[0]

    def holder(resource: dict[str, Any]) -> dict[str, Any]:
        if not parent_path:
            return resource
        container, key = _locate(resource, parent.path)
        target: dict[str, Any] = container[key]
        return target

    if isinstance(rule, Types) and name.endswith("[x]"):
        prefix = name[:-3]
        for other in ("Integer", "Boolean", "String"):
            if other.lower() in {t.lower() for t in rule.types}:
                continue
            value: Any = {"Integer": 1, "Boolean": True, "String": "x"}[other]

            def retype(resource: dict[str, Any], key: str = prefix + other, value: Any = value) -> tuple[str, str]:
                holder(resource)[key] = value
                return f"{parent.path}.{key}", "type"

            yield retype
        return
    if isinstance(rule, Card) and rule.max is not None and rule.max > 0 and name.startswith("extension("):
        url = name[len("extension(") : -1]

        def repeat(resource: dict[str, Any]) -> tuple[str, str]:
            extensions = holder(resource).setdefault("extension", [])
            first = len(extensions)
            for _ in range((rule.max or 0) + 1):
                extensions.append({"url": url, "valueString": "x"})
            return f"{parent.path}.extension[{first + (rule.max or 0)}]", "card"  # the first one too many

        yield repeat
        return
    if isinstance(rule, RefTarget) and "(" not in name and not name.endswith("[x]"):
        other = next(t for t in ("Basic", "Device", "Medication") if t not in rule.types)
        for shape in ({"reference": f"{other}/mutated"}, [{"reference": f"{other}/mutated"}]):

            def point(resource: dict[str, Any], shape: Any = shape) -> tuple[str, str]:
                holder(resource)[name] = copy.deepcopy(shape)
                return f"{parent.path}.{name}", "reference"

            yield point
        return
    if isinstance(rule, Binding | Fixed) and "(" not in name and not name.endswith("[x]"):
        for wrong in _wrong_values(rule):

            def put(resource: dict[str, Any], wrong: Any = wrong) -> tuple[str, str]:
                holder(resource)[name] = copy.deepcopy(wrong)
                path = f"{parent.path}.{name}"
                rule_name = "binding" if isinstance(rule, Binding) else ("pattern" if rule.pattern else "fixed")
                return path, rule_name

            yield put


def _reported(path: str, name: str, found: str, rule: str) -> bool:
    """The finding is the rule's (at its location or just under it), any rule at the mutated element
    itself, or a cardinality error on the sliced element when the mutation took the item out of its slice."""
    if found == path or (rule == name and (found.startswith(path + ".") or path.startswith(found + "."))):
        return True
    bare = re.sub(r"\[\d+\]", "", path)
    return rule == "card" and bare.startswith(found + ".") and found.count(".") < path.count(".")


def _selector(sample: dict[str, Any], chain: list[Profile]) -> _Checker:
    return _Checker(chain, Node(str(sample["resourceType"]), sample), None, True)


def _nodes(checker: _Checker) -> Callable[[str], list[Node]]:
    def find(path: str) -> list[Node]:
        try:
            return checker.nodes(path)
        except KeyError:
            return []

    return find


# -- random mutations (equivalence corpora: tests/profiles/test_fhirpath_compiled.py, bench/profiles_equivalence.py)
def _locations(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path in ``value`` (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*path, key))
            out.extend(_locations(child, (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append((*path, index))
            out.extend(_locations(child, (*path, index)))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


_ODD_VALUES: tuple[Any, ...] = (
    "",
    " ",
    "x" * 5000,
    "mutated",
    "2026-13-45",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
    "#missing",
    "Patient/unknown",
    0,
    -1,
    10**20,
    1.5,
    True,
    False,
    None,
    {},
    [],
    {"unknown": "x"},
    ["a", "b"],
    {"system": "https://example.org/mutated-system", "code": "mutated"},
    {"coding": [{"system": "https://example.org/mutated-system", "code": "mutated"}]},
    {"reference": "Organization/x"},
    {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
)


def random_mutation(resource: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    """A copy of ``resource`` with one random change (seeded ``rng``: reproducible), ``None`` if empty.

    Not aimed at a rule: drop, duplicate or empty an element, a wrong JSON type, an extreme or
    empty value, another code/system/type, an unknown element, a primitive extension, an
    extension without url, a contained resource... (the inputs the engine must not trip on)."""
    out = copy.deepcopy(resource)
    locations = _locations(out)
    if not locations:
        return None
    path = rng.choice(locations)
    parent = _get(out, path[:-1])
    key = path[-1]
    current = parent[key]
    action = rng.randrange(12)
    if action == 0:  # drop the element
        del parent[key]
    elif action == 1:  # duplicate a repeated item / make a single value a list
        if isinstance(parent, list):
            parent.append(copy.deepcopy(current))
        else:
            parent[key] = [current, copy.deepcopy(current)]
    elif action == 2:  # an odd value (wrong type, empty, extreme)
        parent[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
    elif action == 3 and isinstance(current, str):  # another string
        parent[key] = rng.choice(("mutated", current + "-mutated", current.upper(), current[:1], "VALI", "QUAL"))
    elif action == 4 and isinstance(current, dict):  # an unknown element
        current["unknownElement" + str(rng.randrange(3))] = "x"
    elif action == 5 and isinstance(current, dict) and "system" in current:
        current["system"] = rng.choice(("https://example.org/mutated-system", "urn:oid:1.2.250.1.213.1.4.8"))
    elif action == 6 and isinstance(current, dict) and "code" in current:
        current["code"] = rng.choice(("mutated", "VALI", "document", "entered-in-error", "resolved"))
    elif action == 7 and isinstance(parent, dict) and isinstance(key, str) and not isinstance(current, (dict, list)):
        parent["_" + key] = {"extension": [{"url": "https://example.org/ext", "valueString": "x"}]}
    elif action == 8 and isinstance(parent, list):  # remove every item but one / empty the list
        del parent[rng.randrange(len(parent)) :]
    elif action == 9 and isinstance(current, dict):  # an extension (maybe without url)
        extension: dict[str, Any] = {"valueString": "x"}
        if rng.random() < 0.8:
            extension["url"] = rng.choice(
                (
                    "https://example.org/ext",
                    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
                )
            )
        current.setdefault("extension", []).append(extension)
    elif action == 10 and isinstance(current, dict) and "type" in current and isinstance(current["type"], str):
        current["type"] = rng.choice(("document", "transaction", "batch", "history", "searchset", "collection"))
    elif action == 11 and isinstance(current, dict) and isinstance(current.get("resourceType"), str):
        current["contained"] = [{"resourceType": "Organization", "id": "c1", "meta": {"versionId": "1"}}]
    else:
        parent[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
    return out
