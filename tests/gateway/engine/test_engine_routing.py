"""Routing rules: validation with pointers, decisions and refusals, connectors from entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from sqlalchemy import select

from connectors.base import Connector
from gateway import pipeline, routing
from gateway.routing import (
    RoutingConfig,
    RoutingConfigError,
    RoutingTable,
    build_connectors,
    check_tls_policy,
    load_config,
    parse_config,
)
from gateway.security.crypto import generate_master_key
from gateway.settings import Settings
from gateway.storage.models import Delivery, Submission
from mappings.base import RecordFacts
from mappings.consent import ConsentFamily
from mappings.ppa import PPA, PpaRecord
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
            "when": {"ins_qualified": True, "not_refused": "fhir"},
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
        facts=_facts(ins_qualified=True, sharing_refused_with=frozenset({"dmp", "fhir"})),
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
    connectors = build_connectors(ok, settings=_profile("dev"))
    assert type(connectors["hook"]).__name__ == "WebhookConnector"
    hook: Connector = connectors["hook"]
    assert hook.health().ok is False  # nothing listens on port 9: health() reports, never raises

    bad_settings = parse_config(
        {"destinations": {"hook": {"connector": "webhook", "category": "webhook", "settings": {"url": "ftp://x"}}}}
    )
    with pytest.raises(RoutingConfigError, match=r"routing\.yaml#/destinations/hook/settings/url"):
        build_connectors(bad_settings, settings=_profile("dev"), source="routing.yaml")
    unknown = parse_config({"destinations": {"d": {"connector": "no-such-connector", "category": "dmp"}}})
    with pytest.raises(RoutingConfigError, match="unknown connector 'no-such-connector'"):
        build_connectors(unknown, settings=_profile("dev"))


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


# --------------------------------------------------------------------------------------------
# Consent: refusals are consent families, every category falls under one (or explicitly none)
# --------------------------------------------------------------------------------------------

CONSENT_ROUTING = {
    "destinations": {
        "dmp": {"connector": "fake", "category": "dmp"},
        "mes": {"connector": "fake", "category": "mes"},
        "mss-pro": {"connector": "fake", "category": "mssante"},
        "mss-patient": {"connector": "fake", "category": "mssante-patient"},
        "sdo": {"connector": "fake", "category": "viatrajectoire"},
        "partner-fhir": {"connector": "fake", "category": "fhir"},
        "dui-hook": {"connector": "fake", "category": "webhook"},
    },
    "rules": [
        {
            "document_types": ["x"],
            "destinations": ["dmp", "mes", "mss-pro", "mss-patient", "sdo", "partner-fhir", "dui-hook"],
        }
    ],
}


def _consent_decision(refused: frozenset[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    decision = RoutingTable(config=parse_config(CONSENT_ROUTING)).decide(
        tenant_code="t",
        tenant_id="t",
        document_type="x",
        facts=_facts(ins_qualified=True, sharing_refused_with=refused),
    )
    return decision.destinations, {r.destination: r.reason for r in decision.refused}


def test_refusing_dmp_refuses_mes_which_is_fed_through_the_dmp() -> None:
    chosen, refused = _consent_decision(frozenset({"dmp"}))
    assert refused == {"dmp": "sharing_refused", "mes": "sharing_refused"}
    assert chosen == ("mss-pro", "mss-patient", "sdo", "partner-fhir", "dui-hook")


def test_refusing_mssante_refuses_the_patient_mailbox_too() -> None:
    chosen, refused = _consent_decision(frozenset({"mssante"}))
    assert refused == {"mss-pro": "sharing_refused", "mss-patient": "sharing_refused"}
    assert chosen == ("dmp", "mes", "sdo", "partner-fhir", "dui-hook")


@pytest.mark.parametrize("spelling", ["DMP", " dmp", "dmp ", "Dmp\t"])
def test_case_and_spacing_variants_of_a_refusal_still_refuse(spelling: str) -> None:
    _, refused = _consent_decision(frozenset({spelling}))
    assert refused == {"dmp": "sharing_refused", "mes": "sharing_refused"}


def test_an_unrecognised_stored_refusal_refuses_every_consent_family() -> None:
    # facts of an older row (or a vocabulary we no longer know): we cannot tell what the person
    # refused, so nothing leaves for a third party; the DUI vendor's own webhook is no disclosure.
    chosen, refused = _consent_decision(frozenset({"mon-espace-sante"}))
    assert chosen == ("dui-hook",)
    assert set(refused) == {"dmp", "mes", "mss-pro", "mss-patient", "sdo", "partner-fhir"}
    assert set(refused.values()) == {"sharing_refused"}


def test_a_refusal_is_matched_by_family_never_by_destination_name() -> None:
    # a destination named like a family is not refused unless its category falls under it
    config = parse_config(
        {
            "destinations": {"sidoba": {"connector": "fake", "category": "webhook"}},
            "rules": [{"document_types": ["x"], "destinations": ["sidoba"]}],
        }
    )
    decision = RoutingTable(config=config).decide(
        tenant_code="t", tenant_id="t", document_type="x", facts=_facts(sharing_refused_with=frozenset({"sidoba"}))
    )
    assert decision.destinations == ("sidoba",)


def test_not_refused_condition_compares_consent_families() -> None:
    config = parse_config(
        {
            "destinations": {"mes": {"connector": "fake", "category": "mes"}},
            "rules": [{"document_types": ["x"], "when": {"not_refused": "dmp"}, "destinations": ["mes"]}],
        }
    )
    decision = RoutingTable(config=config).decide(
        tenant_code="t",
        tenant_id="t",
        document_type="x",
        facts=_facts(ins_qualified=True, sharing_refused_with=frozenset({" DMP"})),
    )
    assert decision.destinations == () and decision.refused[0].reason == "rule_condition"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"destinations": {"d": {"connector": "fake", "category": "hospital"}}}, "#/destinations/d/category"),
        (
            {
                "destinations": {"d": {"connector": "fake", "category": "dmp"}},
                "rules": [
                    {"document_types": ["x"], "when": {"not_refused": ["dmp", "webhook"]}, "destinations": ["d"]}
                ],
            },
            "#/rules/0/when/not_refused/1",
        ),
    ],
)
def test_category_or_condition_outside_the_consent_map_is_a_startup_error(doc, expected, tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RoutingConfigError) as info:
        load_config(path)
    assert f"{path}{expected}" in str(info.value)


def test_every_category_of_the_consent_map_is_accepted() -> None:
    for category, family in routing.CATEGORY_CONSENT.items():
        config = parse_config({"destinations": {"d": {"connector": "fake", "category": category}}})
        assert config.destinations["d"].consent_family is family
    assert routing.CATEGORY_CONSENT["mes"] is ConsentFamily.DMP
    assert routing.CATEGORY_CONSENT["mssante-patient"] is ConsentFamily.MSSANTE
    assert routing.CATEGORY_CONSENT["webhook"] is None


def test_ppa_sharing_refusal_reaches_routing_as_a_consent_family() -> None:
    data = json.loads((Path(__file__).parents[2] / "resources" / "records" / "ppa-ehpad.json").read_text("utf-8"))
    data["ppa"]["sharing_refusals"] = [{"partner": "dmp", "on": data["ppa"]["elaborated_on"]}]
    record = PpaRecord.model_validate(data)
    facts = PPA.facts(record)
    decision = RoutingTable(config=parse_config(CONSENT_ROUTING)).decide(
        tenant_code="t", tenant_id="t", document_type="x", facts=facts
    )
    assert {r.destination: r.reason for r in decision.refused if r.reason == "sharing_refused"} == {
        "dmp": "sharing_refused",
        "mes": "sharing_refused",
    }


# --------------------------------------------------------------------------------------------
# TLS policy: checked at start-up on every destination's validated connector settings
# --------------------------------------------------------------------------------------------


def _profile(profile: str, **kw: object) -> Settings:
    if profile != "dev":
        kw.setdefault("master_keys", f"k1:{generate_master_key()}")
        kw.setdefault("audit_keys", f"a1:{generate_master_key()}")
    if profile == "prod":
        kw.setdefault("admin_token", "s3cret")
    return Settings(_env_file=None, database_url="sqlite://", profile=profile, **kw)  # type: ignore[call-arg, arg-type]


def _hook(**settings: object) -> RoutingConfig:
    return parse_config(
        {
            "destinations": {
                "hook": {"connector": "webhook", "category": "webhook", "settings": {"signing": False, **settings}}
            }
        }
    )


@pytest.mark.parametrize("profile", ["test", "prod"])
def test_tls_verification_off_is_refused_outside_dev(profile: str) -> None:
    config = _hook(url="https://dui.example/hooks", verify_tls=False)
    with pytest.raises(RoutingConfigError, match=r"routing\.yaml#/destinations/hook/settings/verify_tls: .*TLS"):
        build_connectors(config, settings=_profile(profile), source="routing.yaml")


def test_tls_verification_off_in_dev_needs_tls_verify_false() -> None:
    config = _hook(url="https://dui.example/hooks", verify_tls=False)
    with pytest.raises(RoutingConfigError, match="DUI_GATEWAY_TLS_VERIFY=false"):
        build_connectors(config, settings=_profile("dev"), source="routing.yaml")
    connectors = build_connectors(config, settings=_profile("dev", tls_verify=False))
    assert connectors["hook"].settings.verify_tls is False  # type: ignore[attr-defined]  # keeps its own setting


@pytest.mark.parametrize(
    ("settings", "pointer"),
    [
        ({"url": "http://dui.example/hooks"}, "/settings/url"),
        ({"url": "https://dui.example/hooks", "health_url": "http://dui.example/health"}, "/settings/health_url"),
        ({"url": "http://127.0.0.1.example.org/x"}, "/settings/url"),
    ],
)
def test_plain_http_is_refused_in_prod(settings: dict[str, object], pointer: str) -> None:
    with pytest.raises(RoutingConfigError, match=rf"routing\.yaml#/destinations/hook{pointer}: .*http://"):
        build_connectors(_hook(**settings), settings=_profile("prod"), source="routing.yaml")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://127.8.0.1/x", "http://localhost:9/x", "http://[::1]:9/x"]
)
def test_plain_http_to_loopback_is_accepted_in_prod(url: str) -> None:
    assert list(build_connectors(_hook(url=url), settings=_profile("prod"))) == ["hook"]


@pytest.mark.parametrize("profile", ["dev", "test"])
def test_plain_http_is_accepted_in_dev_and_test(profile: str) -> None:
    assert list(build_connectors(_hook(url="http://sandbox:8787/x"), settings=_profile(profile))) == ["hook"]


class _Tls(BaseModel):
    verify: bool | str = True  # requests-style: a CA bundle path is still verification


class _DeepSettings(BaseModel):
    endpoints: list[str] = []
    tls: _Tls = _Tls()
    token: SecretStr | None = None


@pytest.mark.parametrize(
    ("values", "profile", "pointer"),
    [
        ({"tls": {"verify": False}}, "test", "/tls/verify"),
        ({"endpoints": ["https://a.example", "http://b.example"]}, "prod", "/endpoints/1"),
        ({"endpoints": [" HTTP://b.example"]}, "prod", "/endpoints/0"),
    ],
)
def test_tls_policy_inspects_any_connector_settings_model(values: dict, profile: str, pointer: str) -> None:
    with pytest.raises(RoutingConfigError, match=rf"routing\.yaml#/destinations/d/settings{pointer}:"):
        check_tls_policy(
            _DeepSettings.model_validate(values), settings=_profile(profile), pointer="routing.yaml#/destinations/d"
        )


def test_tls_policy_accepts_a_ca_bundle_and_leaves_secrets_alone() -> None:
    ok = _DeepSettings.model_validate({"tls": {"verify": "/etc/ca.pem"}, "token": "http://not-a-url"})
    check_tls_policy(ok, settings=_profile("prod"), pointer="routing.yaml#/destinations/d")


def test_load_passes_the_settings_to_the_tls_policy(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "destinations:\n  hook: {connector: webhook, category: webhook,\n"
        "    settings: {url: 'http://dui.example', signing: false}}\n"
    )
    with pytest.raises(RoutingConfigError, match=rf"{path}#/destinations/hook/settings/url"):
        routing.load(_profile("prod", routing_file=path))
