"""Routing rules: validation with pointers, decisions and refusals, connectors from entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.base import Connector
from gateway import pipeline, routing
from gateway.routing import RoutingConfigError, RoutingTable, build_connectors, load_config, parse_config
from gateway.settings import Settings
from gateway.storage.models import Delivery, Submission
from mappings.base import RecordFacts
from tests.gateway.engine.support import Clock, FakeConnector, audit_events, make_runtime, submit

FINESS_A = "750000010"
FINESS_B = "750000028"

DLU_ROUTING = {
    "destinations": {
        "dmp": {"connector": "fake", "category": "dmp"},
        "urgences-mss": {"connector": "fake", "category": "mssante", "options": {"to": "urgences@ch.mssante.fr"}},
        "dui-hook": {"connector": "fake", "category": "webhook"},
    },
    "rules": [
        {"name": "dlu to DMP", "document_types": ["dlu", "test-note"], "destinations": ["dmp"]},
        {
            "name": "dlu to the partner emergency department",
            "tenant": "og-test",
            "essms": [FINESS_A],
            "document_types": ["test-note"],
            "destinations": ["urgences-mss", "dmp"],
        },
        {
            "name": "copy to the DUI only with a qualified INS",
            "document_types": ["test-note"],
            "when": {"ins_qualified": True, "not_refused": "webhook"},
            "destinations": ["dui-hook"],
        },
    ],
}


def _facts(**kw) -> RecordFacts:
    return RecordFacts(person_ref="p", essms_finess=kw.pop("finess", FINESS_A), **kw)


def _table() -> RoutingTable:
    return RoutingTable(config=parse_config(DLU_ROUTING))


def test_all_matching_rules_deduplicated_in_rule_order() -> None:
    decision = _table().decide(
        tenant_code="og-test", tenant_id="t1", document_type="test-note", facts=_facts(ins_qualified=True)
    )
    assert decision.destinations == ("dmp", "urgences-mss", "dui-hook")
    assert decision.refused == () and decision.matched_rules == (0, 1, 2)


def test_tenant_essms_and_document_type_filter() -> None:
    table = _table()
    other_essms = table.decide(
        tenant_code="og-test", tenant_id="t1", document_type="test-note", facts=_facts(finess=FINESS_B)
    )
    assert "urgences-mss" not in other_essms.destinations
    other_tenant = table.decide(tenant_code="og-2", tenant_id="t2", document_type="test-note", facts=_facts())
    assert "urgences-mss" not in other_tenant.destinations
    by_id = RoutingTable(config=parse_config({**DLU_ROUTING, "rules": [{**DLU_ROUTING["rules"][1], "tenant": "t9"}]}))
    assert by_id.decide(tenant_code="x", tenant_id="t9", document_type="test-note", facts=_facts()).destinations == (
        "urgences-mss",
    )
    assert table.decide(tenant_code="og-test", tenant_id="t1", document_type="ppa", facts=_facts()).destinations == ()


def test_dmp_refused_without_qualified_ins_and_when_sharing_refused() -> None:
    table = _table()
    no_ins = table.decide(tenant_code="og-test", tenant_id="t1", document_type="test-note", facts=_facts())
    assert no_ins.destinations == ("urgences-mss",)  # a professional MSSanté box needs no INS
    assert [r.to_dict() for r in no_ins.refused] == [
        {"destination": "dmp", "reason": "ins_not_qualified", "detail": "dmp requires a qualified INS"},
        {"destination": "dui-hook", "reason": "rule_condition", "detail": "rule 2: requires ins_qualified=true"},
    ]
    refused = table.decide(
        tenant_code="og-test",
        tenant_id="t1",
        document_type="test-note",
        facts=_facts(ins_qualified=True, sharing_refused_with=frozenset({"dmp", "webhook"})),
    )
    assert refused.destinations == ("urgences-mss",)
    assert {r.destination: r.reason for r in refused.refused} == {
        "dmp": "sharing_refused",
        "dui-hook": "rule_condition",
    }


def test_requires_qualified_ins_can_be_set_per_destination() -> None:
    config = parse_config(
        {
            "destinations": {
                "mss-patient": {"connector": "fake", "category": "mssante", "requires_qualified_ins": True}
            },
            "rules": [{"document_types": ["x"], "destinations": ["mss-patient"]}],
        }
    )
    decision = RoutingTable(config=config).decide(tenant_code="t", tenant_id="t", document_type="x", facts=_facts())
    assert decision.destinations == () and decision.refused[0].reason == "ins_not_qualified"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"rules": [{"document_types": ["dlu"], "destinations": ["nowhere"]}]}, "/rules/0/destinations/0"),
        ({"destinations": {"d": {"connector": "fake"}}}, "#/destinations/d/category"),
        ({"destinations": {}, "rules": [{"destinations": []}]}, "#/rules/0/document_types"),
        ({"rules": [{"document_types": ["dlu"], "destinations": ["x"], "essms": ["123"]}]}, "#/rules/0/essms"),
        ({"rules": [], "route": []}, "#/route"),
    ],
)
def test_invalid_routing_is_reported_with_a_pointer(doc, expected) -> None:
    with pytest.raises(RoutingConfigError) as info:
        parse_config(doc, source="routing.yaml")
    assert expected in str(info.value) and "routing.yaml" in str(info.value)


def test_yaml_and_json_files(tmp_path: Path) -> None:
    yaml_file = tmp_path / "routing.yaml"
    yaml_file.write_text(
        "destinations:\n  dmp: {connector: fake, category: dmp}\n"
        "rules:\n  - document_types: [dlu]\n"
        "    when: {ins_qualified: true, not_refused: dmp}\n    destinations: [dmp]\n"
    )
    config = load_config(yaml_file)
    assert config.rules[0].when.not_refused == ["dmp"]
    json_file = tmp_path / "routing.json"
    json_file.write_text('{"destinations": {}, "rules": [')
    with pytest.raises(RoutingConfigError, match=r"routing\.json: not valid JSON"):
        load_config(json_file)
    with pytest.raises(RoutingConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_connectors_come_from_entry_points(tmp_path: Path) -> None:
    ok = parse_config(
        {
            "destinations": {
                "hook": {
                    "connector": "webhook",
                    "category": "webhook",
                    "settings": {"url": "http://127.0.0.1:9/x", "signing": False},
                }
            }
        }
    )
    connectors = build_connectors(ok)
    assert type(connectors["hook"]).__name__ == "WebhookConnector"
    hook: Connector = connectors["hook"]
    assert hook.health().ok is False  # nothing listens on port 9: health() reports, never raises

    bad_settings = parse_config(
        {"destinations": {"hook": {"connector": "webhook", "category": "webhook", "settings": {"url": "ftp://x"}}}}
    )
    with pytest.raises(RoutingConfigError, match=r"routing\.yaml#/destinations/hook/settings/url"):
        build_connectors(bad_settings, source="routing.yaml")
    unknown = parse_config({"destinations": {"d": {"connector": "no-such-connector", "category": "dmp"}}})
    with pytest.raises(RoutingConfigError, match="unknown connector 'no-such-connector'"):
        build_connectors(unknown)


def test_load_without_routing_file_routes_nowhere(tmp_path: Path) -> None:
    table, connectors = routing.load(Settings(database_url="sqlite://", routing_file=None))
    assert connectors == {} and table.config.rules == []
    path = tmp_path / "routing.yaml"
    path.write_text(
        "destinations:\n"
        "  hook: {connector: webhook, category: webhook, settings: {url: 'http://127.0.0.1:9', signing: false}}\n"
    )
    table, connectors = routing.load(Settings(database_url="sqlite://", routing_file=path))
    assert list(connectors) == ["hook"] and table.source == str(path)


def test_routing_refusals_are_recorded_on_the_submission(session_factory, keyring, tenant) -> None:
    dmp, mss = FakeConnector(), FakeConnector()
    rt = make_runtime(
        session_factory,
        keyring,
        routing={**DLU_ROUTING, "rules": DLU_ROUTING["rules"][:2]},
        connectors={"dmp": dmp, "urgences-mss": mss, "dui-hook": FakeConnector()},
    )
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, ins_qualified=False)
    refused_id = submit(
        session_factory,
        keyring,
        tenant_id=tenant.id,
        finess=tenant.finess,
        person_ref="p2",
        ins_qualified=True,
        refuse_sharing_with=["dmp"],
    )
    qualified_id = submit(
        session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="p3", ins_qualified=True
    )
    while pipeline.process_next(rt, worker_id="w1", clock=Clock()):
        pass
    with session_factory() as session:
        by_sub = {
            s: sorted(session.scalars(select(Delivery.destination).where(Delivery.submission_id == s)))
            for s in (sub_id, refused_id, qualified_id)
        }
        report = session.get(Submission, sub_id).report  # type: ignore[union-attr]
    assert by_sub == {sub_id: ["urgences-mss"], refused_id: ["urgences-mss"], qualified_id: ["dmp", "urgences-mss"]}
    assert report["routing"]["refused"] == [
        {"destination": "dmp", "reason": "ins_not_qualified", "detail": "dmp requires a qualified INS"}
    ]
    (routed,) = audit_events(session_factory, refused_id, "routed")
    assert routed.detail["refused"][0]["reason"] == "sharing_refused"
    # destination options reach the connector
    from gateway.delivery import deliver_next

    while deliver_next(rt, worker_id="w1", clock=Clock()):
        pass
    assert {s.envelope.options.get("to") for s in mss.accepted} == {"urgences@ch.mssante.fr"}
    assert len(dmp.accepted) == 1 and dmp.accepted[0].envelope.facts.ins_qualified is True
