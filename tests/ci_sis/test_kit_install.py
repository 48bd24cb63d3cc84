"""``dui-gateway kit install``: the pinned kit is installed only when it is exactly the pinned one,
atomically, and hostile archives are refused. Archives are built here (a small synthetic kit, and
the real kit from CISIS_KIT_DIR) and served from local files or a loopback HTTP server: no network."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import re
import socket
import tarfile
import threading
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ci_sis._kit import Kit
from ci_sis.install import MARKER, ArchiveRefused, DownloadFailed, InstallError, KitPin, Limits, install, load_pin
from ci_sis.kit_cli import EXIT_OFFLINE, EXIT_REFUSED, app

TOP = "TestContenuCDA-3-0-abc"
MINI = {
    "infrastructure/cda/CDA_extended.xsd": b"<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'/>",
    "schematrons/CI-SIS_DLU-EHPAD-DLU_2022.01.sch": b"<schema/>",
    "schematrons/profils/CI-SIS_ModelesDeContenusCDA.sch": b"<schema/>",
    "schematrons/profils/CI-SIS_Modeles_ANS.sch": b"<schema/>",
    "schematrons/rapports/01_Modèles.xml": b"<r/>",  # a non-ASCII name, as upstream has
    "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml": b"<RetrieveValueSetResponse/>",
    "ExemplesCDA/DLU-EHPAD-DLU_2022.01.xml": b"<ClinicalDocument/>",
}
NOT_KEPT = {
    "README.md": b"upstream readme",
    "schematrons/moteur/saxon9he.jar": b"PK tool",
    "FeuilleDeStyle/cda.xsl": b"<xsl/>",
}


def digest_of(files: dict[str, bytes]) -> str:
    """The content digest, computed independently of ci_sis.install."""
    lines = sorted(
        (unicodedata.normalize("NFC", p), hashlib.sha256(b).hexdigest()) for p, b in files.items() if b is not None
    )
    return hashlib.sha256("".join(f"{h}  {p}\n" for p, h in lines).encode()).hexdigest()


def make_pin(files: dict[str, bytes], archive: Path | None = None, **changes: object) -> KitPin:
    pin = KitPin(
        repository="https://example.invalid/ansforge/TestContenuCDA-3-0",
        commit="a" * 40,
        url="https://example.invalid/never-used.tar.gz",
        content_sha256=digest_of(files),
        archive_sha256=hashlib.sha256(archive.read_bytes()).hexdigest() if archive else None,
    )
    return dataclasses.replace(pin, **changes)  # type: ignore[arg-type]


def write_tar(
    path: Path, files: dict[str, bytes], *, top: str = TOP, extra: list[tarfile.TarInfo] | None = None
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return path


def write_zip(path: Path, files: dict[str, bytes], *, top: str = TOP) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}", data)
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


@pytest.fixture
def mini_tar(tmp_path: Path) -> Path:
    return write_tar(tmp_path / "kit.tar.gz", {**MINI, **NOT_KEPT})


def test_installs_from_a_file_url_and_keeps_only_the_kit_data(mini_tar: Path, tmp_path: Path) -> None:
    dest = tmp_path / "var" / "cisis-kit"
    pin = make_pin(MINI, mini_tar)
    result = install(dest, pin=pin, url=mini_tar.as_uri())
    assert not result.already and result.files == len(MINI)
    for name, data in MINI.items():
        assert (dest / name).read_bytes() == data
    assert not (dest / "README.md").exists() and not (dest / "schematrons/moteur").exists()
    assert not (dest / "FeuilleDeStyle").exists()
    marker = json.loads((dest / MARKER).read_text())
    assert marker["content_sha256"] == pin.content_sha256 and marker["archive_sha256"] == pin.archive_sha256
    assert Kit.locate(dest).volets() == ["DLU-EHPAD-DLU_2022.01", "CDA-N1"]
    assert leftovers(dest.parent) == []
    # the second run finds it installed and downloads nothing
    assert install(dest, pin=pin, url=(tmp_path / "gone.tar.gz").as_uri()).already


def test_installs_from_a_zip_given_as_a_local_file(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "kit.zip", {**MINI, **NOT_KEPT})
    dest = tmp_path / "kit"
    seen: list[tuple[int, int | None]] = []
    install(dest, pin=make_pin(MINI, archive), archive=archive, progress=lambda d, t: seen.append((d, t)))
    assert (dest / "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml").is_file()
    assert seen and seen[-1] == (archive.stat().st_size, archive.stat().st_size)


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Files(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_installs_over_http_and_says_when_the_archive_cannot_be_fetched(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, base = http_root
    archive = write_tar(root / "kit.tar.gz", MINI)
    pin = make_pin(MINI, archive)
    install(tmp_path / "kit", pin=pin, url=f"{base}/kit.tar.gz")
    assert (tmp_path / "kit" / MARKER).is_file()
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        install(tmp_path / "other", pin=pin, url=f"{base}/missing.tar.gz")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(DownloadFailed, match="cannot download"):
        install(tmp_path / "other", pin=pin, url=f"http://127.0.0.1:{closed}/kit.tar.gz", timeout=5)
    with pytest.raises(DownloadFailed, match="scheme"):
        install(tmp_path / "other", pin=pin, url="ftp://127.0.0.1/kit.tar.gz")
    assert not (tmp_path / "other").exists() and leftovers(tmp_path) == []


def test_a_wrong_archive_hash_is_refused_before_extraction(tmp_path: Path) -> None:
    # the archive also holds a traversal member: the hash refuses it before the extractor reads it
    archive = write_tar(tmp_path / "kit.tar.gz", MINI, extra=[_file(f"{TOP}/../../evil.sch")])
    pin = make_pin(MINI, archive, archive_sha256="0" * 64)
    with pytest.raises(ArchiveRefused, match="archive SHA-256 mismatch"):
        install(tmp_path / "kit", pin=pin, archive=archive)
    assert not (tmp_path / "kit").exists() and leftovers(tmp_path) == []
    with pytest.raises(ArchiveRefused, match="unsafe member name"):  # the same archive without the pin
        install(tmp_path / "kit", pin=make_pin(MINI), archive=archive)


def test_a_different_content_is_refused_and_the_installed_kit_stays(mini_tar: Path, tmp_path: Path) -> None:
    dest = tmp_path / "kit"
    install(dest, pin=make_pin(MINI, mini_tar), archive=mini_tar)
    before = (dest / MARKER).read_text()
    changed = write_tar(tmp_path / "changed.tar.gz", {**MINI, "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml": b"<x/>"})
    with pytest.raises(ArchiveRefused, match="content mismatch"):
        install(dest, pin=make_pin(MINI), archive=changed, force=True)
    added = write_tar(tmp_path / "added.tar.gz", {**MINI, "schematrons/extra.sch": b"<schema/>"})
    with pytest.raises(ArchiveRefused, match="content mismatch"):
        install(dest, pin=make_pin(MINI), archive=added, force=True)
    assert (dest / MARKER).read_text() == before
    assert (dest / "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml").read_bytes() == MINI[
        "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml"
    ]
    assert leftovers(tmp_path) == []


def test_a_corrupted_archive_is_refused(mini_tar: Path, tmp_path: Path) -> None:
    data = bytearray(mini_tar.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    corrupted = tmp_path / "corrupted.tar.gz"
    corrupted.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(mini_tar.read_bytes()[: len(data) // 2])
    for bad in (corrupted, truncated):
        with pytest.raises(ArchiveRefused):
            install(tmp_path / "kit", pin=make_pin(MINI), archive=bad)
        assert not (tmp_path / "kit").exists() and leftovers(tmp_path) == []


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_file(f"{TOP}/../../evil.sch"), "unsafe member name"),
        (_file(f"{TOP}/schematrons/../../../evil.sch"), "unsafe member name"),
        (_file("/etc/evil.sch"), "unsafe member name"),
        (_file("other-top/schematrons/x.sch"), "outside the archive's top folder"),
        (_link(f"{TOP}/schematrons/link.sch", "/etc/passwd"), "link or a special file"),
        (_link(f"{TOP}/jeuxDeValeurs", "/tmp"), "link or a special file"),
        (_link(f"{TOP}/schematrons/hard.sch", "/etc/passwd", tarfile.LNKTYPE), "link or a special file"),
        (_file(f"{TOP}/schematrons/CI-SIS_DLU-EHPAD-DLU_2022.01.sch"), "appears twice"),
    ],
)
def test_hostile_tar_members_are_refused(member: tarfile.TarInfo, message: str, tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "evil.tar.gz", MINI, extra=[member])
    with pytest.raises(ArchiveRefused, match=message):
        install(tmp_path / "var" / "kit", pin=make_pin(MINI), archive=archive)
    assert not (tmp_path / "var" / "kit").exists() and not (tmp_path / "evil.sch").exists()
    assert not Path("/etc/evil.sch").exists()


def test_a_zip_symlink_and_a_zip_bomb_are_refused(tmp_path: Path) -> None:
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        for name, data in MINI.items():
            zf.writestr(f"{TOP}/{name}", data)
        info = zipfile.ZipInfo(f"{TOP}/schematrons/link.sch")
        info.external_attr = (0o120777 << 16) | 0
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveRefused, match="link or a special file"):
        install(tmp_path / "kit", pin=make_pin(MINI), archive=link)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in MINI.items():
            zf.writestr(f"{TOP}/{name}", data)
        zf.writestr(f"{TOP}/jeuxDeValeurs/bomb.xml", bytes(8 * 1024 * 1024))  # ~8 KiB compressed
    with pytest.raises(ArchiveRefused, match="expands more than"):
        install(tmp_path / "kit", pin=make_pin(MINI), archive=bomb)
    assert not (tmp_path / "kit").exists()


def test_size_limits_bound_a_gzip_bomb(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "big.tar.gz", {**MINI, "jeuxDeValeurs/big.xml": bytes(4 * 1024 * 1024)})
    with pytest.raises(ArchiveRefused, match="limit"):
        install(tmp_path / "kit", pin=make_pin(MINI), archive=archive, limits=Limits(max_file_bytes=1024 * 1024))
    with pytest.raises(ArchiveRefused, match="expands beyond"):
        install(tmp_path / "kit", pin=make_pin(MINI), archive=archive, limits=Limits(max_expanded_bytes=2 * 1024**2))
    with pytest.raises(ArchiveRefused, match="larger than"):
        install(tmp_path / "kit", pin=make_pin(MINI), archive=archive, limits=Limits(max_download_bytes=1000))
    with pytest.raises(ArchiveRefused, match="more than 3 members"):
        install(tmp_path / "kit", pin=make_pin(MINI), archive=archive, limits=Limits(max_members=3))


def test_an_archive_without_the_kit_layout_is_refused(tmp_path: Path) -> None:
    partial = {k: v for k, v in MINI.items() if not k.startswith("jeuxDeValeurs/")}
    archive = write_tar(tmp_path / "partial.tar.gz", partial)
    with pytest.raises(ArchiveRefused, match="jeuxDeValeurs"):
        install(tmp_path / "kit", pin=make_pin(partial), archive=archive)
    no_xsd = {k: v for k, v in MINI.items() if not k.startswith("infrastructure/")}
    archive = write_tar(tmp_path / "noxsd.tar.gz", no_xsd)
    with pytest.raises(ArchiveRefused, match=r"CDA_extended\.xsd"):
        install(tmp_path / "kit", pin=make_pin(no_xsd), archive=archive)
    assert not (tmp_path / "kit").exists()


def test_a_folder_it_did_not_make_is_never_replaced(mini_tar: Path, tmp_path: Path) -> None:
    dest = tmp_path / "kit"
    dest.mkdir()
    (dest / "mine.txt").write_text("a user's file")
    with pytest.raises(InstallError, match="not made by"):
        install(dest, pin=make_pin(MINI, mini_tar), archive=mini_tar)
    assert (dest / "mine.txt").read_text() == "a user's file"


def test_the_real_kit_installs_over_http(kit_dir: Path, http_root: tuple[Path, str], tmp_path: Path) -> None:
    """The CI-SIS kit of CISIS_KIT_DIR, packed as upstream packs it, goes through the whole path."""
    pin = load_pin()
    files = {}
    for path in sorted(kit_dir.rglob("*")):
        rel = path.relative_to(kit_dir).as_posix()
        if path.is_file() and not path.is_symlink() and pin.keeps(rel):
            files[rel] = path.read_bytes()
    root, base = http_root
    write_tar(root / "kit.tar.gz", {**files, "README.md": b"readme"}, top=f"TestContenuCDA-3-0-{pin.commit}")
    dest = tmp_path / "var" / "cisis-kit"
    result = install(dest, pin=dataclasses.replace(pin, content_sha256=digest_of(files)), url=f"{base}/kit.tar.gz")
    assert result.files == len(files) > 2000
    kit = Kit.locate(dest)
    assert "DLU-EHPAD-DLU_2022.01" in kit.volets() and len(kit.schematrons("DLU-EHPAD-DLU_2022.01")) == 3


def test_the_repository_pin_is_well_formed_and_matches_the_kit_provenance() -> None:
    pin = load_pin()
    assert re.fullmatch(r"[0-9a-f]{40}", pin.commit)
    assert re.fullmatch(r"[0-9a-f]{64}", pin.content_sha256)
    assert pin.archive_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", pin.archive_sha256)
    assert pin.url.startswith("https://") and pin.commit in pin.url
    assert pin.repository.endswith("/ansforge/TestContenuCDA-3-0")
    assert not pin.keeps("schematrons/moteur/saxon9he.jar") and not pin.keeps("schematrons/x/tool.JAR")
    assert pin.keeps("schematrons/CI-SIS_DLU-EHPAD-DLU_2022.01.sch") and pin.keeps("jeuxDeValeurs/JDV_J07.xml")
    readme = Path(os.environ.get("CISIS_KIT_DIR", "/nonexistent")) / "README.md"
    if readme.is_file():  # the data copy says where it came from: the pin is the same snapshot
        text = readme.read_text(encoding="utf-8")
        assert pin.commit in text and "ansforge/TestContenuCDA-3-0" in text


def test_cli_exit_codes(mini_tar: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    refused = runner.invoke(app, ["install", "--archive", str(garbage), "--dest", str(tmp_path / "k"), "--quiet"])
    assert refused.exit_code == EXIT_REFUSED, refused.output
    assert "nothing installed" in refused.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = f"http://127.0.0.1:{closed}/kit.tar.gz"
    offline = runner.invoke(app, ["install", "--url", url, "--dest", str(tmp_path / "k"), "--quiet"])
    assert offline.exit_code == EXIT_OFFLINE, offline.output
    assert "CISIS_KIT_DIR" in offline.output
    assert not (tmp_path / "k").exists()
    status = runner.invoke(app, ["status", "--dest", str(tmp_path / "k")], env={"CISIS_KIT_DIR": ""})
    assert status.exit_code == 1 and "kit install" in status.output


def test_the_demo_uses_the_installed_kit_only_once_complete(mini_tar: Path, tmp_path: Path) -> None:
    from gateway.demo import installed_kit

    var = tmp_path / "var"
    assert installed_kit(var) is None
    (var / "cisis-kit" / "schematrons").mkdir(parents=True)  # a half-copied folder is not a kit
    assert installed_kit(var) is None
    (var / "cisis-kit" / "schematrons").rmdir()
    install(var / "cisis-kit", pin=make_pin(MINI, mini_tar), archive=mini_tar)
    assert installed_kit(var) == var / "cisis-kit"
