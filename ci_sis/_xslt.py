"""Schematron model -> XSLT 3.0 stylesheet emitting compact findings.

Two code shapes, same semantics (the ISO skeleton's: for each pattern, every element of the document,
and the document node, is matched against the pattern's rules, and only the *first* rule whose context
matches fires):

* ``single_walk=True`` (default, fast): one document walk in one mode. Every rule of every pattern is a
  template with a unique priority (earlier pattern/rule = higher); a fired template evaluates its
  checks and hands over to the next matching template with ``xsl:next-match``, passing the list of
  patterns already fired on this node so later rules of the same pattern are skipped. Saxon indexes
  the templates of a mode by element name, so each node is only tested against plausible rules.
* ``single_walk=False`` (classic): one mode and one full document walk per pattern, as the skeleton
  compiles them. Kept for benchmarks and as a cross-check of the fast shape.

Output: ``<ci:r>`` holding one ``<ci:f p="pattern#" r="rule#" c="check#" l="location">message
<ci:d>diagnostic</ci:d>...</ci:f>`` per failed assert / fired report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from lxml import etree

from ._patterns import TID_KEY, key_use, selection
from ._schematron import SCH_NS, XSL_NS, Check, Let, Pattern, Schema

CI_NS = "urn:dui-gateway:ci-sis"
XS_NS = "http://www.w3.org/2001/XMLSchema"
MAP_NS = "http://www.w3.org/2005/xpath-functions/map"
_X = f"{{{XSL_NS}}}"
_C = f"{{{CI_NS}}}"
_S = f"{{{SCH_NS}}}"

# the location notation of the ANS skeleton (full-path-notation 2); for the document node the skeleton's
# element-only template is reached through the built-in rule, giving the path of the root element
_PATH_FUNCTION = """
if ($n instance of document-node()) then string-join(for $c in $n/* return ci:path($c), '') else
string-join(for $a in $n/ancestor-or-self::* return
  concat('/', name($a),
    let $k := count($a/preceding-sibling::*[name(.) = name($a)])
    return if ($k gt 0) then concat('[', $k + 1, ']') else ''),
  '') || (if ($n instance of attribute()) then concat('/@', name($n)) else '')
"""


def _el(parent: etree._Element, tag_: str, **attrs: str) -> etree._Element:
    e = etree.SubElement(parent, _X + tag_)
    for k, v in attrs.items():
        e.set(k, v)
    return e


def _message(parent: etree._Element, source: etree._Element) -> None:
    """Copy the message content of an assert/report/diagnostic as XSLT instructions."""

    def text(value: str | None) -> None:
        if value:
            _el(parent, "text").text = value

    text(source.text)
    for child in source:
        if isinstance(child.tag, str):
            local = etree.QName(child).localname
            ns = etree.QName(child).namespace
            if ns == SCH_NS and local == "value-of":
                _el(parent, "value-of", select=child.get("select", "."))
            elif ns == SCH_NS and local == "name":
                path = child.get("path")
                _el(parent, "value-of", select=f"name({path})" if path else "name(.)")
            elif ns == SCH_NS and local in ("emph", "dir", "span"):
                _message(parent, child)
            elif ns != SCH_NS:
                # foreign markup in a message: keep its text
                _message(parent, child)
        text(child.tail)


def _variable(parent: etree._Element, let: Let, *, param: bool = False) -> None:
    v = _el(parent, "param" if param else "variable", name=let.name)
    if let.value is not None:
        if let.value.strip():
            v.set("select", let.value)
    elif let.content is not None:
        for child in let.content:
            v.append(_strip_sch(child))
        v.text = let.content.text


def _strip_sch(elem: etree._Element) -> etree._Element:
    import copy

    return copy.deepcopy(elem)


def _checks(parent: etree._Element, schema: Schema, p_index: int, r_index: int, items: tuple[Let | Check, ...]) -> None:
    for c_index, item in enumerate(items):
        if isinstance(item, Let):
            _variable(parent, item)
            continue
        test = f"not({item.test})" if item.kind == "assert" else item.test
        cond = _el(parent, "if", test=test)
        f = etree.SubElement(cond, _C + "f")
        f.set("p", str(p_index))
        f.set("r", str(r_index))
        f.set("c", str(c_index))
        _el(f, "attribute", name="l", select="ci:path(.)")
        _message(f, item.element)
        for diag_id in item.diagnostics:
            diag = schema.diagnostics.get(diag_id)
            if diag is not None:
                d = etree.SubElement(f, _C + "d")
                _message(d, diag)


def _stylesheet(schema: Schema, base_uri: str) -> etree._Element:
    nsmap: dict[str | None, str] = {"xsl": XSL_NS, "xs": XS_NS, "ci": CI_NS}
    for prefix, uri in schema.namespaces.items():
        if prefix and prefix not in ("xsl", "ci"):
            nsmap[prefix] = uri
    sheet = etree.Element(_X + "stylesheet", nsmap=nsmap)
    sheet.set("version", "3.0")
    sheet.set("exclude-result-prefixes", " ".join(p for p in nsmap if p and p != "ci"))
    # value-set paths in the kit are relative to where the compiled stylesheet would sit (next to the .sch)
    sheet.set("{http://www.w3.org/XML/1998/namespace}base", base_uri)
    _el(sheet, "output", method="xml", indent="no")
    fn = _el(sheet, "function", name="ci:path", **{"as": "xs:string"})
    _el(fn, "param", name="n", **{"as": "node()"})
    _el(fn, "sequence", select=_PATH_FUNCTION.strip())
    for foreign in schema.foreign:
        import copy

        sheet.append(copy.deepcopy(foreign))
    for let in schema.params:
        _variable(sheet, let, param=let.value is not None)
    seen: set[str] = {let.name for let in schema.params}
    for let in schema.globals:
        if let.name in seen:
            continue  # the skeleton would fail on a duplicate; keep the first
        seen.add(let.name)
        _variable(sheet, let)
    return sheet


def _visit_select(schema: Schema) -> str:
    """The children a walk visits. The ANS skeleton computes its ``@*|`` prefix in a global variable
    whose context has no parent, so it never visits attributes: rules on attribute contexts never
    fire there, and must not fire here either. Text nodes are never visited; comments and PIs cannot
    match a rule context without '(' (which makes the skeleton visit elements only)."""
    del schema
    return "*"


Shape = Literal["sets", "walk", "classic"]

DOCS_PARAM = f"{{{CI_NS}}}docs"  # Clark notation, as saxonche expects
_DOCUMENT_CALL = re.compile(r"(?<![\w:.\-])document\s*\(")
_DOC_CALL = re.compile(r"(?<![\w:.\-])(?:document|doc)\s*\(")  # doc(): only when documents are supplied
_XML_LITERAL = re.compile(r"'([^']+\.xml)'|\"([^\"]+\.xml)\"")


def compile_schema(
    schema: Schema,
    *,
    shape: Shape = "sets",
    base_uri: str | None = None,
    preload_documents: bool = True,
    route_doc: bool = False,
) -> str:
    """Return the XSLT text for ``schema``.

    ``base_uri`` is the static base URI of the stylesheet, against which ``document()`` resolves
    relative value-set paths; by default the location the ISO pipeline would give the compiled
    stylesheet (next to the ``.sch``). Nothing is written there.

    With ``preload_documents``, ``document(x)`` calls go through ``ci:doc(x)``, which returns the
    document passed in the ``ci:docs`` map parameter (keyed by the literal path, see
    :func:`referenced_documents`) and falls back to ``document(x)``: value sets are then parsed once
    per process instead of once per validation."""
    base = base_uri or Path(schema.source).with_suffix(".xsl").as_uri()
    sheet = _stylesheet(schema, base)
    select = _visit_select(schema)
    if shape == "sets":
        _sets(sheet, schema, select)
    elif shape == "walk":
        _single_walk(sheet, schema, select)
    else:
        _classic(sheet, schema, select)
    if preload_documents:
        _route_documents(sheet, _DOC_CALL if route_doc else _DOCUMENT_CALL)
    return str(etree.tostring(sheet, encoding="unicode"))


def _replace_outside_strings(expr: str, pattern: re.Pattern[str], replacement: str) -> str:
    parts = re.split(r"('[^']*'|\"[^\"]*\")", expr)
    return "".join(part if part[:1] in ("'", '"') else pattern.sub(replacement, part) for part in parts)


def _route_documents(sheet: etree._Element, call: re.Pattern[str] = _DOCUMENT_CALL) -> None:
    changed = False
    for el in sheet.iter(_X + "*"):
        for attr in ("select", "test"):
            value = el.get(attr)
            if value and "doc" in value:
                new = _replace_outside_strings(value, call, "ci:doc(")
                if new != value:
                    el.set(attr, new)
                    changed = True
    if not changed:
        return
    first = sheet.find(_X + "function")
    index = sheet.index(first) if first is not None else len(sheet)
    param = etree.Element(_X + "param", name="ci:docs", select="map{}")
    param.set("as", "map(xs:string, document-node())")
    fn1 = etree.Element(_X + "function", name="ci:doc")
    fn1.set("as", "node()*")
    p1 = etree.SubElement(fn1, _X + "param", name="uri")
    p1.set("as", "item()*")
    etree.SubElement(
        fn1,
        _X + "sequence",
        select=(
            "if (count($uri) eq 1 and ($uri instance of xs:string or $uri instance of xs:untypedAtomic"
            " or $uri instance of xs:anyURI) and Q{" + MAP_NS + "}contains($ci:docs, string($uri)))"
            " then $ci:docs(string($uri)) else document($uri)"
        ),
    )
    fn2 = etree.Element(_X + "function", name="ci:doc")
    fn2.set("as", "node()*")
    for name in ("uri", "base"):
        q = etree.SubElement(fn2, _X + "param", name=name)
        q.set("as", "item()*")
    etree.SubElement(fn2, _X + "sequence", select="document($uri, $base)")
    for offset, el in enumerate((param, fn1, fn2)):
        sheet.insert(index + offset, el)


def referenced_documents(schema: Schema) -> dict[str, Path]:
    """Literal ``.xml`` paths written in the schema's lets and tests that exist relative to it."""
    found: dict[str, Path] = {}
    exprs: list[str] = [le.value or "" for le in (*schema.params, *schema.globals)]
    for pattern in schema.patterns:
        for rule in pattern.rules:
            for item in rule.items:
                exprs.append(item.value or "" if isinstance(item, Let) else item.test)
    for expr in exprs:
        for m in _XML_LITERAL.finditer(expr):
            literal = m.group(1) or m.group(2)
            if "://" in literal or literal.startswith("file:"):
                continue
            path = (schema.source.parent / literal).resolve()
            if path.is_file():
                found[literal] = path
    return found


def _sets(sheet: etree._Element, schema: Schema, select: str) -> None:
    """Each rule's nodes are selected once (``//context``, or an index lookup for templateId
    predicates); a rule fires on its nodes minus those of the earlier rules of its pattern. A pattern
    whose contexts cannot be rewritten, or whose selection raises a dynamic error (a pattern that
    errors on a node does not match it in template matching), runs as a classic template walk."""
    _el(sheet, "key", name=TID_KEY, match="*", use=key_use(schema.namespaces))
    root = _el(sheet, "template", match="/")
    out = etree.SubElement(root, _C + "r")
    for p_index, pattern in enumerate(schema.patterns):
        mode = f"M{p_index}"
        selections = [
            None if "current()" in r.context else selection(r.context, schema.namespaces) for r in pattern.rules
        ]
        if not pattern.rules:
            continue
        if any(s is None for s in selections):
            _el(out, "apply-templates", select="/", mode=mode)
        else:
            attempt = _el(out, "try")
            for r_index, (rule, sel) in enumerate(zip(pattern.rules, selections, strict=True)):
                assert sel is not None
                _el(attempt, "variable", name=f"ci:s{r_index}", select=sel)
                nodes = f"$ci:s{r_index}"
                if r_index:
                    earlier = " | ".join(f"$ci:s{k}" for k in range(r_index))
                    nodes = f"{nodes} except ({earlier})"
                loop = _el(attempt, "for-each", select=nodes)
                _checks(loop, schema, p_index, r_index, rule.items)
            catch = _el(attempt, "catch")
            _el(catch, "apply-templates", select="/", mode=mode)
        _pattern_templates(sheet, schema, p_index, pattern, mode, select)


def _single_walk(sheet: etree._Element, schema: Schema, select: str) -> None:
    root = _el(sheet, "template", match="/")
    out = etree.SubElement(root, _C + "r")
    _el(out, "apply-templates", select=".", mode="w")
    total = sum(len(p.rules) for p in schema.patterns)
    rank = total
    for p_index, pattern in enumerate(schema.patterns):
        for r_index, rule in enumerate(pattern.rules):
            t = _el(sheet, "template", match=rule.context, mode="w", priority=str(rank))
            rank -= 1
            _el(t, "param", name="ci:done", select="()", **{"as": "xs:integer*"})
            choose = _el(t, "choose")
            skip = _el(choose, "when", test=f"$ci:done = {p_index}")
            nm = _el(skip, "next-match")
            _el(nm, "with-param", name="ci:done", select="$ci:done")
            fire = _el(choose, "otherwise")
            _checks(fire, schema, p_index, r_index, rule.items)
            nm = _el(fire, "next-match")
            _el(nm, "with-param", name="ci:done", select=f"($ci:done, {p_index})")
    default = _el(sheet, "template", match="document-node()|*", mode="w", priority="-10")
    _el(default, "apply-templates", select=select, mode="w")
    _el(sheet, "template", match="@*|text()|comment()|processing-instruction()", mode="w", priority="-10")


def _classic(sheet: etree._Element, schema: Schema, select: str) -> None:
    root = _el(sheet, "template", match="/")
    out = etree.SubElement(root, _C + "r")
    for p_index, pattern in enumerate(schema.patterns):
        mode = f"M{p_index}"
        _el(out, "apply-templates", select="/", mode=mode)
        _pattern_templates(sheet, schema, p_index, pattern, mode, select)


def _pattern_templates(
    sheet: etree._Element, schema: Schema, p_index: int, pattern: Pattern, mode: str, select: str
) -> None:
    n = len(pattern.rules)
    for r_index, rule in enumerate(pattern.rules):
        t = _el(sheet, "template", match=rule.context, mode=mode, priority=str(1000 + n - r_index))
        _checks(t, schema, p_index, r_index, rule.items)
        _el(t, "apply-templates", select=select, mode=mode)
    _el(sheet, "template", match="text()", mode=mode, priority="-1")
    default = _el(sheet, "template", match="@*|node()", mode=mode, priority="-2")
    _el(default, "apply-templates", select=select, mode=mode)
