"""``validate`` and ``check_rendition``: base R4 structure, base invariants, declared profiles."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from profiles import definitions
from profiles._paths import Node
from profiles._report import Issue, Report, Severity
from profiles._rules import Resolver, check_profile
from profiles._structure import check_structure

__all__ = ["RENDITION_TAGS", "check_rendition", "parse", "validate"]

#: conformance tags a Rendition may declare -> (profile family, default profile of a Bundle root)
RENDITION_TAGS: dict[str, tuple[str | None, str | None]] = {
    "fhir:r4": (None, None),
    "fhir:tddui": ("tddui", definitions.tddui.TDDUI_BUNDLE.url),
    "fhir:pdsm": ("pdsm", definitions.pdsm.PDSM_PROVIDE_BUNDLE.url),
}


def parse(resource: Mapping[str, Any] | bytes | str) -> tuple[dict[str, Any] | None, Report]:
    """JSON bytes/text or a dict -> the resource, or ``None`` and a report with the fatal issue."""
    report = Report()
    if isinstance(resource, Mapping):
        return dict(resource), report
    try:
        data = json.loads(resource)
    except (ValueError, UnicodeDecodeError) as exc:
        report.add(Issue("fatal", "structure", "", f"not valid JSON: {exc}", rule="json"))
        return None, report
    except RecursionError:
        return None, _too_deep()
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        report.add(Issue("fatal", "structure", "", "not a FHIR resource: a JSON object with resourceType is expected"))
        return None, report
    return data, report


def _too_deep() -> Report:
    """The report on JSON nested deeper than Python's recursion limit lets the parser and the
    checks go (about a thousand levels; the gateway's HTTP bodies stop at 64): not checked."""
    report = Report()
    report.add(Issue("fatal", "structure", "", "nested too deeply to be checked", rule="json"))
    return report


class _Run:
    """One validation: the report, the Bundle's fullUrl index and the tag's profile family."""

    def __init__(self, resource: dict[str, Any], family: str | None) -> None:
        self.report = Report()
        self.family = family
        self.lenient = False  # set once base structure errors are known: see check_profile
        self.full_urls: dict[str, str] = {}
        self.local_ids: set[str] = set()
        if resource.get("resourceType") == "Bundle":
            for entry in _items(resource.get("entry")):
                if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
                    continue
                res = entry["resource"]
                rtype = res.get("resourceType")
                if isinstance(entry.get("fullUrl"), str) and isinstance(rtype, str):
                    self.full_urls[entry["fullUrl"]] = rtype
                if isinstance(rtype, str) and isinstance(res.get("id"), str):
                    self.local_ids.add(f"{rtype}/{res['id']}")

    def resolver(self, resource: Mapping[str, Any]) -> Resolver:
        contained = {
            "#" + str(c.get("id")): str(c.get("resourceType"))
            for c in _items(resource.get("contained"))
            if isinstance(c, Mapping) and c.get("id")
        }

        def resolve(reference: str) -> str | None:
            if reference in contained:
                return contained[reference]
            return self.full_urls.get(reference)

        return resolve

    def check(self, resource: dict[str, Any], path: str, profiles: list[str], strict_family: bool) -> None:
        rtype = str(resource.get("resourceType"))
        root = Node(path, resource)
        resolve = self.resolver(resource)
        for issue in check_profile([definitions.base_profile(rtype)], root, resolve, lenient=self.lenient):
            self.report.add(issue)
        if definitions.base_url(rtype) not in self.report.profiles:
            self.report.profiles.append(definitions.base_url(rtype))
        for url in profiles:
            self.check_profile(resource, root, url, resolve, strict_family)
        for index, contained in enumerate(_items(resource.get("contained"))):
            if isinstance(contained, dict) and isinstance(contained.get("resourceType"), str):
                self.check(contained, f"{path}.contained[{index}]", _declared(contained), False)

    def check_profile(self, resource: dict[str, Any], root: Node, url: str, resolve: Resolver, strict: bool) -> None:
        rtype = resource.get("resourceType")
        chain = definitions.chain(url)
        if not chain:
            in_family = self.family is not None and definitions.family(url) == self.family
            severity: Severity = "warning" if (strict and in_family) else "information"
            self.report.add(
                Issue(
                    severity,
                    "not-supported",
                    root.path,
                    f"{root.path}: profile {url} is not declared in the gateway: only base R4 rules were checked",
                    url,
                    "profile",
                )
            )
            return
        if chain[0].type != rtype:
            self.report.add(
                Issue(
                    "error",
                    "structure",
                    root.path,
                    f"{root.path}: profile {url} constrains {chain[0].type}, not {rtype}",
                    url,
                    "profile",
                )
            )
            return
        for issue in check_profile(chain, root, resolve, lenient=self.lenient):
            self.report.add(issue)
        for profile in chain:
            if profile.url not in self.report.profiles:
                self.report.profiles.append(profile.url)

    def check_bundle_entries(self, bundle: dict[str, Any], strict_family: bool) -> None:
        for index, entry in enumerate(_items(bundle.get("entry"))):
            if not isinstance(entry, Mapping):
                continue
            resource = entry.get("resource")
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                continue
            path = f"Bundle.entry[{index}].resource"
            declared = _declared(resource)
            if strict_family and self.family and resource.get("resourceType") != "Binary":
                if not any(definitions.family(url) == self.family for url in declared):
                    self.report.add(
                        Issue(
                            "error",
                            "required",
                            f"{path}.meta.profile",
                            f"{path}: declares no {self.family} profile in meta.profile",
                            rule="profile",
                        )
                    )
            self.check(resource, path, declared, strict_family)
            if resource.get("resourceType") == "Bundle":
                self.check_bundle_entries(resource, strict_family)
        self.check_references(bundle)

    def check_references(self, bundle: dict[str, Any]) -> None:
        """``urn:uuid:``/``urn:oid:`` references must resolve to an entry's fullUrl; in a document,
        relative references must resolve to an entry too (R4 document bundle rules)."""
        document = bundle.get("type") == "document"
        for node in _references(Node("Bundle", bundle)):
            reference = node.value
            if reference.startswith("#"):
                continue
            if reference.startswith("urn:"):
                if reference not in self.full_urls:
                    self.report.add(
                        Issue(
                            "error",
                            "not-found",
                            node.path,
                            f"{node.path}: {reference} matches no entry fullUrl",
                            rule="reference",
                        )
                    )
            elif document and "?" not in reference and not reference.startswith("http"):
                if reference not in self.local_ids and not any(u.endswith("/" + reference) for u in self.full_urls):
                    self.report.add(
                        Issue(
                            "error",
                            "not-found",
                            node.path,
                            f"{node.path}: {reference} is not in the document",
                            rule="reference",
                        )
                    )


def _items(value: Any) -> list[Any]:
    """The items of a repeating element; nothing when the JSON holds another type there (a
    structure error reported by ``check_structure``: the profile checks do not iterate it)."""
    return value if isinstance(value, list) else []


def _declared(resource: Mapping[str, Any]) -> list[str]:
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, Mapping) else None
    # a string, an object, a number or a boolean there declares nothing: the structure error
    # ("Input should be a valid list") says why (a string's characters were once read as URLs,
    # one "not declared" note each)
    return [p for p in _items(profiles) if isinstance(p, str)]


