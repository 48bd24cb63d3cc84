"""Installing the pinned ANS CI-SIS test kit (``TestContenuCDA``) from its archive.

The pin (``kit_pin.json`` beside this module) names the upstream repository, the commit, the
archive URL, the SHA-256 of the archive (when recorded) and the SHA-256 of the kit's *content*:
one line ``<sha256 of the file>  <path>`` per kept file, sorted by path, hashed. The content
digest does not depend on how the archive was compressed, so it can be computed from the
commit's git objects alone; the archive digest is checked before anything is extracted.

``install()`` is atomic: the archive is downloaded next to the destination, checked, extracted
into a temporary folder on the same file system, checked again (content digest, layout), and
only then renamed into place. A half-written kit is never visible under the destination name.

Extraction trusts nothing in the archive: members must sit under one top folder, with relative
paths free of ``..``; links, devices and encrypted members refuse the archive; the member count,
each file's size, the expanded total and (zip) the compression ratio are bounded; every file is
written new (``O_EXCL``, no symlink followed) with mode 0644. Only the kit's data is kept
(``keep``/``drop`` in the pin): no executable, no tooling.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ._kit import PROFILE_SCHEMATRONS, XSD_PATH, Kit, KitNotFound

__all__ = [
    "MARKER",
    "ArchiveRefused",
    "DownloadFailed",
    "InstallError",
    "InstallResult",
    "KitPin",
    "Limits",
    "content_digest",
    "install",
    "installed_pin",
    "load_pin",
]

MARKER = ".dui-kit.json"  # written last into an installed kit; never part of the content digest
CHUNK = 1024 * 1024
#: progress callback: (bytes done, total bytes or None when unknown)
Progress = Callable[[int, int | None], None]


class InstallError(Exception):
    """The kit could not be installed; nothing under the destination was changed."""


class DownloadFailed(InstallError):
    """The archive could not be fetched (offline, refused, not found)."""


class ArchiveRefused(InstallError):
    """The archive or its content is not the pinned one, or is unsafe to extract."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what an archive may make us read and write (the real kit is far below them)."""

    max_download_bytes: int = 512 * 1024 * 1024
    max_members: int = 50_000
    max_file_bytes: int = 64 * 1024 * 1024
    max_expanded_bytes: int = 1024 * 1024 * 1024  # every member, kept or not
    max_zip_ratio: int = 200  # uncompressed / compressed, for members above 1 MiB


