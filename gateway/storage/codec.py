"""The storage codec: stored renditions <-> :class:`mappings.base.Rendition`, record facts <-> JSON.

A rendition row keeps its conformance tags and exchange metadata (XDS/MHD attributes the DMP
and MSSanté connectors need) in ``metadata_json``; its bytes are encrypted (AAD = rendition id).
The person's identifier in the metadata (``patient_id``: the INS/NIR when qualified) is not kept
in clear: it is sealed under the tenant's data key (AAD = rendition id + ``:metadata``) in
``metadata_json["sealed"]`` and merged back by :func:`load_rendition`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from gateway.security.crypto import KeyRing, decrypt
from gateway.storage.models import Rendition as RenditionRow
from mappings.base import Code, ExchangeMetadata, RecordFacts, Rendition

__all__ = ["SEALED_FIELDS", "facts_from_json", "facts_to_json", "load_rendition", "metadata_aad", "metadata_to_json"]

SEALED_FIELDS: tuple[str, ...] = ("patient_id",)
"""Exchange metadata fields stored encrypted (personal identifiers), never in clear."""

_CODE_FIELDS = {f.name for f in dataclasses.fields(ExchangeMetadata) if f.type in ("Code", Code)}
_TIME_FIELDS = {"creation_time", "service_start", "service_stop"}


def _exchange_to_json(meta: ExchangeMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(meta):
        value = getattr(meta, f.name)
        if isinstance(value, Code):
            out[f.name] = {"code": value.code, "system": value.system, "display": value.display}
        elif isinstance(value, datetime):
            out[f.name] = value.isoformat()
        elif isinstance(value, Mapping):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


def _exchange_from_json(data: Mapping[str, Any]) -> ExchangeMetadata:
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in _CODE_FIELDS and isinstance(value, Mapping):
            kwargs[name] = Code(**value)
        elif name in _TIME_FIELDS and isinstance(value, str):
            kwargs[name] = datetime.fromisoformat(value)
        else:
            kwargs[name] = value
    return ExchangeMetadata(**kwargs)


def metadata_aad(rendition_id: str) -> bytes:
    """AAD of the sealed part of a rendition's metadata (distinct from the content's)."""
    return f"{rendition_id}:metadata".encode()


def metadata_to_json(rendition: Rendition, *, seal: Callable[[bytes], tuple[bytes, str]]) -> dict[str, Any]:
    """What goes in ``renditions.metadata_json``; ``seal`` encrypts (ciphertext, data key id)."""
    exchange = _exchange_to_json(rendition.metadata) if rendition.metadata is not None else None
    out: dict[str, Any] = {"conformance": list(rendition.conformance), "exchange": exchange}
    if exchange is not None:
        hidden = {name: exchange.pop(name) for name in SEALED_FIELDS if name in exchange}
        if any(hidden.values()):
            ciphertext, key_id = seal(json.dumps(hidden, ensure_ascii=False).encode("utf-8"))
            out["sealed"] = {"data_key_id": key_id, "ciphertext": base64.b64encode(ciphertext).decode("ascii")}
    return out


class StoredRendition(Protocol):
    """What :func:`load_rendition` reads of a stored rendition: a ``renditions`` row, as an ORM
    object or as a Core row of its columns."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def document_id(self) -> str: ...
    @property
    def set_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def replaces(self) -> str | None: ...
    @property
    def content_ct(self) -> bytes: ...
    @property
    def data_key_id(self) -> str: ...
    @property
    def metadata_json(self) -> dict[str, Any] | None: ...


def load_rendition(session: Session, row: RenditionRow | StoredRendition, *, keyring: KeyRing) -> Rendition:
    """Decrypt a stored rendition back into the object connectors receive."""
    content = decrypt(
        session, data_key_id=row.data_key_id, ciphertext=row.content_ct, keyring=keyring, aad=row.id.encode()
    )
    meta = row.metadata_json or {}
    exchange = meta.get("exchange")
    sealed = meta.get("sealed")
    if isinstance(exchange, Mapping) and isinstance(sealed, Mapping):
        hidden = decrypt(
            session,
            data_key_id=str(sealed["data_key_id"]),
            ciphertext=base64.b64decode(sealed["ciphertext"]),
            keyring=keyring,
            aad=metadata_aad(row.id),
        )
        exchange = {**exchange, **json.loads(hidden)}
    return Rendition(
        kind=row.kind,
        media_type=row.media_type,
        content=content,
        document_id=row.document_id,
        set_id=row.set_id,
        version=row.version,
        conformance=tuple(meta.get("conformance") or ()),
        metadata=_exchange_from_json(exchange) if isinstance(exchange, Mapping) else None,
        replaces=row.replaces,
    )


def facts_to_json(facts: RecordFacts) -> dict[str, Any]:
    return {
        "person_ref": facts.person_ref,
        "essms_finess": facts.essms_finess,
        "ins_qualified": facts.ins_qualified,
        "sharing_refused_with": sorted(facts.sharing_refused_with),
        "extra": dict(facts.extra),
    }


def facts_from_json(data: Mapping[str, Any] | None, *, person_ref: str, essms_finess: str) -> RecordFacts:
    """Facts stored on a submission; conservative defaults (INS not qualified) when absent."""
    data = data or {}
    return RecordFacts(
        person_ref=str(data.get("person_ref") or person_ref),
        essms_finess=str(data.get("essms_finess") or essms_finess),
        ins_qualified=bool(data.get("ins_qualified", False)),
        sharing_refused_with=frozenset(str(c) for c in data.get("sharing_refused_with") or ()),
        extra=dict(data.get("extra") or {}),
    )