def _references(node: Node) -> list[Node]:
    """Every ``reference`` string in the tree (Reference.reference), with its location."""
    out: list[Node] = []
    _collect_references(node.value, node.path, out)
    return out


def _collect_references(value: Any, path: str, out: list[Node]) -> None:
    """``_references`` without a node per visited object: a location string only for containers."""
    if not (isinstance(value, dict) or isinstance(value, Mapping)):
        return
    for key, child in value.items():
        if key == "reference" and isinstance(child, str):
            out.append(Node(f"{path}.reference", child))
        elif isinstance(child, list):
            for index, item in enumerate(child):
                if isinstance(item, dict) or isinstance(item, Mapping):
                    _collect_references(item, f"{path}.{key}[{index}]", out)
        elif isinstance(child, dict) or isinstance(child, Mapping):
            _collect_references(child, f"{path}.{key}", out)


def _run(resource: dict[str, Any], profile: str | None, family: str | None, strict_family: bool) -> Report:
    try:
        return _checked(resource, profile, family, strict_family)
    except RecursionError:  # a dict nested deeper than the recursive checks go
        return _too_deep()


def _checked(resource: dict[str, Any], profile: str | None, family: str | None, strict_family: bool) -> Report:
    run = _Run(resource, family)
    for issue in check_structure(resource):
        run.report.add(issue)
    if any(i.severity == "fatal" for i in run.report.issues):
        return run.report
    run.lenient = not run.report.ok
    rtype = str(resource["resourceType"])
    profiles = [profile] if profile else _declared(resource)
    run.check(resource, rtype, profiles, strict_family)
    if rtype == "Bundle":
        run.check_bundle_entries(resource, strict_family)
    return run.report


def validate(resource: Mapping[str, Any] | bytes | str, profile: str | None = None) -> Report:
    """Validate a FHIR R4 resource (dict or JSON) against base R4 and its profiles.

    ``profile`` (a canonical URL) replaces the root's ``meta.profile``; otherwise the declared
    profiles are used. Bundle entries and contained resources are checked against their own
    declared profiles. Profiles the gateway does not declare are reported as ``information``.
    """
    data, report = parse(resource)
    if data is None:
        return report
    return _run(data, profile, None, False)


def check_rendition(content: bytes, tag: str) -> Report:
    """The conformance gate for a FHIR rendition declaring ``tag`` ("fhir:r4", "fhir:tddui", "fhir:pdsm")."""
    data, report = parse(content)
    if data is None:
        return report
    if tag not in RENDITION_TAGS:
        report.add(Issue("fatal", "not-supported", "", f"unknown FHIR conformance tag {tag!r}", rule="tag"))
        return report
    family, bundle_profile = RENDITION_TAGS[tag]
    if family is None:
        return _run(data, None, None, False)
    declared = _declared(data)
    profile: str | None = None
    if data.get("resourceType") == "Bundle" and bundle_profile and not declared:
        profile = bundle_profile
    result = _run(data, profile, family, True)
    if data.get("resourceType") != "Bundle" or declared:
        if not any(definitions.family(url) == family for url in ([profile] if profile else declared)):
            result.add(
                Issue(
                    "error",
                    "required",
                    f"{data['resourceType']}.meta.profile",
                    f"declares no {family} profile",
                    rule="profile",
                )
            )
    return result
