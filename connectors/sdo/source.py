"""The ``sdo`` source: polls the SI-SdO for the ESSMS's orientation decisions (IG flux 1.1-1.4, optionally 5).

One source per ESSMS (the SI-SdO filters what it returns by the authenticated client). Each poll:

1. searches ``GET [base]/DocumentReference?type=57830-2&_lastUpdated=gt<since>&_elements=id``
   (flux 1.1), following ``next`` links (same origin as ``base_url`` only: the token must not leak);
   ``since`` is the cursor minus ``overlap_hours`` (the IG's nominal window is J-1), or
   ``first_run_days`` ago (the IG's J-30) when there is no cursor yet;
2. skips the ids already stored at that version (``seen``), fetches each other one
   (``GET [base]/DocumentReference/<id>``, flux 1.3) oldest first and hands it to the sink with
   ``external_id`` = ``decision:<idNat_Decision or mdph:idDecision>:v<versionId>`` (the sink keeps
   the first copy: a duplicate notification or a re-poll stores nothing new, while a cancellation
   or a reactivation is a new version, hence a new message);
3. only after every candidate is stored, moves the cursor to the search's own time (the server's
   ``Bundle.meta.lastUpdated``, else its ``Date`` header): an outage, a crash or a failed fetch
   leaves the cursor where it was, and the next poll catches up.

The cursor lives in a small JSON state file (``state_file``, replaced atomically) because the
:class:`~connectors.base.InboundSink` is write-only. Losing the file costs one J-30 catch-up,
never a duplicate: the sink's ``(source, external_id)`` uniqueness absorbs it. ``seen`` only saves
fetches. Run one poller per source; a second one is harmless (same deduplication).

``interpret`` turns a stored DocumentReference into an :class:`~connectors.base.InboundEvent`
``sdo.decision`` whose ``series`` is the decision (idNat_Decision, else ``mdph:<idDecision>``), so
the DUI sees versions of a decision in the order they were stored. It never raises: hostile
content (not JSON, nested deeper than 64 levels, wrong types, ids too long, larger than the
limit) gives a note, or an event saying what could not be read.

With ``statuses: true`` it also polls ``GET [base]/Task?_lastUpdated=gt<since>`` (flux 5: the
person's status in other ESSMS) into ``sdo.status`` events (series: the decision).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors._secrets import SecretRef
from connectors.base import (
    ConnectorError,
    Health,
    InboundEvent,
    InboundMessage,
    InboundSink,
    Interpretation,
    TransientError,
)
from connectors.fhir._http import FHIR_JSON, FhirContentError, answer_error, parse_json
from connectors.fhir._oauth import ClientIdentity, TokenCache
from connectors.fhir.client import Auth, FhirClient
from connectors.sdo._config import SdoEndpoint, verify_of
from profiles.definitions.sdo import INPUT_TASK_CS

__all__ = ["SdoSource", "SdoSourceSettings"]

_log = structlog.get_logger(__name__)

DECISION_TYPE = "57830-2"
EVALUATION_TYPE = "51848-0"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_IDENT = 128
_MAX_PAGES = 1000
_HARD_MAX = 32 * 1024 * 1024
_STATE_VERSION = 1


class SdoSourceSettings(SdoEndpoint):
    """One ESSMS's polling of the SI-SdO.

    Its OAuth client (``client_id``, ``client_secret`` as ``env:``/``file:`` reference) and/or its
    certificate (``certificate_file``, ``private_key_file``: PEM files readable by the worker) are
    given here: sources do not receive the gateway's per-ESSMS credentials.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    essms_finess: str = Field(pattern=r"^[0-9]{9}$")
    state_file: str = Field(min_length=1)
    client_id: str | None = Field(default=None, max_length=256)
    client_secret: SecretRef | None = None
    certificate_file: str | None = None
    private_key_file: str | None = None
    poll_seconds: float = Field(default=300.0, ge=0.05, le=86400)
    first_run_days: int = Field(default=30, ge=1, le=366)
    overlap_hours: float = Field(default=24.0, ge=0, le=24 * 31)
    page_size: int = Field(default=50, ge=1, le=1000)
    document_types: tuple[str, ...] = (DECISION_TYPE,)
    statuses: bool = False
    max_document_bytes: int = Field(default=8 * 1024 * 1024, gt=0, le=_HARD_MAX)

    @field_validator("document_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in (DECISION_TYPE, EVALUATION_TYPE)]
        if unknown or not value:
            raise ValueError(f"document_types are {DECISION_TYPE} and/or {EVALUATION_TYPE}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> SdoSourceSettings:
        if "oauth" in self.auth and not (self.client_id and self.client_secret):
            raise ValueError(f"auth {self.auth!r} needs client_id and client_secret (env:NAME or file:/path)")
        if "mtls" in self.auth and not (self.certificate_file and self.private_key_file):
            raise ValueError(f"auth {self.auth!r} needs certificate_file and private_key_file")
        return self


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _text(value: Any, limit: int = _MAX_IDENT) -> str | None:
    if not isinstance(value, str):
        return None
    text: str = value.strip()
    if not text or len(text) > limit or not text.isprintable():
        return None
    return text


# -- the state file -----------------------------------------------------------------------------
class _State:
    """``{"version": 1, "feeds": {feed: {"cursor": instant, "seen": {id: [marker, lastUpdated]}}}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.feeds: dict[str, dict[str, Any]] = {}
        self.load()

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            _log.warning("sdo_state_unreadable", path=str(self.path))  # a J-30 catch-up follows, no loss
            return
        feeds = raw.get("feeds") if isinstance(raw, dict) else None
        if isinstance(feeds, dict):
            self.feeds = {k: v for k, v in feeds.items() if isinstance(v, dict)}

    def feed(self, name: str) -> dict[str, Any]:
        feed = self.feeds.setdefault(name, {})
        if not isinstance(feed.get("seen"), dict):
            feed["seen"] = {}
        return feed

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"version": _STATE_VERSION, "feeds": self.feeds}, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".sdo-state-", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


# -- reading what the SI-SdO sends ----------------------------------------------------------------
def _identifiers(resource: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(idDecision, idNat_Decision): identifier use ``usual`` and ``official`` (sdo-document-reference)."""
    usual = official = None
    items = resource.get("identifier")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        value = _text(item.get("value"))
        if item.get("use") == "usual" and usual is None:
            usual = value
        elif item.get("use") == "official" and official is None:
            official = value
    return usual, official


def _series(id_decision: str | None, id_nat: str | None) -> str | None:
    if id_nat:
        return id_nat
    return f"mdph:{id_decision}" if id_decision else None


def _marker(resource: Mapping[str, Any]) -> str | None:
    meta = resource.get("meta")
    if not isinstance(meta, Mapping):
        return None
    version = _text(meta.get("versionId"), 64)
    if version:
        return f"v{version}"
    updated = _parse_instant(meta.get("lastUpdated"))
    return f"t{_instant(updated)}" if updated else None


def _task_values(resource: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    items = resource.get("input")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), Mapping):
            continue
        codings = item["type"].get("coding")
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, Mapping) and coding.get("system") == INPUT_TASK_CS:
                code = _text(coding.get("code"), 64)
                value = next((v for k, v in item.items() if k.startswith("value")), None)
                if code:
                    out[code] = value
    return out


