"""Turning an XSLT match pattern (a rule context) into an equivalent node selection.

A node N matches a pattern P exactly when N is in ``root(N)//(P)`` (XSLT 2.0 §5.5.3), so the nodes a
rule could fire on are ``//P`` evaluated once from the document node, instead of testing P against
every node. We only do this for patterns made of plain location steps (names, ``*``, predicates,
``/`` and ``//``, unions of those); anything else (functions, variables, explicit axes, attributes)
is left to template matching.

CDA rules mostly look like ``*[cda:templateId/@root='X']/...`` which, as ``//*[...]``, tests every
element of the document. When the predicate of the first step requires a templateId root (a
conjunct ``cda:templateId/@root='X'`` or ``cda:templateId[@root='X']``, or a disjunction of such),
the first step is rewritten as ``key('ci:tid', ('X', ...))`` (the elements having such a templateId
child, indexed once per document) followed by the original predicates: the set selected is the same,
found by a hash lookup instead of a scan.
"""

from __future__ import annotations

import re

HL7_NS = "urn:hl7-org:v3"
TID_KEY = "ci:tid"

_NAME = r"(?:\*|[A-Za-z_][\w.\-]*(?::(?:[A-Za-z_][\w.\-]*|\*))?)"
_SIMPLE_PATH = re.compile(rf"^/{{0,2}}{_NAME}(?:/{{1,2}}{_NAME})*$")
_FIRST_STEP = re.compile(rf"^({_NAME})((?:\[.*\])?)$", re.DOTALL)


def split_top(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` (a regex) where it is outside strings, brackets and parentheses."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    sep = re.compile(separator)
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif depth == 0:
            m = sep.match(text, i)
            if m and m.end() > i:
                parts.append(text[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(text[start:])
    return parts


def _top_level(text: str) -> str:
    """``text`` with string literals emptied and bracketed/parenthesised parts removed."""
    out: list[str] = []
    depth = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _predicates(text: str) -> list[str] | None:
    """Split ``[a][b]`` into ``['a', 'b']``; None when ``text`` is not a predicate list."""
    preds: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "[":
            return None
        depth = 0
        quote = ""
        j = i
        while j < len(text):
            ch = text[j]
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= len(text):
            return None
        preds.append(text[i + 1 : j])
        i = j + 1
    return preds


def _tid_regexes(prefixes: list[str]) -> list[re.Pattern[str]]:
    alt = "|".join(re.escape(p) for p in prefixes)
    lit = r"(?:'([^']*)'|\"([^\"]*)\")"
    return [
        re.compile(rf"^\(?\s*(?:{alt}):templateId/@root\s*=\s*{lit}\s*\)?$"),
        re.compile(rf"^\(?\s*(?:{alt}):templateId\[\s*@root\s*=\s*{lit}\s*\]\s*\)?$"),
    ]


def _required_roots(predicate: str, regexes: list[re.Pattern[str]]) -> list[str] | None:
    roots: list[str] = []
    for disjunct in split_top(predicate.strip(), r"\s+or\s+"):
        found = None
        for conjunct in split_top(disjunct.strip(), r"\s+and\s+"):
            for rx in regexes:
                m = rx.match(conjunct.strip())
                if m:
                    found = m.group(1) if m.group(1) is not None else m.group(2)
                    break
            if found is not None:
                break
        if found is None:
            return None
        roots.append(found)
    return roots


def _positional(predicate: str) -> bool:
    """Could this predicate select by position (so that it depends on the axis it is applied to)?"""
    text = _top_level_strings_removed(predicate)
    if "position()" in text or "last()" in text:
        return True
    top = _top_level(predicate).strip()
    if re.search(r"[=<>]|\bor\b|\band\b|!=", top):
        return False
    if re.match(r"^(not|contains|starts-with|ends-with|exists|empty|boolean|matches)\s*\(", predicate.strip()):
        return False
    # a bare path (child or attribute existence) is a boolean test; anything else may be numeric
    bare = _outside_predicates(predicate).strip()
    return not re.fullmatch(r"[@\w.:*/\-]+", bare) or bool(re.fullmatch(r"[\d.\s]+", bare))


def _outside_predicates(text: str) -> str:
    """``text`` without string literals and bracketed predicates (parentheses are kept)."""
    out: list[str] = []
    depth = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _top_level_strings_removed(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)


def selection(context: str, namespaces: dict[str, str]) -> str | None:
    """An expression selecting, from the document node, exactly the elements (or the document node)
    that match ``context``; None when the pattern is not simple enough to rewrite safely."""
    alternatives = split_top(context.strip(), r"\|")
    hl7_prefixes = [p for p, uri in namespaces.items() if uri == HL7_NS and p]
    regexes = _tid_regexes(hl7_prefixes) if hl7_prefixes else []
    selections: list[str] = []
    for alt in alternatives:
        alt = alt.strip()
        if alt == "/":
            selections.append("/")
            continue
        top = _outside_predicates(alt)
        if not _SIMPLE_PATH.match(top):
            return None
        if top.startswith("/") and not top.startswith("//"):
            selections.append(alt)
            continue
        rel = alt[2:] if alt.startswith("//") else alt
        steps = split_top(rel, r"/")
        first = steps[0]
        m = _FIRST_STEP.match(first)
        if m is None:
            return None
        name, preds_text = m.group(1), m.group(2)
        preds = _predicates(preds_text) if preds_text else []
        if preds is None:
            return None
        rest = "/".join(steps[1:])
        rest = "/" + rest if len(steps) > 1 else ""
        roots = _required_roots(preds[0], regexes) if preds and regexes else None
        if roots and not any(_positional(p) for p in preds):
            literal = ", ".join("'" + r + "'" for r in roots if "'" not in r)
            if len(literal.split(", ")) == len(roots):
                self_test = "" if name == "*" else f"[self::{name}]"
                selections.append(f"key('{TID_KEY}', ({literal})){self_test}{preds_text}{rest}")
                continue
        selections.append("//" + rel)
    if not selections:
        return None
    return selections[0] if len(selections) == 1 else "(" + " | ".join(selections) + ")"


def key_use(namespaces: dict[str, str]) -> str:
    """The ``use`` expression of the templateId key (independent of the schema's prefixes)."""
    return f"Q{{{HL7_NS}}}templateId/@root"