@dataclass(frozen=True)
class KitPin:
    repository: str
    commit: str
    url: str
    content_sha256: str
    archive_sha256: str | None = None
    keep: tuple[str, ...] = ("schematrons/", "infrastructure/cda/", "jeuxDeValeurs/", "ExemplesCDA/")
    drop: tuple[str, ...] = ("schematrons/moteur/",)  # path prefixes (a whole path names one file)
    drop_suffixes: tuple[str, ...] = (".jar", ".bat", ".cmd", ".exe", ".dll", ".sh", ".class")
    files: int | None = None  # how many files the content digest covers (for the messages)

    def keeps(self, path: str) -> bool:
        return (
            any(path.startswith(p) for p in self.keep)
            and not any(path.startswith(p) for p in self.drop)
            and not path.lower().endswith(self.drop_suffixes)
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KitPin:
        defaults = cls("", "", "", "")
        return cls(
            repository=str(data["repository"]),
            commit=str(data["commit"]),
            url=str(data["url"]),
            content_sha256=str(data["content_sha256"]),
            archive_sha256=data.get("archive_sha256") or None,
            keep=tuple(data.get("keep", defaults.keep)),
            drop=tuple(data.get("drop", defaults.drop)),
            drop_suffixes=tuple(data.get("drop_suffixes", defaults.drop_suffixes)),
            files=data.get("files"),
        )


def load_pin() -> KitPin:
    """The kit pinned in this repository (``ci_sis/kit_pin.json``)."""
    text = resources.files("ci_sis").joinpath("kit_pin.json").read_text(encoding="utf-8")
    return KitPin.from_dict(json.loads(text))


@dataclass(frozen=True)
class InstallResult:
    path: Path
    commit: str
    files: int
    archive_sha256: str
    already: bool = False  # the destination already held this pinned kit: nothing was done
    notes: list[str] = field(default_factory=list)


def installed_pin(dest: Path) -> dict[str, Any] | None:
    """What the marker of an installed kit says (None when ``dest`` holds no installed kit)."""
    try:
        data = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def install(
    dest: Path,
    *,
    pin: KitPin | None = None,
    url: str | None = None,
    archive: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    limits: Limits = Limits(),
    timeout: float = 30.0,
) -> InstallResult:
    """Install the pinned kit into ``dest`` from ``archive`` (a local file), else from ``url``
    (default: the pin's; ``file://``, ``http://`` or ``https://``).

    Does nothing when ``dest`` already holds the pinned kit (unless ``force``). Raises
    ``DownloadFailed`` when the archive cannot be fetched, ``ArchiveRefused`` when it is not the
    pinned one or is unsafe; in both cases ``dest`` is untouched.
    """
    pin = pin or load_pin()
    dest = Path(dest).absolute()
    current = installed_pin(dest)
    if not force and current is not None and current.get("content_sha256") == pin.content_sha256:
        return InstallResult(dest, pin.commit, int(current.get("files", 0)), str(current.get("archive_sha256")), True)
    _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        source = str(archive) if archive is not None else (url or pin.url)
        if archive is not None:
            try:
                handle, size = archive.open("rb"), archive.stat().st_size
            except OSError as exc:
                raise DownloadFailed(f"cannot read {archive}: {exc.strerror or exc}") from exc
            digest = _copy_limited(handle, work / "archive", size, progress, limits)
        else:
            digest = _download(source, work / "archive", progress, limits, timeout)
        notes: list[str] = []
        if pin.archive_sha256:
            if digest != pin.archive_sha256:
                raise ArchiveRefused(
                    f"archive SHA-256 mismatch: got {digest}, pinned {pin.archive_sha256} ({source}); refused"
                )
        else:
            notes.append(f"the pin records no archive SHA-256 yet; this archive's is {digest} (content verified)")
        tree = work / "kit"
        tree.mkdir()
        _extract(work / "archive", tree, pin, limits)
        files, content = content_digest(tree)
        if content != pin.content_sha256:
            raise ArchiveRefused(
                f"kit content mismatch: got {content} over {files} files, pinned {pin.content_sha256}"
                f" (commit {pin.commit}); refused"
            )
        check_layout(tree)
        marker = {
            "repository": pin.repository,
            "commit": pin.commit,
            "content_sha256": content,
            "archive_sha256": digest,
            "files": files,
            "source": source,
            "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tree / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tree, dest, work)
        return InstallResult(dest, pin.commit, files, digest, notes=notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_replaceable(dest: Path) -> None:
    """Only an empty folder or a kit this module installed is ever replaced."""
    if dest.is_symlink() or (
        dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not installed_pin(dest)))
    ):
        raise InstallError(
            f"{dest} exists and was not made by `dui-gateway kit install`: left as is, nothing installed"
        )


def check_layout(root: Path) -> None:
    """Refuse a tree that is not a usable kit: XSD, schematrons (volets + profiles), value sets."""
    try:
        kit = Kit.locate(root)
    except KitNotFound as exc:
        raise ArchiveRefused(f"not a CI-SIS kit: {exc}") from exc
    if len(kit.volets()) < 2:  # CDA-N1 is always listed
        raise ArchiveRefused("not a CI-SIS kit: no schematrons/CI-SIS_<volet>.sch")
    if not any((root / "jeuxDeValeurs").glob("*.xml")):
        raise ArchiveRefused("not a CI-SIS kit: jeuxDeValeurs/ holds no value set")
    assert (root / XSD_PATH).is_file() and all((root / p).is_file() for p in PROFILE_SCHEMATRONS)


def content_digest(root: Path) -> tuple[int, str]:
    """(file count, SHA-256 of the sorted ``<sha256>  <path>`` lines) of every file under ``root``
    except the marker. Independent of archive format and compression."""
    lines = []
    for path in sorted(_files(root), key=lambda p: unicodedata.normalize("NFC", p.relative_to(root).as_posix())):
        rel = unicodedata.normalize("NFC", path.relative_to(root).as_posix())  # macOS may store NFD names
        if rel == MARKER:
            continue
        h = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                h.update(chunk)
        lines.append(f"{h.hexdigest()}  {rel}\n")
    return len(lines), hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


# --- fetching ------------------------------------------------------------------------------------


def _download(url: str, target: Path, progress: Progress | None, limits: Limits, timeout: float) -> str:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise DownloadFailed(f"cannot read {url}: {exc.strerror or exc}") from exc
        return _copy_limited(handle, target, path.stat().st_size, progress, limits)
    if scheme not in ("http", "https"):
        raise DownloadFailed(f"unsupported URL scheme {scheme!r} ({url}): use https://, http:// or file://")
    import requests

    try:
        response = requests.get(url, stream=True, timeout=(min(timeout, 10.0), timeout))
    except requests.RequestException as exc:
        raise DownloadFailed(f"cannot download {url}: {type(exc).__name__}: {exc}") from exc
    with response:
        if response.status_code != 200:
            raise DownloadFailed(f"cannot download {url}: HTTP {response.status_code}")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limits.max_download_bytes:
            raise ArchiveRefused(f"archive too large: {total} bytes (limit {limits.max_download_bytes})")
        try:
            return _copy_limited(_IterReader(response.iter_content(CHUNK)), target, total, progress, limits)
        except requests.RequestException as exc:
            raise DownloadFailed(f"download of {url} interrupted: {type(exc).__name__}: {exc}") from exc


class _IterReader:
    """A ``read()`` over an iterator of chunks (requests' streamed body)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, _size: int = -1) -> bytes:
        return next(self._chunks, b"")

    def close(self) -> None:
        pass


def _copy_limited(
    source: IO[bytes] | _IterReader, target: Path, total: int | None, progress: Progress | None, limits: Limits
) -> str:
    h = hashlib.sha256()
    done = 0
    try:
        with target.open("xb") as out:
            while chunk := source.read(CHUNK):
                done += len(chunk)
                if done > limits.max_download_bytes:
                    raise ArchiveRefused(f"archive larger than {limits.max_download_bytes} bytes: refused")
                h.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done, total)
    finally:
        source.close()
    return h.hexdigest()


# --- extraction ----------------------------------------------------------------------------------


def _extract(archive: Path, into: Path, pin: KitPin, limits: Limits) -> None:
    with archive.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04"):
        _extract_zip(archive, into, pin, limits)
    else:
        _extract_tar(archive, into, pin, limits)


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.members = 0
        self.expanded = 0
        self.top: str | None = None
        self.seen: set[str] = set()

    def member(self, name: str, size: int) -> str | None:
        """The member's path inside the kit (top folder stripped), None for the top folder itself."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveRefused(f"archive has more than {self.limits.max_members} members: refused")
        if size > self.limits.max_file_bytes:
            raise ArchiveRefused(f"{name!r} is {size} bytes (limit {self.limits.max_file_bytes}): refused")
        self.expanded += max(size, 0)
        if self.expanded > self.limits.max_expanded_bytes:
            raise ArchiveRefused(f"archive expands beyond {self.limits.max_expanded_bytes} bytes: refused")
        if "\x00" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveRefused(f"unsafe member name {name!r}: refused")
        parts = [p for p in PurePosixPath(name).parts if p != "."]
        if not parts or any(p == ".." for p in parts):
            raise ArchiveRefused(f"unsafe member name {name!r}: refused")
        if self.top is None:
            self.top = parts[0]
        elif parts[0] != self.top:
            raise ArchiveRefused(f"member {name!r} outside the archive's top folder {self.top!r}: refused")
        if len(parts) == 1:
            return None
        rel = unicodedata.normalize("NFC", "/".join(parts[1:]))
        if rel in self.seen:
            raise ArchiveRefused(f"member {name!r} appears twice: refused")
        self.seen.add(rel)
        return rel


def _write_member(into: Path, rel: str, source: IO[bytes], size: int) -> None:
    target = into.joinpath(*rel.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    # every folder on the way was made by us (no member is a link), so the target is under `into`
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > size:
                break
            out.write(chunk)
    if written != size:
        raise ArchiveRefused(f"member {rel!r} holds {written} bytes, its header says {size}: refused")


def _extract_tar(archive: Path, into: Path, pin: KitPin, limits: Limits) -> None:
    budget = _Budget(limits)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                    continue  # pax headers are folded into the next member by tarfile
                rel = budget.member(member.name, member.size)
                if member.isdir():
                    continue
                if not member.isreg():
                    raise ArchiveRefused(f"member {member.name!r} is a link or a special file: refused")
                if rel is None or not pin.keeps(rel):
                    continue
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise ArchiveRefused(f"member {member.name!r} has no data: refused")
                with source:
                    _write_member(into, rel, source, member.size)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveRefused(f"corrupted or unreadable archive: {type(exc).__name__}: {exc}") from exc


def _extract_zip(archive: Path, into: Path, pin: KitPin, limits: Limits) -> None:
    budget = _Budget(limits)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = budget.member(info.filename, info.file_size)
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip was not made on Unix
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise ArchiveRefused(f"member {info.filename!r} is a link or a special file: refused")
                if info.flag_bits & 0x1:
                    raise ArchiveRefused(f"member {info.filename!r} is encrypted: refused")
                if info.is_dir():
                    continue
                if info.file_size > 1024 * 1024 and info.file_size > limits.max_zip_ratio * max(info.compress_size, 1):
                    raise ArchiveRefused(f"member {info.filename!r} expands more than {limits.max_zip_ratio}x: refused")
                if rel is None or not pin.keeps(rel):
                    continue
                with zf.open(info) as source:
                    _write_member(into, rel, source, info.file_size)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise ArchiveRefused(f"corrupted or unreadable archive: {type(exc).__name__}: {exc}") from exc


def _swap_into_place(tree: Path, dest: Path, work: Path) -> None:
    """Rename the verified ``tree`` to ``dest``; a previous kit is moved aside first, then removed."""
    old: Path | None = None
    _check_replaceable(dest)
    if dest.exists():
        old = work / "previous"
        os.replace(dest, old)
    try:
        os.replace(tree, dest)
    except OSError:
        if old is not None:
            os.replace(old, dest)
        raise
