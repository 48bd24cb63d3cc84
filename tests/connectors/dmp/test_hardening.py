"""Hostile XML and oversized bodies, against the simulator (over TLS) and the connector's parser."""

from __future__ import annotations

import pytest
import requests

from connectors.dmp._xml import UnsafeXml, parse_xml
from connectors.dmp.soap import read_answer
from connectors.sandbox.dmp import DmpSimulator
from tests.connectors.dmp.conftest import Pki

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>&x;</soap:Body></soap:Envelope>"""
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">'.encode() for i in range(8))
    + b']><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>&a7;</soap:Body></soap:Envelope>'
)
DEEP = (
    b'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
    + b"<a>" * 5000
    + b"</a>" * 5000
    + b"</soap:Body></soap:Envelope>"
)
HOSTILE = {"xxe": XXE, "billion-laughs": LAUGHS, "deep-nesting": DEEP}


def _post(sim: DmpSimulator, pki: Pki, body: bytes) -> requests.Response:
    cert = pki.client.write(pki.folder, "hardening-client")
    return requests.post(
        sim.iti41_url,
        data=body,
        headers={"Content-Type": "application/soap+xml"},
        cert=(str(cert[0]), str(cert[1])),
        verify=str(pki.ca_path),
        timeout=30,
    )


@pytest.mark.parametrize("name", list(HOSTILE))
def test_simulator_refuses_hostile_xml(sim: DmpSimulator, pki: Pki, name: str) -> None:
    resp = _post(sim, pki, HOSTILE[name])
    assert resp.status_code == 400
    assert b"MalformedRequest" in resp.content and b"root:" not in resp.content
    assert sim.store.entries() == []


def test_simulator_refuses_a_huge_body_before_reading_it(sim: DmpSimulator, pki: Pki) -> None:
    import http.client
    import ssl

    cert, key = pki.client.write(pki.folder, "hardening-client")
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection("localhost", sim.port, context=ctx, timeout=10)
    try:
        conn.putrequest("POST", "/dmp/xds/iti41")
        conn.putheader("Content-Type", "application/soap+xml")
        conn.putheader("Content-Length", str(21 * 1024 * 1024))
        conn.endheaders()  # the body is never sent: the answer comes from the headers alone
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_simulator_requires_a_client_certificate(sim: DmpSimulator, pki: Pki) -> None:
    with pytest.raises(requests.exceptions.RequestException):
        requests.post(sim.iti41_url, data=b"<x/>", verify=str(pki.ca_path), timeout=10)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_response_parser_refuses_hostile_xml(name: str) -> None:
    with pytest.raises(UnsafeXml):
        read_answer(HOSTILE[name], "application/soap+xml")


def test_response_parser_refuses_a_huge_answer() -> None:
    with pytest.raises(UnsafeXml, match="exceeds"):
        parse_xml(b"<a>" + b" " * (21 * 1024 * 1024) + b"</a>")


def test_response_parser_reads_an_mtom_answer_with_a_doctype_in_no_part() -> None:
    body = (
        b"--b\r\nContent-ID: <r>\r\nContent-Type: application/xop+xml\r\n\r\n"
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        b'<rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" '
        b'status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/></s:Body></s:Envelope>\r\n--b--\r\n'
    )
    assert read_answer(body, 'multipart/related; boundary="b"; start="<r>"').succeeded