def _coded(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    codings = value.get("coding")
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, Mapping) and _text(coding.get("code"), 64):
            out = {"code": str(coding["code"])}
            for key in ("system", "display"):
                text = _text(coding.get(key), 256)
                if text:
                    out[key] = text
            return out
    return None


def _ident_value(value: Any) -> str | None:
    return _text(value.get("value")) if isinstance(value, Mapping) else _text(value)


class _Unfit(ValueError):
    """Stored content that is no usable SDO resource (the note, never the content)."""


def _decision_event(data: Mapping[str, Any], finess: str, max_bytes: int) -> InboundEvent:
    rid = _text(data.get("id"), 64)
    id_decision, id_nat = _identifiers(data)
    series = _series(id_decision, id_nat)
    if series is None:
        raise _Unfit("the DocumentReference has no idDecision (identifier use usual) nor idNat_Decision")
    status = data.get("status") if data.get("status") in ("current", "superseded", "entered-in-error") else None
    type_code = None
    dtype = data.get("type")
    if isinstance(dtype, Mapping):
        coded = _coded(dtype)
        type_code = coded["code"] if coded else None
    attachment: dict[str, Any] = {}
    content = data.get("content")
    first = content[0] if isinstance(content, list) and content and isinstance(content[0], Mapping) else None
    raw = first.get("attachment") if first else None
    if isinstance(raw, Mapping):
        for key in ("contentType", "title", "language"):
            text = _text(raw.get(key), 256)
            if text:
                attachment[key] = text
        payload = raw.get("data")
        if isinstance(payload, str) and len(payload) <= max_bytes * 4 // 3 + 4:
            try:
                decoded = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                attachment["note"] = "data is not base64"
            else:
                attachment["data_base64"] = payload
                attachment["size"] = len(decoded)
                attachment["sha256"] = hashlib.sha256(decoded).hexdigest()
        elif payload is not None:
            attachment["note"] = "data missing, not text or too large"
    meta = data.get("meta") if isinstance(data.get("meta"), Mapping) else {}
    assert isinstance(meta, Mapping)
    updated = _parse_instant(meta.get("lastUpdated"))
    return InboundEvent(
        event_type="sdo.decision",
        essms_finess=finess,
        series=series[:128],
        payload={
            "idDecision": id_decision,
            "idNat_Decision": id_nat,
            "state": "cancelled" if status == "entered-in-error" else "active",
            "fhir": {
                "id": rid,
                "versionId": _text(meta.get("versionId"), 64),
                "lastUpdated": _instant(updated) if updated else None,
                "status": status,
                "type": type_code,
            },
            "document": attachment,
        },
    )


