"""The CI-SIS validator: XSD (lxml) then the volet's schematrons (our compiler + saxonche)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from ._engine import ENGINE, ValidationRunError
from ._kit import Kit, KitNotFound, UnknownVolet
from ._report import Finding, Report, Severity, severity_of
from ._schematron import Check, Schema, load_schema
from ._supplied import supplied_documents
from ._xslt import CI_NS, DOCS_PARAM, Shape, compile_schema, referenced_documents

DOCS_PARAM_NAME = 'name="ci:docs"'
# Saxon's parser refuses elements deeper than this (jdk.xml.maxElementDepth = 100): deeper CDA
# documents get a finding instead of an engine failure. Real CDA documents stay far below.
MAX_DEPTH = 100

__all__ = [
    "CompiledSchematron",
    "KitNotFound",
    "UnknownVolet",
    "ValidationRunError",
    "Validator",
    "compile_schematron",
    "load_validator",
]

_F = f"{{{CI_NS}}}f"
_D = f"{{{CI_NS}}}d"


def _squash(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class CompiledSchematron:
    """One schematron compiled to an XSLT executable, with what is needed to decode its output."""

    path: Path
    rel: str  # path relative to the kit
    schema: Schema
    executable: Any
    xslt: str

    def run(self, xml: bytes) -> list[Finding]:
        """Evaluate this schematron alone on a document (raises ValidationRunError if it cannot run)."""
        return self.findings(ENGINE.run(self.executable, Validator.saxon_document(xml)))

    def findings(self, output: str) -> list[Finding]:
        root = etree.fromstring(output.encode("utf-8"))
        result: list[Finding] = []
        for f in root.iter(_F):
            pattern = self.schema.patterns[int(f.get("p", "0"))]
            rule = pattern.rules[int(f.get("r", "0"))]
            check = rule.items[int(f.get("c", "0"))]
            assert isinstance(check, Check)
            message = _squash((f.text or "") + "".join((c.tail or "") for c in f))
            diagnostics = tuple(_squash("".join(d.itertext())) for d in f.iter(_D))
            result.append(
                Finding(
                    stage="schematron",
                    message=message,
                    severity=severity_of(check.role or rule.role, check.flag or rule.flag),
                    schema=self.rel,
                    pattern=pattern.id,
                    rule_context=rule.context,
                    kind="assert" if check.kind == "assert" else "report",
                    assert_id=check.id,
                    test=_squash(check.test),
                    location=f.get("l", ""),
                    diagnostics=diagnostics,
                )
            )
        return result


class Validator:
    """Validates CDA documents against a CI-SIS kit. Thread-safe: Saxon work is serialised.

    Compiled schematrons are cached in the instance (one instance per kit per process, see
    :func:`load_validator`), each compiled once, by the first thread that needs it."""

    def __init__(self, kit: Kit, *, shape: Shape = "sets") -> None:
        self.kit = kit
        self.shape: Shape = shape
        self._lock = threading.Lock()
        self._compiled: dict[Path, CompiledSchematron] = {}
        self._compiling: dict[Path, threading.Lock] = {}  # one per schematron: it is compiled once
        self._xsd: etree.XMLSchema | None = None

    # -- kit -------------------------------------------------------------------------------
    def volets(self) -> list[str]:
        return self.kit.volets()

    def xml_schema(self) -> etree.XMLSchema:
        with self._lock:
            if self._xsd is None:
                parser = etree.XMLParser(no_network=True, resolve_entities=False)
                self._xsd = etree.XMLSchema(etree.parse(str(self.kit.xsd), parser))
            return self._xsd

    def compiled(self, sch: Path) -> CompiledSchematron:
        sch = sch.resolve()
        return self._once(sch, lambda: compile_schematron(sch, shape=self.shape, label=self.kit.relative(sch)))

    def _once(self, key: Path, compile_: Callable[[], CompiledSchematron]) -> CompiledSchematron:
        """The cached executable for ``key``, compiled by one thread only.

        Threads asking for a schematron that is being compiled wait for it instead of compiling
        their own copy: each copy costs up to ≈ 100 MB of Saxon heap (which the engine keeps once
        grown), so a pool of 4 threads starting on the same volet used to lift a worker's peak
        (VmHWM) from ≈ 270 to ≈ 480 MB, and its resident set with it."""
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                return found
            gate = self._compiling.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                found = self._compiled.get(key)
            if found is not None:
                return found  # compiled by the thread we waited for
            compiled = compile_()  # raises: nothing cached, the next caller tries again
            with self._lock:
                self._compiled[key] = compiled
            return compiled

    def prepare(self, volet: str) -> None:
        """Compile ahead of time everything ``volet`` needs (otherwise done on first use)."""
        self.xml_schema()
        for sch in self.kit.schematrons(volet):
            self.compiled(sch)

    # -- validation ------------------------------------------------------------------------
    def compiled_optional(self, sch: Path) -> CompiledSchematron:
        """An optional profile schematron, compiled as a classic template walk (structurationMinimale's
        766 rules make the set-based stylesheet too large to compile), with the documents the kit
        lacks supplied from its own ``jeuxDeValeurs``."""
        sch = sch.resolve()

        def compile_() -> CompiledSchematron:
            documents = supplied_documents(sch, self.kit.root)
            return compile_schematron(sch, shape="classic", label=self.kit.relative(sch), documents=documents)

        return self._once(sch.with_suffix(".optional"), compile_)

    def validate(self, xml: bytes, volet: str, *, optional: OptionalMode = "off") -> Report:
        """XSD, then the volet schematron and the two transverse profile schematrons.

        ``optional`` also runs the profiles the ANS pipeline leaves optional
        (``profils/structurationMinimale``, ``profils/terminologies``): ``"warning"`` reports their
        failed asserts as warnings (documents from elsewhere), ``"error"`` keeps their severity (the
        gateway's own documents: it never emits a code outside its value set). ``"off"`` (default)
        is the ANS pipeline's verdict, unchanged.

        Content problems are findings: not well-formed, a DOCTYPE, XSD errors, failed asserts and fired
        reports. Anything that stops the run itself (a dynamic error while a schematron runs, Saxon
        failing, a kit file that cannot be read or compiled) raises :class:`ValidationRunError`: the
        document has no verdict, it is neither conformant nor not."""
        schematrons = self.kit.schematrons(volet)
        rels = tuple(self.kit.relative(p) for p in schematrons)
        try:
            tree = _parse(xml)
        except etree.XMLSyntaxError as exc:
            line = exc.lineno if isinstance(exc.lineno, int) else None
            message = f"not well-formed XML: {exc.msg}"
            if "Excessive depth" in str(exc.msg):
                message = f"elements are nested too deep: the CDA is read to a depth of {MAX_DEPTH} at most"
            finding = Finding(stage="xsd", message=message, line=line)
            return Report(volet=volet, findings=(finding,), schemas=rels)
        if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
            # CDA documents carry no DTD; Saxon would expand its entities (and fetch external ones).
            finding = Finding(stage="xsd", message="a DOCTYPE is not allowed in a CDA document", line=1)
            return Report(volet=volet, findings=(finding,), schemas=rels)
        too_deep = _first_too_deep(tree)
        if too_deep is not None:
            # Saxon refuses deeper documents (jdk.xml.maxElementDepth); that is the document's doing,
            # not an engine failure: a finding, never a run without verdict.
            finding = Finding(
                stage="xsd",
                message=f"elements are nested too deep: the CDA is read to a depth of {MAX_DEPTH} at most",
                line=too_deep.sourceline,
                location=tree.getpath(too_deep),
            )
            return Report(volet=volet, findings=(finding,), schemas=rels)
        try:
            findings = self.xsd_findings(tree)
            node = ENGINE.parse(_as_text(xml, tree))
            for sch in schematrons:
                findings.extend(self.schematron_findings(node, sch))
            if optional != "off":
                for sch in self.kit.optional_schematrons():
                    rels = (*rels, self.kit.relative(sch))
                    compiled = self.compiled_optional(sch)
                    for finding in compiled.findings(ENGINE.run(compiled.executable, node)):
                        findings.append(_as_optional(finding, optional))
        except ValidationRunError:
            raise
        except Exception as exc:  # whatever else breaks inside the run is ours, not the document's
            raise ValidationRunError(f"the {volet} validation could not run: {type(exc).__name__}: {exc}") from exc
        return Report(volet=volet, findings=tuple(findings), schemas=(self.kit.relative(self.kit.xsd), *rels))

    def xsd_findings(self, tree: etree._ElementTree) -> list[Finding]:
        schema = self.xml_schema()
        with self._lock:  # an lxml XMLSchema keeps its error log on the object
            valid = schema.validate(tree)
            errors = list(schema.error_log) if not valid else []
        return [
            Finding(
                stage="xsd",
                message=e.message,
                schema=self.kit.relative(self.kit.xsd),
                line=e.line,
                location=e.path or "",
            )
            for e in errors
        ]

    def schematron_findings(self, node: Any, sch: Path) -> list[Finding]:
        """The findings of one schematron (raises :class:`ValidationRunError` when it cannot run)."""
        compiled = self.compiled(sch)
        return compiled.findings(ENGINE.run(compiled.executable, node))

    @staticmethod
    def saxon_document(xml: bytes) -> Any:
        """Parse once for several schematron runs (used by the benchmark)."""
        return ENGINE.parse(_as_text(xml, _parse(xml)))


OptionalMode = Literal["off", "warning", "error"]


def _as_optional(finding: Finding, mode: OptionalMode) -> Finding:
    if mode == "warning" and finding.severity == "error":
        severity: Severity = "warning"
        return Finding(**{**finding.__dict__, "severity": severity})
    return finding


def _as_text(xml: bytes, tree: etree._ElementTree) -> str:
    """The document as text for Saxon: the bytes themselves when UTF-8 (the common case, no re-serialisation)."""
    if (tree.docinfo.encoding or "").upper().replace("_", "-") in ("UTF-8", "UTF8", "US-ASCII", "ASCII"):
        return xml.decode("utf-8-sig")
    return str(etree.tostring(tree, encoding="unicode"))


def _first_too_deep(tree: etree._ElementTree) -> Any:
    """The first element nested deeper than :data:`MAX_DEPTH` (the root is at depth 1), or None."""
    depth = 0
    for event, element in etree.iterwalk(tree, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > MAX_DEPTH:
                return element
        else:
            depth -= 1
    return None


def _parse(xml: bytes) -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=False)
    return etree.fromstring(xml, parser).getroottree()


def compile_schematron(
    sch: Path | str,
    *,
    shape: Shape = "sets",
    phase: str | None = None,
    label: str | None = None,
    documents: dict[str, str] | None = None,
) -> CompiledSchematron:
    """Compile one ISO schematron file (includes, abstract patterns, phase) to a ready executable.

    Value-set documents named by literal paths in the schema are parsed once, here; ``documents``
    supplies missing ones (literal path -> XML text), read through ``doc()`` as well."""
    path = Path(sch).resolve()
    schema = load_schema(path, phase=phase)
    xslt = compile_schema(schema, shape=shape, route_doc=bool(documents))
    executable = ENGINE.compile(xslt)
    if DOCS_PARAM_NAME in xslt:
        parsed = {literal: ENGINE.parse_file(str(file)) for literal, file in referenced_documents(schema).items()}
        parsed.update({literal: ENGINE.parse(text) for literal, text in (documents or {}).items()})
        if parsed:
            ENGINE.set_documents(executable, DOCS_PARAM, parsed)
    return CompiledSchematron(path, label or path.name, schema, executable, xslt)


_validators: dict[tuple[Path, str], Validator] = {}
_validators_lock = threading.Lock()


def load_validator(kit_dir: Path | str | None = None, *, shape: Shape = "sets") -> Validator:
    """The validator for ``kit_dir`` (default: ``$CISIS_KIT_DIR``), created once per process.

    Raises :class:`KitNotFound` when there is no usable kit."""
    kit = Kit.locate(kit_dir)
    key = (kit.root, shape)
    with _validators_lock:
        validator = _validators.get(key)
        if validator is None:
            validator = _validators[key] = Validator(kit, shape=shape)
        return validator
