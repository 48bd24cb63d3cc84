"""ISO Schematron front end: include resolution, abstract pattern expansion, phases, and a typed model.

The semantics follow what the ANS pipeline does with the ISO skeleton (``iso_dsdl_include`` then
``iso_abstract_expand`` then ``iso_svrl_for_xslt2``), because our verdicts must equal its verdicts:

* ``<include href="...">`` is replaced by the root element of the referenced document (or the element
  with the fragment id), resolved against the including file, recursively.
* ``<pattern is-a="X">`` becomes a copy of every pattern whose id is ``X`` with the caller's id; its
  ``<param>`` values replace ``$name`` by plain substring substitution, in parameter order, in the
  ``test``, ``context`` and ``select`` attributes and in text nodes (not in ``let/@value``).
* The active phase is the ``defaultPhase`` or ``#ALL``; only active patterns (and their lets) are kept.
* Schema-level lets become global parameters, pattern-level lets global variables, rule-level lets
  local variables; lets inside any phase become global variables.
* ``<extends rule="id"/>`` inlines the content of the abstract rule (a rule of the same pattern first,
  otherwise any rule with that id).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ._engine import ValidationRunError

SCH_NS = "http://purl.oclc.org/dsdl/schematron"
XSL_NS = "http://www.w3.org/1999/XSL/Transform"
_S = f"{{{SCH_NS}}}"


class SchematronError(ValidationRunError):
    """The schematron cannot be read or compiled (so nothing can be validated with it)."""


@dataclass(frozen=True)
class Let:
    name: str
    value: str | None  # XPath; None when the let has element content
    content: etree._Element | None = None  # the let element itself when it has content


@dataclass(frozen=True)
class Check:
    """An ``assert`` (fires when the test is false) or a ``report`` (fires when it is true)."""

    kind: str  # "assert" | "report"
    test: str
    element: etree._Element  # for the message content (text, value-of, name, emph, ...)
    id: str = ""
    role: str = ""
    flag: str = ""
    diagnostics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    context: str
    items: tuple[Let | Check, ...]  # in document order (lets may follow asserts)
    id: str = ""
    role: str = ""
    flag: str = ""


@dataclass(frozen=True)
class Pattern:
    id: str
    lets: tuple[Let, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Schema:
    source: Path
    title: str
    query_binding: str
    namespaces: dict[str, str]
    params: tuple[Let, ...]  # schema-level lets (global parameters)
    globals: tuple[Let, ...]  # pattern-level and phase-level lets of active patterns (global variables)
    patterns: tuple[Pattern, ...]  # active patterns only, in document order
    phase: str
    diagnostics: dict[str, etree._Element] = field(default_factory=dict)
    foreign: tuple[etree._Element, ...] = ()  # xsl:key / xsl:function declared at schema level
    files: tuple[Path, ...] = ()  # every file read (for cache keys)


def _parse_file(path: Path) -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=True)
    try:
        return etree.parse(str(path), parser)
    except (OSError, etree.XMLSyntaxError) as exc:
        raise SchematronError(f"cannot read schematron file {path}: {exc}") from exc


def _load_fragment(href: str, base: Path, files: list[Path], depth: int) -> tuple[etree._Element, Path]:
    """The element an include points to (a copy), following an included include."""
    if depth > 50:
        raise SchematronError(f"include nesting too deep under {base}")
    target_ref, _, fragment = href.partition("#")
    target = (base.parent / target_ref).resolve() if target_ref else base
    files.append(target)
    root = _parse_file(target).getroot()
    if fragment:
        found = root.xpath("//*[@id=$i or @xml:id=$i]", i=fragment)
        if not found:
            raise SchematronError(f"include {href!r} in {base}: no element with id {fragment!r}")
        root = found[0]
    if root.tag == _S + "include":
        return _load_fragment(root.get("href", ""), target, files, depth + 1)
    return copy.deepcopy(root), target


def _resolve_includes(elem: etree._Element, base: Path, files: list[Path], depth: int = 0) -> None:
    """Replace every sch:include below ``elem`` (in place) by the referenced element, recursively."""
    if depth > 50:
        raise SchematronError(f"include nesting too deep under {base}")
    for inc in list(elem.iter(_S + "include")):
        if inc is elem:
            continue
        new, target = _load_fragment(inc.get("href", ""), base, files, depth + 1)
        _resolve_includes(new, target, files, depth + 1)
        new.tail = inc.tail
        parent = inc.getparent()
        if parent is not None:
            parent.replace(inc, new)
    # ISO 2016: <extends href="..."/> includes the children of the referenced schema
    for ext in list(elem.iter(_S + "extends")):
        href = ext.get("href")
        if not href:
            continue
        target = (base.parent / href).resolve()
        files.append(target)
        root = copy.deepcopy(_parse_file(target).getroot())
        _resolve_includes(root, target, files, depth + 1)
        parent = ext.getparent()
        if parent is None:
            continue
        index = parent.index(ext)
        parent.remove(ext)
        for offset, child in enumerate(list(root)):
            parent.insert(index + offset, child)


def _substitute(text: str, params: list[tuple[str, str]]) -> str:
    for name, value in params:
        text = text.replace("$" + name, value)
    return text


def _expand_copy(elem: etree._Element, params: list[tuple[str, str]]) -> etree._Element:
    new = etree.Element(elem.tag, nsmap=elem.nsmap)
    for key, value in elem.attrib.items():
        if key in ("test", "context", "select"):
            new.set(key, _substitute(value, params))
        else:
            new.set(key, value)
    new.text = _substitute(elem.text, params) if elem.text else elem.text
    for child in elem:
        if isinstance(child.tag, str):
            sub = _expand_copy(child, params)
            sub.tail = _substitute(child.tail, params) if child.tail else child.tail
            new.append(sub)
        elif child.tail:
            # a comment or PI is dropped; its tail text is kept
            if len(new):
                new[-1].tail = (new[-1].tail or "") + _substitute(child.tail, params)
            else:
                new.text = (new.text or "") + _substitute(child.tail, params)
    return new


def _expand_abstract(root: etree._Element) -> None:
    patterns = list(root.iter(_S + "pattern"))
    by_id: dict[str, list[etree._Element]] = {}
    for p in patterns:
        by_id.setdefault(p.get("id", ""), []).append(p)
    for p in patterns:
        parent = p.getparent()
        if parent is None:
            continue
        if p.get("abstract") == "true":
            if p.get("is-a") is None:
                parent.remove(p)
            continue
        is_a = p.get("is-a")
        if is_a is None:
            continue
        caller = p.get("id", "")
        params: list[tuple[str, str]] = []
        if caller:
            for same in by_id.get(caller, []):
                params.extend((q.get("name", ""), q.get("value", "")) for q in same.findall(_S + "param"))
        index = parent.index(p)
        parent.remove(p)
        for offset, abstract in enumerate(by_id.get(is_a, [])):
            real = etree.Element(_S + "pattern", nsmap=abstract.nsmap)
            real.set("id", caller or f"{is_a}-{index}-{offset}")
            for child in abstract:
                if isinstance(child.tag, str):
                    real.append(_expand_copy(child, params))
            parent.insert(index + offset, real)
    # abstract patterns still referenced above were used; now drop them all
    for p in list(root.iter(_S + "pattern")):
        if p.get("abstract") == "true" and p.getparent() is not None:
            p.getparent().remove(p)


def _let(elem: etree._Element) -> Let:
    value = elem.get("value")
    return Let(name=elem.get("name", ""), value=value, content=None if value is not None else elem)


def _check(elem: etree._Element) -> Check:
    kind = etree.QName(elem).localname
    return Check(
        kind=kind,
        test=elem.get("test", ""),
        element=elem,
        id=elem.get("id", ""),
        role=elem.get("role", ""),
        flag=elem.get("flag", ""),
        diagnostics=tuple((elem.get("diagnostics") or "").split()),
    )


def _rule_items(
    rule: etree._Element, pattern: etree._Element, root: etree._Element, depth: int = 0
) -> list[Let | Check]:
    if depth > 20:
        raise SchematronError("extends nesting too deep")
    items: list[Let | Check] = []
    for child in rule:
        if not isinstance(child.tag, str):
            continue
        tag = child.tag
        if tag == _S + "let":
            items.append(_let(child))
        elif tag in (_S + "assert", _S + "report"):
            items.append(_check(child))
        elif tag == _S + "extends" and child.get("rule"):
            rid = child.get("rule")
            local = [r for r in pattern.findall(_S + "rule") if r.get("id") == rid]
            target = local or [r for r in root.iter(_S + "rule") if r.get("id") == rid]
            for abstract in target[:1]:
                items.extend(_rule_items(abstract, pattern, root, depth + 1))
    return items


def load_schema(path: Path, phase: str | None = None) -> Schema:
    """Read a schematron file and return its compiled model for ``phase`` (default: defaultPhase or #ALL)."""
    path = path.resolve()
    files: list[Path] = [path]
    tree = _parse_file(path)
    root = tree.getroot()
    if root.tag != _S + "schema":
        raise SchematronError(f"{path} is not an ISO schematron schema (root {root.tag})")
    _resolve_includes(root, path, files)
    _expand_abstract(root)

    active_phase = phase or root.get("defaultPhase") or "#ALL"
    if active_phase != "#ALL":
        phases = [ph for ph in root.findall(_S + "phase") if ph.get("id") == active_phase]
        if not phases:
            raise SchematronError(f"{path}: unknown phase {active_phase!r}")
        active_ids = {a.get("pattern") for ph in phases for a in ph.findall(_S + "active")}
    namespaces: dict[str, str] = {}
    for ns in root.findall(_S + "ns"):
        namespaces[ns.get("prefix", "")] = ns.get("uri", "")

    params = tuple(_let(le) for le in root.findall(_S + "let"))
    globals_: list[Let] = [_let(le) for ph in root.findall(_S + "phase") for le in ph.findall(_S + "let")]
    patterns: list[Pattern] = []
    for p in root.findall(_S + "pattern"):
        if active_phase != "#ALL" and p.get("id") not in active_ids:
            continue
        pattern_lets = tuple(_let(le) for le in p.findall(_S + "let"))
        globals_.extend(pattern_lets)
        rules: list[Rule] = []
        for r in p.findall(_S + "rule"):
            if r.get("abstract") == "true":
                continue
            rules.append(
                Rule(
                    context=r.get("context", ""),
                    items=tuple(_rule_items(r, p, root)),
                    id=r.get("id", ""),
                    role=r.get("role", ""),
                    flag=r.get("flag", ""),
                )
            )
        patterns.append(Pattern(id=p.get("id", ""), lets=pattern_lets, rules=tuple(rules)))

    diagnostics = {d.get("id", ""): d for ds in root.findall(_S + "diagnostics") for d in ds.findall(_S + "diagnostic")}
    foreign = tuple(
        e for e in root if isinstance(e.tag, str) and e.tag in (f"{{{XSL_NS}}}key", f"{{{XSL_NS}}}function")
    )
    title_el = root.find(_S + "title")
    title = "".join(title_el.itertext()).strip() if title_el is not None else root.get("id", "")
    return Schema(
        source=path,
        title=title,
        query_binding=root.get("queryBinding", "xslt"),
        namespaces=namespaces,
        params=params,
        globals=tuple(globals_),
        patterns=tuple(patterns),
        phase=active_phase,
        diagnostics=diagnostics,
        foreign=foreign,
        files=tuple(dict.fromkeys(files)),
    )