def _status_event(data: Mapping[str, Any], finess: str) -> InboundEvent:
    values = _task_values(data)
    id_decision = _ident_value(values.get("idDecision"))
    id_nat = _ident_value(values.get("idNat_Decision"))
    series = _series(id_decision, id_nat)
    if series is None:
        raise _Unfit("the Task has no idDecision nor idNat_Decision input")
    meta = data.get("meta") if isinstance(data.get("meta"), Mapping) else {}
    assert isinstance(meta, Mapping)
    updated = _parse_instant(meta.get("lastUpdated"))
    payload: dict[str, Any] = {
        "idDecision": id_decision,
        "idNat_Decision": id_nat,
        "idNat_Struct": _ident_value(values.get("idNat_Struct")),
        "nomESMS": _text(values.get("nomESMS"), 256),
        "fhir": {"id": _text(data.get("id"), 64), "lastUpdated": _instant(updated) if updated else None},
        "description": _text(data.get("description"), 2000),
    }
    for key in ("statutESMS", "motifESMS", "statutUnite", "motifUnite", "modePriseCharge"):
        payload[key] = _coded(values.get(key))
    for key in ("dateStatutESMS", "dateStatutUnite"):
        payload[key] = _text(values.get(key), 32)
    return InboundEvent(event_type="sdo.status", essms_finess=finess, series=series[:128], payload=payload)


def message_type(kind: str) -> str:
    return "DocumentReference" if kind == "decision" else "Task"


