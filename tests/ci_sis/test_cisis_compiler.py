"""The schematron compiler on small hand-written schemas, in its three code shapes.

Every test runs with the fast set-based shape, the single-walk shape and the classic one-walk-per-pattern
shape: they must agree, and agree with ISO Schematron as the skeleton implements it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ci_sis import Finding, SchematronError, ValidationRunError, compile_schematron

SHAPES = ["sets", "walk", "classic"]
SCH = "http://purl.oclc.org/dsdl/schematron"


def schema(body: str, *, attrs: str = "") -> str:
    return (
        f'<schema xmlns="{SCH}" queryBinding="xslt2" {attrs}>\n'
        '  <ns prefix="h" uri="urn:hl7-org:v3"/>\n'
        f"{body}\n</schema>\n"
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(sch: Path, xml: str, shape: str, phase: str | None = None) -> list[Finding]:
    return compile_schematron(sch, shape=shape, phase=phase).run(xml.encode("utf-8"))  # type: ignore[arg-type]


def summary(findings: list[Finding]) -> Counter[tuple[str, str, str]]:
    return Counter((f.pattern, f.location, f.message) for f in findings)


DOC = """<doc xmlns="urn:hl7-org:v3">
  <obs><templateId root="A"/><code code="1"/></obs>
  <obs><templateId root="B"/><code code="2"/></obs>
  <obs><code code="3"/></obs>
  <other code="9"/>
