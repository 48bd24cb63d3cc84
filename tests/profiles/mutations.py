"""Break each generated constraint once on a valid instance and check the validator reports it.

Used by ``test_mutations.py``: for every rule of every generated profile, find a valid sample
(IG examples, the gateway's PPA bundle entries) declaring the profile or one of its descendants,
apply the one mutation that breaks only that rule (remove a required element, repeat one past its
maximum, change a fixed/pattern value, put a code outside the bound value set, point a reference to
another resource type, change a choice's type) and look for the issue at the rule's location.
"""

from __future__ import annotations

import copy
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

    def table(self) -> str:
        lines = [f"{'kind':28} caught/tried  not exercised"]
        total_c = total_t = total_s = 0
        for kind, (c, t, s) in self.by_kind().items():
            lines.append(f"{KIND_LABELS.get(kind, kind):28} {c:4}/{t:<4}      {s}")
            total_c, total_t, total_s = total_c + c, total_t + t, total_s + s
        pct = 100.0 * total_c / total_t if total_t else 0.0
        lines.append(f"{'total':28} {total_c:4}/{total_t:<4} ({pct:.1f} %)  not exercised {total_s}")
        return "\n".join(lines)


Mutation = Callable[[dict[str, Any]], tuple[str, str] | None]  # -> (expected path, expected rule name)


def _drop(resource: dict[str, Any], children: list[Node]) -> None:
    for child in sorted(children, key=lambda n: n.path, reverse=True):
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

        if rule.min > 0 and not _is_discriminator(rule.path, checker):

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
    elif isinstance(rule, Binding):

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
    and base R4 are not counted)."""
    result = Result()
    baselines = {id(s): {(i.expression, i.rule) for i in validate(s).issues} for s in samples}
    for profile in generated:
        users = [s for s in samples if profile.url in {p.url for p in _chain_of(s)}]
        for rule in profile.rules:
            kind = kind_of(rule)
            if kind == "invariant":
                continue  # invariants are exercised one by one (test_mutations.py)
            outcome = Outcome(profile.url, rule, kind, "not-exercised")
            for sample in users:
                chain = _chain_of(sample)
                for mutation in _mutations(rule, _selector(sample, chain)):
                    broken = copy.deepcopy(sample)
                    expected = mutation(broken)
                    if expected is None:
                        continue
                    report = validate(broken)
                    new = {(i.expression, i.rule) for i in report.issues if i.severity in ("error", "warning")}
                    new -= baselines[id(sample)]
                    path, name = expected
                    hit = any(_reported(path, name, p, r) for p, r in new)
                    outcome = Outcome(
                        profile.url, rule, kind, "caught" if hit else "missed", f"{path} {name}: {sorted(new)[:4]}"
                    )
                    break
                if outcome.status != "not-exercised":
                    break
            result.outcomes.append(outcome)
    return result


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