class SdoSource:
    """A poller of the SI-SdO for one ESSMS (``dui_gateway.sources`` entry point ``sdo``)."""

    name: ClassVar[str] = "sdo"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = SdoSourceSettings

    def __init__(
        self,
        settings: SdoSourceSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
        tokens: TokenCache | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._client = FhirClient(
            settings.base_url,
            peer="SI-SdO",
            verify=verify_of(settings),
            max_answer_bytes=16 * 1024 * 1024,  # search pages; documents: max_document_bytes
        )
        self._tokens = tokens or TokenCache(leeway=settings.token_leeway, timeout=settings.timeout)
        self._state = _State(Path(settings.state_file))
        self._lock = threading.Lock()
        self.last_poll: datetime | None = None
        self.last_error: str | None = None
        self.stored = 0

    # -- authentication ------------------------------------------------------------------------
    def _auth(self) -> Auth:
        s = self.settings
        cert = (s.certificate_file, s.private_key_file) if "mtls" in s.auth else None
        cert_pair = (cert[0], cert[1]) if cert and cert[0] and cert[1] else None
        identity = None
        if "oauth" in s.auth and s.token_url and s.client_id and s.client_secret is not None:
            identity = ClientIdentity(
                token_url=s.token_url,
                client_id=s.client_id,
                secret=s.client_secret.get_secret_value(),
                scope=s.scope,
                cert=cert_pair,
                verify=verify_of(s),
            )
        return Auth(cert=cert_pair, identity=identity, tokens=self._tokens if identity else None)

    # -- polling ---------------------------------------------------------------------------------
    def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        answer = self._client.request("GET", path, params=params, timeout=self.settings.timeout, auth=self._auth())
        if not answer.ok:
            raise answer_error("SI-SdO", answer.status, answer.body)
        return answer

    def _search(self, path: str, params: list[tuple[str, str]]) -> tuple[list[Mapping[str, Any]], datetime]:
        """Every entry's resource of the search (all pages) and the search's time by the server."""
        answer = self._get(path, params)
        bundle = answer.resource()
        server_time = _parse_instant((bundle.get("meta") or {}).get("lastUpdated"))
        if server_time is None and answer.headers.get("Date"):
            try:
                server_time = parsedate_to_datetime(answer.headers["Date"]).astimezone(UTC)
            except (TypeError, ValueError):
                server_time = None
        found: list[Mapping[str, Any]] = []
        origin = urlsplit(self._client.base_url)
        for _page in range(_MAX_PAGES):
            if bundle.get("resourceType") != "Bundle":
                raise TransientError("SI-SdO search answered something that is not a Bundle")
            entries = bundle.get("entry")
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping):
                    found.append(entry["resource"])
            links = bundle.get("link")
            nxt = next(
                (
                    link.get("url")
                    for link in (links if isinstance(links, list) else [])
                    if isinstance(link, Mapping) and link.get("relation") == "next"
                ),
                None,
            )
            if not isinstance(nxt, str) or not nxt:
                break
            target = urlsplit(nxt)
            if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
                raise TransientError("SI-SdO search: a next link points to another server; not followed")
            bundle = self._get(nxt).resource()
        else:
            raise TransientError(f"SI-SdO search has more than {_MAX_PAGES} pages")
        return found, server_time or self._clock()

    def _since(self, feed: Mapping[str, Any], now: datetime) -> datetime:
        cursor = _parse_instant(feed.get("cursor"))
        if cursor is None:
            return now - timedelta(days=self.settings.first_run_days)
        return min(cursor, now) - timedelta(hours=self.settings.overlap_hours)

    def _candidates(self, resources: list[Mapping[str, Any]], seen: Mapping[str, Any]) -> list[tuple[str, str | None]]:
        best: dict[str, tuple[str | None, datetime | None]] = {}
        for res in resources:
            rid = res.get("id")
            if not isinstance(rid, str) or not _ID.match(rid):
                continue
            marker = _marker(res)
            meta = res.get("meta") if isinstance(res.get("meta"), Mapping) else {}
            assert isinstance(meta, Mapping)
            best[rid] = (marker, _parse_instant(meta.get("lastUpdated")))
        out = [
            (rid, marker, updated)
            for rid, (marker, updated) in best.items()
            if not (marker is not None and isinstance(seen.get(rid), list) and seen[rid][:1] == [marker])
        ]
        out.sort(key=lambda item: (item[2] or datetime.max.replace(tzinfo=UTC), item[0]))
        return [(rid, marker) for rid, marker, _ in out]

    def _external_id(self, kind: str, rid: str, content: bytes, data: Any) -> str:
        if isinstance(data, Mapping):
            marker = _marker(data) or f"h{hashlib.sha256(content).hexdigest()[:24]}"
            if kind == "decision":
                series = _series(*_identifiers(data))
            else:
                values = _task_values(data)
                series = _series(_ident_value(values.get("idDecision")), _ident_value(values.get("idNat_Decision")))
            key = series or f"id:{rid}"
            return f"{kind}:{key}:{marker}"[:255]
        return f"{kind}:id:{rid}:h{hashlib.sha256(content).hexdigest()[:24]}"

    def _poll_feed(self, sink: InboundSink, feed_name: str, path: str, params: list[tuple[str, str]]) -> int:
        state = self._state
        feed = state.feed(feed_name)
        now = self._clock()
        since = self._since(feed, now)
        resources, search_time = self._search(path, [*params, ("_lastUpdated", f"gt{_instant(since)}")])
        seen: dict[str, Any] = feed["seen"]
        kind = "decision" if path == "DocumentReference" else "status"
        stored = 0
        for rid, marker in self._candidates(resources, seen):
            answer = self._client.request(
                "GET",
                f"{path}/{rid}",
                timeout=self.settings.timeout,
                auth=self._auth(),
                max_bytes=self.settings.max_document_bytes,
            )
            if answer.status in (404, 410):  # withdrawn between search and read: nothing to store
                continue
            if not answer.ok:
                raise answer_error("SI-SdO", answer.status, answer.body)
            if answer.oversized:
                content = json.dumps(
                    {
                        "resourceType": message_type(kind),
                        "id": rid,
                        "dui_gateway_note": f"larger than {self.settings.max_document_bytes} bytes: not fetched",
                    }
                ).encode()
                data: Any = None
            else:
                content, data = answer.body, answer.data
            external_id = self._external_id(kind, rid, content, data)
            headers = {"sdo-feed": feed_name, "fhir-id": rid, "fhir-version": (marker or "")[:64]}
            message = InboundMessage(external_id, content, FHIR_JSON, headers, self._clock())
            try:
                sink.store(message)
            except ValueError:  # refused for its size by the gateway: keep a note, never block the feed
                note = {"resourceType": message_type(kind), "id": rid, "dui_gateway_note": "refused by the sink"}
                sink.store(InboundMessage(external_id, json.dumps(note).encode(), FHIR_JSON, headers, self._clock()))
            stored += 1
            updated = (
                _parse_instant(((data or {}).get("meta") or {}).get("lastUpdated"))
                if isinstance(data, Mapping)
                else None
            )
            fetched_marker = _marker(data) if isinstance(data, Mapping) else marker
            seen[rid] = [fetched_marker or marker, _instant(updated or now)]
            state.save()  # the message is committed: remember it (saves a fetch, never loses one)
        # every candidate is stored: the cursor may move to the search's time
        feed["cursor"] = _instant(min(search_time, now + timedelta(minutes=5)))
        horizon = self._since(feed, now) - timedelta(hours=1)
        feed["seen"] = {
            rid: value
            for rid, value in seen.items()
            if isinstance(value, list) and len(value) == 2 and (_parse_instant(value[1]) or now) >= horizon
        }
        state.save()
        return stored

    def poll_once(self, sink: InboundSink) -> int:
        """One poll of every feed; returns how many messages were handed to the sink.

        Raises :class:`~connectors.base.TransientError`/``PermanentError`` when the SI-SdO cannot be
        read (the cursor then stays where it was)."""
        with self._lock:
            total = 0
            for code in self.settings.document_types:
                feed = "decisions" if code == DECISION_TYPE else "evaluations"
                params = [("type", code), ("_elements", "id"), ("_count", str(self.settings.page_size))]
                total += self._poll_feed(sink, feed, "DocumentReference", params)
            if self.settings.statuses:
                total += self._poll_feed(sink, "statuses", "Task", [("_count", str(self.settings.page_size))])
            self.stored += total
            self.last_poll = self._clock()
            self.last_error = None
            return total

    def run(self, sink: InboundSink, stop: threading.Event) -> None:
        """Poll every ``poll_seconds`` until ``stop``; after a failure, back off (up to the interval)."""
        backoff = min(5.0, self.settings.poll_seconds)
        while not stop.is_set():
            wait = self.settings.poll_seconds
            try:
                count = self.poll_once(sink)
                if count:
                    _log.info("sdo_polled", stored=count, essms=self.settings.essms_finess)
                backoff = min(5.0, self.settings.poll_seconds)
            except (ConnectorError, FhirContentError) as exc:
                self.last_error = str(exc)[:300]
                _log.warning("sdo_poll_failed", error=self.last_error, essms=self.settings.essms_finess)
                wait, backoff = backoff, min(backoff * 2, self.settings.poll_seconds)
            stop.wait(wait)

    # -- interpretation (pure) ------------------------------------------------------------------
    def interpret(self, message: InboundMessage) -> Interpretation:
        """An ``sdo.decision`` / ``sdo.status`` event for a stored resource, else a note; never raises."""
        try:
            return Interpretation(events=(self._event(message.content),))
        except _Unfit as exc:
            return Interpretation(note=f"ignored: {exc}")
        except FhirContentError as exc:
            return Interpretation(note=f"ignored: {exc}")
        except Exception as exc:  # hostile input must never break the worker
            return Interpretation(note=f"ignored: unreadable SDO resource ({type(exc).__name__})")

    def _event(self, content: bytes) -> InboundEvent:
        if len(content) > _HARD_MAX:
            raise _Unfit("the resource is larger than 32 MiB")
        data = parse_json(content)
        if not isinstance(data, dict):
            raise _Unfit("not a FHIR resource")
        finess = self.settings.essms_finess
        note = data.get("dui_gateway_note")
        rtype = data.get("resourceType")
        if isinstance(note, str):
            rid = _text(data.get("id"), 64) or "?"
            return InboundEvent(
                event_type="sdo.unreadable",
                essms_finess=finess,
                series=f"fhir:{rtype}/{rid}"[:128],
                payload={"fhir": {"id": rid, "type": rtype}, "note": note[:300]},
            )
        if rtype == "DocumentReference":
            return _decision_event(data, finess, self.settings.max_document_bytes)
        if rtype == "Task":
            return _status_event(data, finess)
        raise _Unfit("neither a DocumentReference nor a Task")

    def health(self) -> Health:
        """Reads the SI-SdO's CapabilityStatement (``GET [base]/metadata``); never raises."""
        try:
            answer = self._client.request("GET", "metadata", timeout=min(self.settings.timeout, 5.0))
        except Exception as exc:
            return Health(ok=False, detail=f"unreachable: {type(exc).__name__}")
        ok = answer.ok and answer.resource().get("resourceType") == "CapabilityStatement"
        detail = f"HTTP {answer.status}"
        if self.last_error:
            detail += f"; last poll failed: {self.last_error}"
        return Health(ok=ok and self.last_error is None, detail=detail)

    def close(self) -> None:
        self._client.close()
        self._tokens.close()

    def iter_state(self) -> Iterator[tuple[str, str | None]]:
        """(feed, cursor) pairs, for operators and tests."""
        for name, feed in sorted(self._state.feeds.items()):
            yield name, feed.get("cursor")