</doc>"""


@pytest.mark.parametrize("shape", SHAPES)
def test_only_the_first_matching_rule_of_a_pattern_fires(tmp_path: Path, shape: str) -> None:
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="p">
    <rule context="*[h:templateId/@root='A']"><assert test="false()">first</assert></rule>
    <rule context="h:obs"><assert test="false()">second <value-of select="h:code/@code"/></assert></rule>
    <rule context="*"><assert test="false()">third <name/></assert></rule>
  </pattern>
  <pattern id="q">
    <rule context="h:obs"><report test="h:code/@code = '1'">q sees <value-of select="h:code/@code"/></report></rule>
  </pattern>"""
        ),
    )
    got = summary(run(sch, DOC, shape))
    assert got == Counter(
        {
            ("p", "/doc", "third doc"): 1,
            ("p", "/doc/obs", "first"): 1,
            ("p", "/doc/obs[2]", "second 2"): 1,
            ("p", "/doc/obs[3]", "second 3"): 1,
            ("p", "/doc/obs/templateId", "third templateId"): 1,
            ("p", "/doc/obs[2]/templateId", "third templateId"): 1,
            ("p", "/doc/obs/code", "third code"): 1,
            ("p", "/doc/obs[2]/code", "third code"): 1,
            ("p", "/doc/obs[3]/code", "third code"): 1,
            ("p", "/doc/other", "third other"): 1,
            ("q", "/doc/obs", "q sees 1"): 1,
        }
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_assert_fires_when_false_report_when_true(tmp_path: Path, shape: str) -> None:
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="p">
    <rule context="h:other">
      <assert test="@code = '9'">never</assert>
      <assert test="@code = '8'" id="a1" role="warning">assert failed</assert>
      <report test="@code = '9'" id="r1">report fired</report>
      <report test="@code = '8'">never either</report>
    </rule>
  </pattern>"""
        ),
    )
    findings = run(sch, DOC, shape)
    assert sorted((f.kind, f.assert_id, f.severity, f.message) for f in findings) == [
        ("assert", "a1", "warning", "assert failed"),
        ("report", "r1", "error", "report fired"),
    ]


@pytest.mark.parametrize("shape", SHAPES)
def test_lets_at_schema_pattern_and_rule_level(tmp_path: Path, shape: str) -> None:
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <let name="wanted" value="'9'"/>
  <pattern id="vars">
    <let name="codes" value="('1', '2')"/>
    <rule context="h:doc"><assert test="true()">unused</assert></rule>
  </pattern>
  <pattern id="p">
    <rule context="h:obs">
      <let name="c" value="h:code/@code"/>
      <assert test="$c = $codes">code <value-of select="$c"/> not in list</assert>
      <let name="twice" value="concat($c, $c)"/>
      <report test="$twice = '22'">twice <value-of select="$twice"/></report>
    </rule>
    <rule context="h:other"><assert test="@code = $wanted">never</assert></rule>
  </pattern>"""
        ),
    )
    assert summary(run(sch, DOC, shape)) == Counter(
        {("p", "/doc/obs[3]", "code 3 not in list"): 1, ("p", "/doc/obs[2]", "twice 22"): 1}
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_default_phase_and_explicit_phase(tmp_path: Path, shape: str) -> None:
    body = """
  <phase id="one"><active pattern="p1"/></phase>
  <phase id="two"><active pattern="p2"/></phase>
  <pattern id="p1"><rule context="h:other"><assert test="false()">from p1</assert></rule></pattern>
  <pattern id="p2"><rule context="h:other"><assert test="false()">from p2</assert></rule></pattern>"""
    with_default = write(tmp_path, "d.sch", schema(body, attrs='defaultPhase="two"'))
    without = write(tmp_path, "n.sch", schema(body))
    assert [f.message for f in run(with_default, DOC, shape)] == ["from p2"]
    assert [f.message for f in run(with_default, DOC, shape, phase="one")] == ["from p1"]
    assert sorted(f.message for f in run(without, DOC, shape)) == ["from p1", "from p2"]
    with pytest.raises(SchematronError):
        compile_schematron(without, phase="three")


@pytest.mark.parametrize("shape", SHAPES)
def test_abstract_pattern_parameters_are_substituted(tmp_path: Path, shape: str) -> None:
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="inSet" abstract="true">
    <rule context="$elt">
      <assert test="@code = $allowed">$label: <value-of select="@code"/> not allowed</assert>
    </rule>
  </pattern>
  <pattern id="obsCodes" is-a="inSet">
    <param name="elt" value="h:obs/h:code"/>
    <param name="allowed" value="('1', '3')"/>
    <param name="label" value="observation code"/>
  </pattern>
  <pattern id="otherCodes" is-a="inSet">
    <param name="elt" value="h:other"/>
    <param name="allowed" value="'9'"/>
    <param name="label" value="other code"/>
  </pattern>"""
        ),
    )
    assert summary(run(sch, DOC, shape)) == Counter(
        {("obsCodes", "/doc/obs[2]/code", "observation code: 2 not allowed"): 1}
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_nested_relative_includes_and_abstract_rules(tmp_path: Path, shape: str) -> None:
    write(
        tmp_path,
        "lib/rules/obs.sch",
        f"""<pattern xmlns="{SCH}" id="obs">
  <rule abstract="true" id="hasCode"><assert test="h:code">no code</assert></rule>
  <rule context="h:obs"><extends rule="hasCode"/><assert test="h:code/@code != '2'">code 2</assert></rule>
</pattern>""",
    )
    write(tmp_path, "lib/all.sch", f'<include xmlns="{SCH}" href="rules/obs.sch"/>')
    write(
        tmp_path,
        "lib/abstract/base.sch",
        f"""<pattern xmlns="{SCH}" id="base" abstract="true">
  <rule context="$e"><assert test="false()">base on <name/></assert></rule>
</pattern>""",
    )
    sch = write(
        tmp_path,
        "main.sch",
        schema(
            f"""
  <include href="lib/abstract/base.sch"/>
  <include href="lib/all.sch"/>
  <pattern id="fromBase" is-a="base"><param name="e" value="h:other"/></pattern>
  <pattern xmlns="{SCH}" id="extra">
    <rule context="h:doc"><assert test="count(h:obs) = 2">3 obs</assert></rule>
  </pattern>"""
        ),
    )
    got = summary(run(sch, DOC.replace('<code code="3"/>', ""), shape))
    assert got == Counter(
        {
            ("obs", "/doc/obs[2]", "code 2"): 1,
            ("obs", "/doc/obs[3]", "no code"): 1,
            ("obs", "/doc/obs[3]", "code 2"): 1,  # empty != '2' is false: that assert fails too
            ("fromBase", "/doc/other", "base on other"): 1,
            ("extra", "/doc", "3 obs"): 1,
        }
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_value_set_document_resolved_next_to_the_schema(tmp_path: Path, shape: str) -> None:
    write(
        tmp_path,
        "jdv/codes.xml",
        '<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008"><ValueSet><ConceptList>'
        '<Concept code="1"/><Concept code="3"/></ConceptList></ValueSet></RetrieveValueSetResponse>',
    )
    sch = write(
        tmp_path,
        "schemas/s.sch",
        schema(
            """
  <ns prefix="svs" uri="urn:ihe:iti:svs:2008"/>
  <pattern id="vars"><let name="jdv" value="'../jdv/codes.xml'"/></pattern>
  <pattern id="p">
    <rule context="h:obs/h:code">
      <let name="c" value="@code"/>
      <assert test="document($jdv)//svs:Concept[@code = $c]">code <value-of select="$c"/> not in the value set</assert>
    </rule>
  </pattern>"""
        ),
    )
    assert [f.message for f in run(sch, DOC, shape)] == ["code 2 not in the value set"]


@pytest.mark.parametrize("shape", SHAPES)
def test_attribute_contexts_never_fire_and_document_node_context(tmp_path: Path, shape: str) -> None:
    """As in the ANS skeleton: attributes are not visited, and "/" is located at the root element."""
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="attr"><rule context="h:code/@code"><assert test=". != '2'">bad code attribute</assert></rule></pattern>
  <pattern id="root"><rule context="/"><assert test="count(//h:obs) = 2">three obs</assert></rule></pattern>"""
        ),
    )
    assert summary(run(sch, DOC, shape)) == Counter({("root", "/doc", "three obs"): 1})


