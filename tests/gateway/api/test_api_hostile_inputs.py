"""The hostile input suite, at every HTTP entry point: ``POST /v1/submissions``, FHIR ``$validate``
and ``POST /inbound/{source}`` (the CI-SIS validator and its CLI: tests/ci_sis/test_cisis_hostile.py).

XXE variants and billion laughs (as XML, where JSON is expected), JSON nested thousands deep, NaN,
overflowing and 5,000-digit numbers, duplicate members, invalid UTF-8, and 50 MB bodies with and
without Content-Length: each is refused with a clean 4xx (problem document or OperationOutcome),
never a 5xx, nothing is stored, and the server's memory stays bounded (the 50 MB body is cut off
at the limit while it is read)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.webhook.receipts import WebhookReceiptSettings, WebhookReceiptSource
from connectors.webhook.signing import new_secret
from gateway.routing import ConfiguredSource
from gateway.storage.models import InboundMessage, Submission
from tests.gateway.api.live import Api
from tests.gateway.api.support import bearer

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p; <!ENTITY x SYSTEM "file:///etc/passwd">]>
<r>&x;</r>"""
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a0 "lol">'
    + b"".join(b'<!ENTITY a%d "%s">' % (i, b"".join(b"&a%d;" % (i - 1) for _ in range(10))) for i in range(1, 10))
    + b"]><r>&a9;</r>"
)

HOSTILE: dict[str, tuple[bytes, str]] = {
    "xxe-as-json": (XXE, "application/json"),
    "xxe-as-xml": (XXE, "application/xml"),
    "billion-laughs": (LAUGHS, "application/json"),
    # under the test server's 64 KiB body limit, so the parser itself meets the nesting
    "deep-json": (b'{"a":' * 9_000 + b"1" + b"}" * 9_000, "application/json"),
    "deep-array": (b"[" * 30_000 + b"]" * 30_000, "application/json"),
    "nan": (b'{"document_type": "dlu", "record": {"x": NaN}}', "application/json"),
    "overflow": (b'{"document_type": "dlu", "record": {"x": 1e999}}', "application/json"),
    "many-digits": (b'{"document_type": "dlu", "record": {"x": ' + b"7" * 5000 + b"}}", "application/json"),
    "duplicate-keys": (b'{"document_type": "dlu", "record": {}, "record": {"a": 1}}', "application/json"),
    "invalid-utf8": (b'{"document_type": "dlu", "record": {"x": "\xc3\x28\xff"}}', "application/json"),
    "utf16-bom": ('{"document_type": "dlu", "record": {}}'.encode("utf-16"), "application/json"),
    "empty": (b"", "application/json"),
}


@pytest.fixture
def inbound_source(runtime: Any, tenant: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TEST_HOSTILE_SECRET", new_secret())
    source = WebhookReceiptSource(
        WebhookReceiptSettings.model_validate({"signing_secrets": ["env:TEST_HOSTILE_SECRET"]})
    )
    runtime.sources = {"receipts": ConfiguredSource("receipts", source, tenant.code, ())}
    return runtime


def _entry_points(tenant: Any) -> list[tuple[str, dict[str, str]]]:
    return [
        ("/v1/submissions", bearer(tenant.api_key)),
        ("/fhir/r4/$validate", bearer(tenant.api_key)),
        ("/fhir/r4/Patient/$validate", bearer(tenant.api_key)),
        ("/inbound/receipts", {}),
    ]


def _stored(runtime: Any) -> tuple[int, int]:
    with runtime.session_factory() as session:
        return (
            int(session.scalar(select(func.count()).select_from(Submission)) or 0),
            int(session.scalar(select(func.count()).select_from(InboundMessage)) or 0),
        )


def _clean_refusal(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    media_type = response.headers["content-type"]
    assert media_type.startswith(("application/problem+json", "application/fhir+json")), media_type
    assert "Traceback" not in response.text and "/etc/passwd" not in response.text and "root:" not in response.text


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bodies_are_refused_cleanly_everywhere(
    name: str, client: Api, tenant: Any, inbound_source: Any
) -> None:
    body, media_type = HOSTILE[name]
    for path, headers in _entry_points(tenant):
        response = client.post(path, data=body, headers={**headers, "Content-Type": media_type})
        _clean_refusal(response)
    assert _stored(inbound_source) == (0, 0)


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"invalid-utf8", "utf16-bom"}))  # the scheme signs UTF-8
def test_hostile_bodies_with_a_valid_signature_never_break_the_inbound_source(
    name: str, client: Api, inbound_source: Any
) -> None:
    """Signed by the peer, the content is the peer's problem: kept with a note or refused, never a 5xx."""
    import os

    from connectors.webhook.signing import sign_headers

    body, media_type = HOSTILE[name]
    headers = sign_headers([os.environ["TEST_HOSTILE_SECRET"]], msg_id=f"msg-{name}", body=body)
    response = client.post("/inbound/receipts", data=body, headers={**headers, "Content-Type": media_type})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text and "root:" not in response.text


def _chunks(total: int, size: int = 1024 * 1024) -> Iterator[bytes]:
    sent = 0
    head = b'{"document_type": "dlu", "record": {"x": "'
    yield head
    sent += len(head)
    while sent < total:
        yield b"A" * size
        sent += size


@pytest.mark.parametrize("with_length", [True, False])
def test_a_50_mb_body_is_cut_off_with_bounded_memory(
    with_length: bool, client: Api, tenant: Any, inbound_source: Any
) -> None:
    total = 50 * 1024 * 1024
    for path, headers in _entry_points(tenant):
        tracemalloc.start()
        try:
            if with_length:
                data: Any = b"A" * total
                response = client.post(path, data=data, headers={**headers, "Content-Type": "application/json"})
                del data
            else:  # chunked: no Content-Length to refuse up front, the limit is counted while reading
                response = client.post(
                    path, data=_chunks(total), headers={**headers, "Content-Type": "application/json"}
                )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert response.status_code == 413, (path, response.status_code, response.text[:200])
        _clean_refusal(response)
        server_side = peak - (total if with_length else 0)  # the client's own copy of the body is traced too
        assert server_side < 16 * 1024 * 1024, (path, peak)
    assert _stored(inbound_source) == (0, 0)
