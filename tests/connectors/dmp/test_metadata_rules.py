"""Every metadata rule of the simulator (one line per line of the spec's tables) is violated once
over the wire and refused with the DMP's error; the connector's own output passes every rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from connectors.dmp import DmpConnector, DmpRefused
from connectors.dmp._xml import NS, q
from connectors.sandbox.dmp import DmpSimulator
from connectors.sandbox.dmp import rules as R
from mappings import valuesets
from tests.connectors.dmp.conftest import Pki, connector_for, envelope, render

DEMO = Path(__file__).resolve().parents[3] / "gateway" / "demo_data"
# Optional metadata without a format or value set: nothing the DMP can refuse.
UNCONSTRAINED = {"DE.eventCodeList", "SS.title"}


@pytest.fixture(scope="module")
def msim(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DmpSimulator]:
    folder = tmp_path_factory.mktemp("dmp-rules")
    simulator = DmpSimulator(ca=pki.ca_path, cert=pki.server_cert, key=pki.server_key, db_path=folder / "dmp.db")
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def mconn(msim: DmpSimulator, pki: Pki) -> Iterator[DmpConnector]:
    conn = connector_for(msim, pki)
    yield conn
    conn.close()


# -- mutations of one ebRIM object ----------------------------------------------------------
def _author(obj: Any, scheme: str) -> Any:
    for c in obj.findall("rim:Classification", NS):
        if c.get("classificationScheme") == scheme:
            return c
    raise AssertionError("no author classification")


def _slots(obj: Any, name: str) -> list[Any]:
    return [s for s in obj.findall("rim:Slot", NS) if s.get("name") == name]


def _add_slot(obj: Any, name: str, value: str) -> None:
    slot = etree.SubElement(obj, q("rim", "Slot"), name=name)
    etree.SubElement(etree.SubElement(slot, q("rim", "ValueList")), q("rim", "Value")).text = value


def remove(obj: Any, where: tuple[str, ...]) -> None:
    kind = where[0]
    if kind == "slot":
        for s in _slots(obj, where[1]):
            obj.remove(s)
    elif kind == "attr":
        del obj.attrib[where[1]]
    elif kind == "name":
        for n in obj.findall("rim:Name", NS):
            obj.remove(n)
    elif kind in ("class", "ext"):
        tag, attr = (
            ("Classification", "classificationScheme")
            if kind == "class"
            else ("ExternalIdentifier", "identificationScheme")
        )
        for e in obj.findall(f"rim:{tag}", NS):
            if e.get(attr) == where[1]:
                obj.remove(e)
    elif kind == "author":
        remove(_author(obj, where[1]), ("slot", where[2]))


def set_value(obj: Any, where: tuple[str, ...], value: Any) -> None:
    kind = where[0]
    if kind == "slot":
        found = _slots(obj, where[1])
        if not found:
            _add_slot(obj, where[1], value)
        else:
            found[0].find("rim:ValueList/rim:Value", NS).text = value
    elif kind == "attr":
        obj.set(where[1], value)
    elif kind == "name":
        obj.find("rim:Name/rim:LocalizedString", NS).set("value", value)
    elif kind == "ext":
        next(e for e in obj.findall("rim:ExternalIdentifier", NS) if e.get("identificationScheme") == where[1]).set(
            "value", value
        )
    elif kind == "class":
        c = next(e for e in obj.findall("rim:Classification", NS) if e.get("classificationScheme") == where[1])
        c.set("nodeRepresentation", value[0])
        _slots(c, "codingScheme")[0].find("rim:ValueList/rim:Value", NS).text = value[1]
    elif kind == "author":
        set_value(_author(obj, where[1]), ("slot", where[2]), value)


def duplicate(obj: Any, where: tuple[str, ...], times: int) -> None:
    kind = where[0]
    if kind == "slot" and not _slots(obj, where[1]):
        _add_slot(obj, where[1], "20250301093000")
    if kind == "slot":
        vl = _slots(obj, where[1])[0].find("rim:ValueList", NS)
        for _ in range(times):
            etree.SubElement(vl, q("rim", "Value")).text = vl[0].text
    elif kind == "class":
        c = next(e for e in obj.findall("rim:Classification", NS) if e.get("classificationScheme") == where[1])
        for i in range(times):
            clone = etree.fromstring(etree.tostring(c))
            clone.set("id", f"dup{i}")
            obj.append(clone)
    elif kind == "ext":
        e = next(e for e in obj.findall("rim:ExternalIdentifier", NS) if e.get("identificationScheme") == where[1])
        for i in range(times):
            clone = etree.fromstring(etree.tostring(e))
            clone.set("id", f"dup{i}")
            obj.append(clone)


def _other_type() -> tuple[str, str]:
    return next(
        (c.code, c.system)
        for c in valuesets.TYPE_CODE.concepts.values()
        if c.system.startswith("2.16") and c.code != "74207-2"
    )


CDA_MISMATCH: dict[str, Any] = {
    "patientId": "299035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH",
    "uniqueId": "1.2.3.4.5",
    "typeCode": _other_type(),
    "confidentialityCode": ("R", "2.16.840.1.113883.5.25"),
    "creationTime": "20000101000000",
    "serviceStartTime": "20000101000000",
    "serviceStopTime": "20000101000000",
    "title": "Un autre titre",
    "healthcareFacilityTypeCode": ("SA16", "1.2.250.1.71.4.2.4"),
    "practiceSettingCode": ("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9"),
    "hash": "0" * 40,
    "size": "1",
}


def cases() -> list[Any]:
    out = []
    for rule in (*R.DE_RULES, *R.SS_RULES):
        if rule.req == "R":
            out.append(pytest.param(rule, "missing", id=f"{rule.id}-missing"))
        if rule.pattern is not None:
            out.append(pytest.param(rule, "format", id=f"{rule.id}-format"))
        if rule.allowed is not None:
            out.append(pytest.param(rule, "valueset", id=f"{rule.id}-valueset"))
        if rule.max is not None and rule.where[0] in ("class", "slot", "ext"):
            out.append(pytest.param(rule, "cardinality", id=f"{rule.id}-cardinality"))
        if rule.cda in CDA_MISMATCH:
            out.append(pytest.param(rule, "cda", id=f"{rule.id}-cda"))
    return out


def test_every_rule_has_a_violation_case() -> None:
    covered = {p.values[0].id for p in cases()}
    assert {r.id for r in (*R.DE_RULES, *R.SS_RULES)} - covered == UNCONSTRAINED


def _target(submission: Any, rule: R.Rule) -> Any:
    objects = submission.request.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    if rule.id.startswith("SS."):
        return objects.find("rim:RegistryPackage", NS)
    entry_id = submission.described.entries[0].entry_id
    return next(e for e in objects.findall("rim:ExtrinsicObject", NS) if e.get("id") == entry_id)


@pytest.mark.parametrize(("rule", "how"), cases())
def test_each_rule_violated_is_refused(
    rule: R.Rule, how: str, msim: DmpSimulator, mconn: DmpConnector, pki: Pki
) -> None:
    rendition, facts = render()
    env = envelope(pki, rendition, facts)
    submission = mconn.prepare(env)
    obj = _target(submission, rule)
    if how == "missing":
        remove(obj, rule.where)
    elif how == "format":
        set_value(obj, rule.where, "   ")
    elif how == "valueset":
        set_value(obj, rule.where, ("NOPE", "1.2.3.4"))
    elif how == "cardinality":
        duplicate(obj, rule.where, (rule.max or 1))
    else:
        assert rule.cda is not None
        set_value(obj, rule.where, CDA_MISMATCH[rule.cda])
    with pytest.raises(DmpRefused) as info:
        mconn.submit(env, submission)
    assert info.value.code == "XDSRegistryMetadataError", str(info.value)
    assert f"{rule.id}:" in str(info.value), str(info.value)
    assert msim.store.entry_by_unique_id(rendition.document_id) is None


def _demo_record(name: str) -> Any:
    from mappings.record import DluRecord

    return DluRecord.model_validate(json.loads((DEMO / f"{name}.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", ["rich", "accented_names", "demo:01-dlu-qualified-ins"])
def test_connector_output_passes_every_rule(name: str, msim: DmpSimulator, mconn: DmpConnector, pki: Pki) -> None:
    if name.startswith("demo:"):
        rendition, facts = render(record=_demo_record(name.removeprefix("demo:")))
    else:
        rendition, facts = render(name)
    assert facts.ins_qualified, f"{name} is a sample with a qualified INS"
    env = envelope(pki, rendition, facts)
    submission = mconn.prepare(env)
    objects = submission.request.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    cda = R.cda_facts(etree.fromstring(rendition.content), rendition.content, accept_test_ins=True)
    entry = _target(submission, R.DE_RULES[0])
    assert R.check_entry(entry, cda, is_cda=True) == []
    assert R.check_submission_set(objects.find("rim:RegistryPackage", NS)) == []
    receipt = mconn.submit(env, submission)
    assert receipt.detail["status"] == "Success"
    stored = msim.store.entry_by_unique_id(rendition.document_id)
    assert stored is not None and stored.entry_uuid == receipt.remote_id
    assert stored.hash == cda["hash"] and stored.type_code == "74207-2"