@pytest.mark.parametrize("shape", SHAPES)
def test_diagnostics_are_reported(tmp_path: Path, shape: str) -> None:
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="p">
    <rule context="h:other"><assert test="@code = '1'" diagnostics="d1 d2">wrong</assert></rule>
  </pattern>
  <diagnostics>
    <diagnostic id="d1">found <value-of select="@code"/></diagnostic>
    <diagnostic id="d2">expected 1</diagnostic>
  </diagnostics>"""
        ),
    )
    (finding,) = run(sch, DOC, shape)
    assert finding.message == "wrong"
    assert finding.diagnostics == ("found 9", "expected 1")


@pytest.mark.parametrize("shape", SHAPES)
def test_positional_predicates_keep_their_child_axis_meaning(tmp_path: Path, shape: str) -> None:
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="p">
    <rule context="*[h:templateId/@root='A' or h:templateId/@root='B'][1]"><assert test="false()">first</assert></rule>
    <rule context="h:obs[last()]"><assert test="false()">last obs</assert></rule>
  </pattern>"""
        ),
    )
    # *[...][1] is the first matching child of its parent, not the first in the document
    xml = DOC.replace("<other", '<wrap><obs><templateId root="B"/></obs></wrap><other')
    assert summary(run(sch, xml, shape)) == Counter(
        {("p", "/doc/obs", "first"): 1, ("p", "/doc/wrap/obs", "first"): 1, ("p", "/doc/obs[3]", "last obs"): 1}
    )


def test_not_a_schematron_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchematronError):
        compile_schematron(write(tmp_path, "x.sch", "<notschema/>"))
    with pytest.raises(SchematronError):
        compile_schematron(write(tmp_path, "y.sch", schema('<include href="missing.sch"/>')))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_dynamic_error_while_running_raises_instead_of_becoming_a_finding(tmp_path: Path, shape: str) -> None:
    """An XSLT dynamic error says nothing about the document: the validator has no verdict."""
    sch = write(
        tmp_path,
        "s.sch",
        schema(
            """
  <pattern id="p">
    <rule context="h:obs"><assert test="error(QName('urn:test', 'BOOM'), 'engine failure')">never shown</assert></rule>
  </pattern>"""
        ),
    )
    compiled = compile_schematron(sch, shape=shape)  # type: ignore[arg-type]
    with pytest.raises(ValidationRunError, match=r"BOOM|engine failure"):
        compiled.run(DOC.encode("utf-8"))
