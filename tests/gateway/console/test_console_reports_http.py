"""The indicators page and the linking of unmatched persons, over real HTTP: the figures are the
API's computation, exports are its layouts, scoping follows the roles, reads and links are audited,
and linking goes through the same service as the API (issues #11 and #12)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import persons
from gateway.services import stays
from gateway.storage.db import session_scope
from gateway.storage.models import AuditEvent, UnmatchedPerson
from reporting import Period, compute
from reporting.export import to_csv
from tests.gateway.console.conftest import FINESS_A, FINESS_A2, World
from tests.gateway.console.seed import CAPACITIES, seed_indicators, seed_unmatched, stay_events

IPP = "urn:oid:1.2.250.1.71.4.2.2.999|IPP-778899"
INS = "urn:oid:1.2.250.1.213.1.4.8|279035121518989"


def _events(session_factory: sessionmaker[Session], **where: Any) -> list[AuditEvent]:
    with session_scope(session_factory) as session:
        stmt = select(AuditEvent).filter_by(**where).order_by(AuditEvent.seq)
        return list(session.scalars(stmt))


def _cells(text: str, table_id: str) -> list[list[str]]:
    table = text.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
        for r in rows
    ]


@pytest.fixture
def indicators(world: World, session_factory: sessionmaker[Session], keyring: Any) -> None:
    seed_indicators(session_factory, keyring, tenant_id=world.tenant_a, finess=FINESS_A)


def test_indicators_page_shows_the_api_figures(
    browser_for: Any, users: dict[str, str], world: World, indicators: None, session_factory: Any
) -> None:
    lea = browser_for("lea")
    page = lea.get(f"/console/indicateurs?t={world.tenant_a}&essms={FINESS_A}&periode=2026-Q1&decoupage=month")
    assert page.status_code == 200, page.text[:500]
    assert '<svg viewBox="0 0 640' in page.text and 'aria-labelledby="occupation-t occupation-d"' in page.text
    key = {row[0]: row[1:] for row in _cells(page.text, "chiffres-cles")[1:]}
    expected = compute(stay_events(FINESS_A), finess=FINESS_A, period=Period.parse("2026-Q1"), capacities=CAPACITIES)
    # hand-computed: P-A-001 22 + 28 + 14 days, P-A-004 28 + 31 days (January to March)
    assert expected.totals.days_realised == 22 + 28 + 14 + 28 + 31
    assert key["Journées réalisées"][0] == "123"
    assert key["Personnes accompagnées"][0] == "2" and key["Sorties"][0] == "1" and key["Entrées"][0] == "2"
    assert key["Taux d'occupation"][0] == f"{expected.totals.occupancy_rate:.2f}".replace(".", ",") + "\u00a0%"
    chart = {row[0]: row[1:] for row in _cells(page.text, "donnees-occupation")[1:]}
    assert len(chart) == 12
    # January, every type: 22 days in a stay over (2 + 1 places) x 31 days = 23.7 %
    assert chart["janvier 2026"][0].startswith("23,7\u00a0%") and "(22 / 93)" in chart["janvier 2026"][0]
    # the read is audited like the API's (one event, the persons whose events were read)
    reads = _events(session_factory, action="read", entity_type="indicators", actor=f"user:{users['lea']}")
    assert len(reads) == 1 and reads[0].detail["person_refs"] == ["P-A-001", "P-A-004", "P-A-005"]
    quarters = lea.get(f"/console/indicateurs?t={world.tenant_a}&essms={FINESS_A}&periode=2026&decoupage=quarter")
    assert len(_cells(quarters.text, "donnees-occupation")) == 1 + 4


def test_indicators_exports_are_the_api_layouts(
    browser_for: Any, users: dict[str, str], world: World, indicators: None, session_factory: Any, keyring: Any
) -> None:
    oscar = browser_for("oscar")
    csv = oscar.get(f"/console/indicateurs/export?t={world.tenant_a}&essms={FINESS_A}&periode=2026-03&format=csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert 'filename="indicateurs-750000010-2026-03.csv"' in csv.headers["content-disposition"]
    with session_scope(session_factory) as session:
        ds = stays.dataset(session, tenant_id=world.tenant_a, finess=FINESS_A, period=Period.parse("2026-03"),
                           keyring=keyring, actor="test")  # fmt: skip
    assert csv.text == to_csv([ds])
    js = oscar.get(f"/console/indicateurs/export?t={world.tenant_a}&essms={FINESS_A}&periode=2026-03&format=json")
    assert js.json()["datasets"][0]["totals"]["days_realised"] == ds.totals.days_realised == 14 + 31


def test_indicators_scoping(browser_for: Any, users: dict[str, str], world: World, indicators: None) -> None:
    sophie = browser_for("sophie")  # lecteur limited to FINESS_A2
    assert sophie.get(f"/console/indicateurs?t={world.tenant_a}&essms={FINESS_A}").status_code == 404
    mine = sophie.get(f"/console/indicateurs?t={world.tenant_a}")
    assert mine.status_code == 200 and f'value="{FINESS_A}"' not in mine.text and FINESS_A2 in mine.text
    export = f"/console/indicateurs/export?t={world.tenant_a}&essms={FINESS_A}&periode=2026&format=csv"
    assert sophie.get(export).status_code == 404
    assert browser_for("adam").get(f"/console/indicateurs?t={world.tenant_a}").status_code == 403  # no clinical role
    assert browser_for("bruno").get(f"/console/indicateurs?t={world.tenant_a}").status_code == 404  # other tenant
    assert browser_for("lea").get(f"/console/indicateurs?t={world.tenant_a}&periode=2026-13").status_code == 400
    assert browser_for(None).get("/console/indicateurs").url.split("?")[0].endswith("/console/connexion")


@pytest.fixture
def unmatched(world: World, session_factory: sessionmaker[Session], keyring: Any) -> dict[str, str]:
    def keep(finess: str, source: str, identifiers: list[str], tenant: str = world.tenant_a) -> str:
        return seed_unmatched(session_factory, keyring, tenant_id=tenant, finess=finess, source=source,
                              identifiers=identifiers)  # fmt: skip

    return {
        "adt": keep(FINESS_A, "mllp-ch-demo", [IPP, INS]),
        "adt_again": keep(FINESS_A, "mllp-ch-demo", [IPP]),  # the same person's next message
        "sdo": keep(
            FINESS_A,
            "viatrajectoire-750000010",
            ["urn:oid:1.2.250.1.213.3.3|VT-123"],
        ),
        "other_essms": keep(FINESS_A2, "mllp-ch-demo", ["urn:oid:1.2.3|X-1"]),
        "tenant_b": keep("750000028", "mllp-ch-b", [IPP], tenant=world.tenant_b),
    }


def test_unmatched_list_identifies_no_one_and_the_detail_is_audited(
    browser_for: Any, users: dict[str, str], world: World, unmatched: dict[str, str], session_factory: Any
) -> None:
    lea = browser_for("lea")
    listing = lea.get(f"/console/personnes-a-rattacher?t={world.tenant_a}")
    assert listing.status_code == 200
    for entry in ("adt", "adt_again", "sdo", "other_essms"):
        assert unmatched[entry] in listing.text
    assert unmatched["tenant_b"] not in listing.text
    assert "IPP-778899" not in listing.text and "279035121518989" not in listing.text
    assert "ViaTrajectoire" in listing.text and "HL7 v2 (MLLP)" in listing.text
    assert _events(session_factory, entity_type="unmatched_person") == []
    detail = lea.get(f"/console/personnes-a-rattacher/{unmatched['adt']}?t={world.tenant_a}")
    assert detail.status_code == 200 and "IPP-778899" in detail.text
    assert 'name="personne"' not in detail.text  # a lecteur reads, does not link
    seen = _events(session_factory, entity_type="unmatched_person", action="read")
    assert [(e.entity_id, e.actor) for e in seen] == [(unmatched["adt"], f"user:{users['lea']}")]
    sophie = browser_for("sophie")  # limited to FINESS_A2
    assert unmatched["adt"] not in sophie.get(f"/console/personnes-a-rattacher?t={world.tenant_a}").text
    assert sophie.get(f"/console/personnes-a-rattacher/{unmatched['adt']}?t={world.tenant_a}").status_code == 404
    bruno = browser_for("bruno")
    assert bruno.get(f"/console/personnes-a-rattacher/{unmatched['adt']}?t={world.tenant_b}").status_code == 404


def test_link_by_hand_through_the_shared_service(
    browser_for: Any, users: dict[str, str], world: World, unmatched: dict[str, str], session_factory: Any,
    keyring: Any,
) -> None:  # fmt: skip
    oscar = browser_for("oscar")
    path = f"/console/personnes-a-rattacher/{unmatched['adt']}"
    form = oscar.get(f"{path}?t={world.tenant_a}")
    token = re.search(r'<main.*?name="csrf" value="([^"]+)"', form.text, re.S)
    assert token is not None
    post = f"{path}/rattacher?t={world.tenant_a}"
    # refusals: no CSRF token, no confirmation, a reference the gateway does not know, a lecteur
    assert oscar.post(post, {"personne": "P-A-001", "confirmation": "oui"}).status_code == 403
    no_confirm = oscar.post(post, {"csrf": token.group(1), "personne": "P-A-001"})
    assert no_confirm.status_code == 400 and "Cochez la case" in no_confirm.text
    unknown = oscar.post(post, {"csrf": token.group(1), "personne": "P-INCONNU", "confirmation": "oui"})
    assert unknown.status_code == 400 and "Aucune personne connue" in unknown.text
    lea = browser_for("lea")
    lea_token = lea.csrf(f"{path}?t={world.tenant_a}")
    assert lea.post(post, {"csrf": lea_token, "personne": "P-A-001", "confirmation": "oui"}).status_code == 403
    with session_scope(session_factory) as session:
        assert session.get(UnmatchedPerson, unmatched["adt"]).status == "open"  # type: ignore[union-attr]
    done = oscar.post(post, {"csrf": token.group(1), "personne": "P-A-001", "confirmation": "oui"})
    assert done.status_code == 200 and "2 message(s) rattaché(s)" in done.text  # this one and the same IPP's
    with session_scope(session_factory) as session:
        rows = {r.id: r for r in session.scalars(select(UnmatchedPerson))}
        # the identifier index now matches the next message (the service the API/CLI use)
        assert persons.match(session, world.tenant_a, [IPP]) == "P-A-001"
    assert {k: rows[v].status for k, v in unmatched.items()} == {
        "adt": "linked", "adt_again": "linked", "sdo": "open", "other_essms": "open", "tenant_b": "open",
    }  # fmt: skip
    (linked,) = _events(session_factory, action="person_linked")
    assert linked.actor == f"user:{users['oscar']}" and linked.person_ref == "P-A-001"
    assert sorted(c["unmatched"] for c in linked.detail["changes"]) == sorted(
        [unmatched["adt"], unmatched["adt_again"]]
    )
    assert all(c["before"] == {"status": "open", "person_ref": None} for c in linked.detail["changes"])
    assert all(c["after"] == {"status": "linked", "person_ref": "P-A-001"} for c in linked.detail["changes"])
    again = oscar.post(post, {"csrf": token.group(1), "personne": "P-A-001", "confirmation": "oui"})
    assert again.status_code == 409
    history = oscar.get(f"/console/personnes-a-rattacher?t={world.tenant_a}&statut=linked")
    assert unmatched["adt"] in history.text and "P-A-001" in history.text


def test_another_tenant_gets_what_a_missing_id_gets(
    browser_for: Any, users: dict[str, str], world: World, unmatched: dict[str, str], indicators: None,
    session_factory: Any,
) -> None:  # fmt: skip
    import uuid

    bruno = browser_for("bruno")  # opérateur of tenant B
    missing = bruno.get(f"/console/personnes-a-rattacher/{uuid.uuid4()}?t={world.tenant_b}")
    probes = [
        bruno.get(f"/console/personnes-a-rattacher?t={world.tenant_a}"),
        bruno.get(f"/console/personnes-a-rattacher/{unmatched['adt']}?t={world.tenant_a}"),
        bruno.get(f"/console/personnes-a-rattacher/{unmatched['adt']}?t={world.tenant_b}"),
        bruno.get(f"/console/indicateurs?t={world.tenant_b}&essms={FINESS_A}"),
        bruno.get(f"/console/indicateurs?t={world.tenant_a}&essms={FINESS_A}"),
        bruno.get(f"/console/indicateurs/export?t={world.tenant_b}&essms={FINESS_A}&periode=2026&format=json"),
    ]
    for reply in probes:
        assert reply.status_code == 404 == missing.status_code, reply.url
        assert reply.text == missing.text  # the same page, byte for byte: nothing to infer
    token = bruno.csrf("/console/personnes-a-rattacher")
    form = {"csrf": token, "personne": "P-B-001", "confirmation": "oui"}
    assert (
        bruno.post(f"/console/personnes-a-rattacher/{unmatched['adt']}/rattacher?t={world.tenant_b}", form).status_code
        == 404
    )
    with session_scope(session_factory) as session:
        assert session.get(UnmatchedPerson, unmatched["adt"]).status == "open"  # type: ignore[union-attr]
    own = bruno.get("/console/personnes-a-rattacher")
    assert unmatched["tenant_b"] in own.text and unmatched["adt"] not in own.text
    assert _events(session_factory, actor=f"user:{users['bruno']}", entity_type="indicators") == []
