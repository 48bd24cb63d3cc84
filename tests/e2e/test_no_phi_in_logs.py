"""No personal data in logs: a full flow with DLU (and PPA) records, then every process's output is scanned.

The flow goes through the paths where data tends to leak: an invalid record refused by the API,
transient failures and retries, a permanent refusal (dead letter), an operator replay from the
CLI, and normal deliveries. The names, INS and birth dates of the records must appear nowhere
in what the API, the worker, the sandbox and the CLI printed (raw, JSON-escaped, or without accents).
"""

from __future__ import annotations

import copy
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import require_dlu, sample_submissions, with_finess
from tests.peers.gateway import Deployment, post_submissions, provision, webhook_routing

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_NAME_KEYS = frozenset(
    {"family_name", "given_name", "birth_family_name", "birth_given_names", "used_family_name", "used_given_name"}
)
TERMINAL = frozenset({"delivered", "partially_failed", "failed", "rejected", "cancelled"})


def _walk(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    else:
        yield key, node


def personal_data(record: dict[str, Any]) -> set[str]:
    """Names (of the person and of everyone in the record), INS matricules and birth dates."""
    out: set[str] = set()
    for key, value in _walk(record):
        if not isinstance(value, str):
            continue
        if key in _NAME_KEYS:
            out.add(value)
        elif key == "matricule":
            out.add(value)
        elif key == "birth_date":
            y, m, d = value.split("-")
            out.update({value, f"{y}{m}{d}", f"{d}/{m}/{y}"})
    return out


def _variants(needle: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", needle).encode("ascii", "ignore").decode()
    return {needle.lower(), json.dumps(needle)[1:-1].lower(), folded.lower()}


def leaks(text: str, needles: set[str]) -> list[str]:
    haystack = text.lower()
    return sorted(n for n in needles if any(v and v in haystack for v in _variants(n)))


def test_scanner_finds_escaped_and_folded_forms() -> None:
    needles = {"DÉMO-LÉVÊQUE", "238037505612378", "1938-03-14"}
    assert leaks('{"event": "x", "name": "D\\u00c9MO-L\\u00c9V\\u00caQUE"}', needles) == ["DÉMO-LÉVÊQUE"]
    assert leaks("name=demo-leveque", needles) == ["DÉMO-LÉVÊQUE"]
    assert leaks("ins 238037505612378 born 14/03/1938", personal_data({"x": {"birth_date": "1938-03-14"}})) == [
        "14/03/1938"
    ]
    assert leaks("nothing here", needles) == []


def test_full_flow_logs_carry_no_personal_data(deployment: Deployment, kit_dir: Path) -> None:
    require_dlu()
    dep = deployment
    dep.env["DUI_GATEWAY_MAX_ATTEMPTS"] = "3"
    dep.migrate()
    tenant = provision(dep.db_url)
    sandbox = dep.start_sandbox()
    dep.write_routing(
        webhook_routing(
            sandbox.url, destinations={"dmp-sbx": "dmp", "mss-sbx": "mssante"}, document_types=["dlu", "ppa"]
        )
    )
    submissions = [(t, with_finess(r, tenant.finess)) for t, r in sample_submissions()]
    needles: set[str] = set()
    for _t, r in submissions:
        needles |= personal_data(r)
    assert len(submissions) >= 3 and len(needles) >= 9
    first_type, first = next((t, r) for t, r in submissions if t == "dlu")

    api = dep.start_api()
    dep.start_worker("worker")
    # an invalid record: the 422 names the field, the logs must not quote the value
    broken = copy.deepcopy(first)
    broken["person"]["traits"]["birth_date"] = "2999-01-01"
    post_submissions(api, tenant.api_key, [("dlu", broken)], expect=422)
    # two transient failures, then one permanent refusal (dead letter), then normal deliveries
    sandbox.control(fail_next=2, status=503)
    ids = post_submissions(api, tenant.api_key, [(first_type, first)])
    dep.wait_until(
        lambda: len([r for r in sandbox.received() if r["outcome"] == "failed"]) == 2, timeout=120, what="503s"
    )
    sandbox.control(reject_next=1, status=422)
    ids += post_submissions(api, tenant.api_key, [(t, r) for t, r in submissions if r is not first])

    def settled() -> bool:
        statuses = dep.submission_statuses()
        return sum(statuses.values()) == len(ids) and set(statuses) <= TERMINAL

    dep.wait_until(settled, timeout=240, what="all submissions settled")
    dead = [d for d in dep.deliveries() if d.status == "dead"]
    assert len(dead) == 1, "the injected 422 dead-letters exactly one delivery"
    dep.run("replay", "--delivery", dead[0].id)
    dep.wait_until(lambda: all(d.status == "delivered" for d in dep.deliveries()), timeout=120, what="replayed")
    assert len(sandbox.accepted()) == len(dep.deliveries())
    assert dep.submission_statuses() == {"delivered": len(ids)}

    logs = dep.logs()
    assert "submission" in logs and "sandbox" in logs  # the scan looks at real output
    assert leaks(logs, needles) == []


def test_no_query_string_path_segment_or_header_reaches_the_server_logs(deployment: Deployment) -> None:
    """A real ``dui-gateway serve`` process (uvicorn included): an INS put in query strings, path
    segments and headers appears nowhere in its output."""
    import socket

    import requests

    ins = "283127512312345"
    dep = deployment
    dep.migrate()
    tenant = provision(dep.db_url)
    api = dep.start_api()
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    http = requests.Session()
    statuses = [
        http.get(f"{api}/fhir/r4/DocumentReference", params={"patient": ins}, headers=auth).status_code,
        http.get(f"{api}/v1/submissions", params={"person_ref": ins}, headers=auth).status_code,
        http.get(f"{api}/v1/submissions/{ins}", headers=auth).status_code,
        http.get(f"{api}/fhir/r4/DocumentReference/{ins}", headers=auth).status_code,
        http.get(f"{api}/fhir/r4/Patient/{ins}", headers=auth).status_code,
        http.get(f"{api}/no/such/route/{ins}?q={ins}").status_code,
        http.get(f"{api}/v1/submissions", headers={"Authorization": f"Bearer {ins}"}).status_code,
        http.get(f"{api}/healthz", headers={"X-Correlation-ID": ins, "User-Agent": ins, "Referer": ins}).status_code,
        http.get(f"{api}/healthz", headers={"X-Correlation-ID": f"req-{ins}"}).status_code,
        http.post(
            f"{api}/v1/submissions?x={ins}", data=b"{", headers={**auth, "Content-Type": "application/json"}
        ).status_code,
    ]
    assert statuses == [200, 200, 404, 404, 404, 404, 401, 200, 200, 400]
    # a request uvicorn itself refuses (malformed header line)
    host, port = api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET /healthz?patient={ins} HTTP/1.1\r\nHost: x\r\nBad Header {ins}\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    dep.wait_until(lambda: dep.logs().count('"request"') >= 9, timeout=10, what="access lines written")
    logs = dep.logs()
    assert '"route": "/fhir/r4/DocumentReference"' in logs  # the access lines exist, without the values
    assert ins not in logs
