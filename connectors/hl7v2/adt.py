"""What a stored HL7 v2 message means (the ``mllp`` source's ``interpret``, pure).

- ``ADT^Axx`` (IHE PAM France 2.11): one :class:`~connectors.base.InboundEvent` whose
  ``event_type`` says what happened to the resident (``adt.hospitalised``, ``adt.transferred``,
  ``adt.discharged``, ``adt.returned``...; cancellations are ``adt.cancelled`` naming what they
  cancel), with the payload documented in docs/hl7v2.md (schema ``dui-gateway.adt/1``). Its
  ``series`` is the ZBE movement (``ZBE-1``), so an insert, its updates and its cancellation are
  delivered in order; without ZBE, the visit number (PV1-19), else the sender's patient id.
- the person: a ``PI`` identifier of PID-3 assigned by one of ``local_authorities`` is the
  ESSMS's own person reference (``person_ref``); otherwise every PID-3 identifier (INS with its
  OID first) is given in ``identifiers`` for the gateway to match; A40's MRG-1 identifiers are
  ``former_identifiers``.
- ZFA-9 (DMP feeding: ``IO`` opposition, ``INO`` no opposition) gives ``sharing_refusals``
  ``{"dmp": True|False}``; ``NA`` (not collected) says nothing.
- ``ACK`` (original or enhanced mode) about a message the ``mllp`` connector sent: an
  :class:`~connectors.base.Acknowledgement` (``AA``/``CA`` delivered, ``AE``/``AR``/``CE``/``CR``
  failed); ``ZAM`` business acknowledgements (CI-SIS) are stored as ``info``.

Names, birth dates and addresses are never copied into events: identifiers and movements only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connectors.base import Acknowledgement, InboundEvent, InboundMessage, Interpretation
from connectors.hl7v2 import er7
from connectors.hl7v2.message import Message, Segment, parse

if TYPE_CHECKING:
    from connectors.hl7v2.listener import MllpSourceSettings

__all__ = ["CANCELS", "EVENTS", "INS_OIDS", "SCHEMA", "interpret", "read_adt"]

SCHEMA = "dui-gateway.adt/1"

# trigger -> (event_type, French label)
EVENTS: Mapping[str, tuple[str, str]] = {
    "A01": ("adt.hospitalised", "résident hospitalisé"),
    "A02": ("adt.transferred", "résident transféré"),
    "A03": ("adt.discharged", "résident sorti"),
    "A04": ("adt.outpatient_visit", "passage externe ou aux urgences"),
    "A05": ("adt.preadmitted", "hospitalisation programmée"),
    "A06": ("adt.class_changed", "externe devenu hospitalisé"),
    "A07": ("adt.class_changed", "hospitalisé devenu externe"),
    "A08": ("adt.updated", "informations mises à jour"),
    "A21": ("adt.leave_started", "absence provisoire"),
    "A22": ("adt.returned", "résident de retour"),
    "A28": ("adt.person_created", "identité créée"),
    "A31": ("adt.person_updated", "identité mise à jour"),
    "A40": ("adt.merged", "identités fusionnées"),
    "A47": ("adt.identifier_changed", "identifiant modifié"),
    "A54": ("adt.attending_doctor_changed", "médecin responsable modifié"),
    "Z80": ("adt.responsibility_changed", "UF de responsabilité médicale modifiée"),
    "Z82": ("adt.responsibility_changed", "UF de soins modifiée"),
    "Z84": ("adt.responsibility_changed", "UF d'hébergement modifiée"),
    "Z99": ("adt.movement_updated", "mouvement mis à jour"),
}
# cancellation trigger -> the trigger it cancels
CANCELS: Mapping[str, str] = {
    "A11": "A01",
    "A12": "A02",
    "A13": "A03",
    "A38": "A05",
    "A52": "A21",
    "A53": "A22",
    "A55": "A54",
    "Z81": "Z80",
    "Z83": "Z82",
    "Z85": "Z84",
}
# INS OIDs (NIR, NIA, and their test values used in the ANS examples)
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})
_FEEDING = {"IO": True, "INO": False}
_MAX_IDS = 16


def _when(value: str) -> str | None:
    """An HL7 DTM (``YYYYMMDD[HHMM[SS]]``, offset dropped) as ISO 8601, or None."""
    digits = value.split("+")[0].split("-")[0].split(".")[0]
    for fmt, size in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12), ("%Y%m%d", 8)):
        if len(digits) == size:
            try:
                return datetime.strptime(digits, fmt).isoformat()
            except ValueError:
                return None
    return None


def _identifiers(msg: Message, segment: Segment | None, index: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for rep in msg.repetitions(segment, index)[:_MAX_IDS]:
        value = msg.component(rep, 1)
        if not value:
            continue
        namespace = msg.component(rep, 4, 1)
        oid = msg.component(rep, 4, 2)
        kind = msg.component(rep, 5)
        ins = oid in INS_OIDS or kind in ("INS", "INS-NIR", "INS-NIA")
        out.append(
            {
                "value": value[:64],
                "type": "INS" if ins else (kind[:8] or "PI"),
                "authority": namespace[:64],
                "oid": oid[:64],
                "system": f"urn:oid:{oid}" if oid else namespace[:64],
            }
        )
    out.sort(key=lambda i: i["type"] != "INS")  # INS first
    return out


def _movement(msg: Message) -> dict[str, Any] | None:
    zbe = msg.first("ZBE")
    if zbe is None:
        return None
    ident = msg.repetitions(zbe, 1)[:1]
    return {
        "id": msg.component(ident[0], 1) if ident else "",
        "namespace": msg.component(ident[0], 2) if ident else "",
        "at": _when(msg.get("ZBE", 2)),
        "action": msg.get("ZBE", 4),  # INSERT, UPDATE, CANCEL
        "historic": msg.get("ZBE", 5) == "Y",
        "original_trigger": msg.get("ZBE", 6) or None,
        "medical_unit": msg.get("ZBE", 7, 10) or msg.get("ZBE", 7, 1),
        "care_unit": msg.get("ZBE", 8, 10) or msg.get("ZBE", 8, 1),
        "nature": msg.get("ZBE", 9) or None,
    }


def _dmp(msg: Message) -> dict[str, Any] | None:
    if msg.first("ZFA") is None:
        return None
    feeding = msg.get("ZFA", 9)
    consultation = msg.get("ZFA", 11)
    return {
        "status": msg.get("ZFA", 1) or None,
        "feeding": {"IO": "opposed", "INO": "not_opposed"}.get(feeding, "not_collected"),
        "feeding_at": _when(msg.get("ZFA", 10)),
        "consultation": {"IC": "consented", "INC": "refused"}.get(consultation, "not_collected"),
        "consultation_at": _when(msg.get("ZFA", 12)),
    }


def read_adt(msg: Message) -> dict[str, Any]:
    """The payload (schema ``dui-gateway.adt/1``) of a parsed ADT message."""
    trigger = msg.get("MSH", 9, 2) or msg.get("EVN", 1)
    cancels = CANCELS.get(trigger)
    _event_type, label = ("adt.cancelled", "annulation") if cancels else EVENTS.get(trigger, ("adt.other", ""))
    pid = msg.first("PID")
    visit_number = msg.get("PV1", 19)
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "trigger": trigger,
        "label": label,
        "message_type": msg.get("MSH", 9) + "^" + msg.get("MSH", 9, 2) if msg.get("MSH", 9, 2) else msg.get("MSH", 9),
        "control_id": msg.get("MSH", 10),
        "sender": {"application": msg.get("MSH", 3), "facility": msg.get("MSH", 4)},
        "recorded_at": _when(msg.get("EVN", 2)) or _when(msg.get("MSH", 7)),
        "occurred_at": _when(msg.get("ZBE", 2)) or _when(msg.get("EVN", 6)) or _when(msg.get("EVN", 2)),
        "patient": {
            "identifiers": _identifiers(msg, pid, 3),
            "identity_reliability": msg.get("PID", 32) or None,
        },
        "visit": None,
        "movement": _movement(msg),
        "cancels": None,
        "dmp": _dmp(msg),
    }
    if msg.first("PV1") is not None:
        payload["visit"] = {
            "class": msg.get("PV1", 2) or None,
            "number": visit_number or None,
            "facility": msg.get("PV1", 3, 4, 1) or None,
            "admitted_at": _when(msg.get("PV1", 44)),
            "discharged_at": _when(msg.get("PV1", 45)),
            "discharge_disposition": msg.get("PV1", 36) or None,
        }
    if cancels:
        payload["cancels"] = {"trigger": cancels, "event_type": EVENTS[cancels][0] if cancels in EVENTS else None}
    if msg.first("ZFM") is not None:
        payload["pmsi"] = {
            "entry_mode": msg.get("ZFM", 1) or None,
            "discharge_mode": msg.get("ZFM", 2) or None,
            "origin": msg.get("ZFM", 3) or None,
            "destination": msg.get("ZFM", 4) or None,
        }
    if msg.first("ZFD") is not None:
        # ZFD (complément démographique): positions as in the ANS PAM-FR 2.11 examples
        payload["ins_collection"] = {"method": msg.get("ZFD", 5) or None, "at": _when(msg.get("ZFD", 6))}
    if msg.first("ZFV") is not None:
        payload["origin_facility"] = msg.get("ZFV", 1, 1) or None  # ZFV-1: établissement de provenance
    payload["z_segments"] = sorted({seg.name for seg in msg.segments if seg.name.startswith("Z")})
    if trigger == "A40":
        payload["merged_identifiers"] = [i for m in msg.all("MRG") for i in _identifiers(msg, m, 1)]
    return payload


def _series(sender: str, payload: Mapping[str, Any]) -> str:
    movement = payload.get("movement") or {}
    if movement.get("id"):
        return f"hl7v2:{sender}:movement:{movement.get('namespace', '')}:{movement['id']}"[:128]
    visit = payload.get("visit") or {}
    if visit.get("number"):
        return f"hl7v2:{sender}:visit:{visit['number']}"[:128]
    ids = payload["patient"]["identifiers"]
    return f"hl7v2:{sender}:patient:{ids[0]['value'] if ids else '?'}"[:128]


def _acknowledgement(msg: Message) -> Interpretation:
    code = msg.get("MSA", 1)
    ref = msg.get("MSA", 2)
    if not ref:
        return Interpretation(note="acknowledgement without MSA-2")
    if msg.get("MSH", 9) == "ZAM":
        return Interpretation(
            acknowledgements=(
                Acknowledgement(
                    ack_ref=ref, outcome="info", kind="hl7v2-zam", detail={"trigger": msg.get("MSH", 9, 2)}
                ),
            )
        )
    if code in ("AA", "CA"):
        outcome = "delivered"
    elif code in ("AE", "AR", "CE", "CR"):
        outcome = "failed"
    else:
        return Interpretation(note="acknowledgement with an unknown MSA-1")
    error = msg.get("ERR", 3) or msg.get("MSA", 6)
    return Interpretation(
        acknowledgements=(
            Acknowledgement(
                ack_ref=ref,
                outcome=outcome,  # type: ignore[arg-type]
                kind="hl7v2-ack",
                reason=f"{code} {error}".strip() if outcome == "failed" else None,
                detail={"code": code},
            ),
        )
    )


def interpret(message: InboundMessage, settings: MllpSourceSettings) -> Interpretation:
    try:
        header, text = er7.read_header(message.content)
        msg = parse(text)
    except ValueError:
        return Interpretation(note="not a readable HL7 v2 message")
    if header.code in ("ACK", "ZAM"):
        return _acknowledgement(msg)
    if header.code != "ADT":
        return Interpretation(note="message type not interpreted")
    payload = read_adt(msg)
    ids = payload["patient"]["identifiers"]
    local = {a for a in settings.local_authorities}
    person_ref = next(
        (i["value"] for i in ids if i["type"] == "PI" and (i["authority"] in local or i["oid"] in local)), None
    )
    sharing: dict[str, bool] = {}
    feeding = msg.get("ZFA", 9)
    if feeding in _FEEDING:
        sharing["dmp"] = _FEEDING[feeding]
    event = InboundEvent(
        event_type=str((payload["cancels"] and "adt.cancelled") or EVENTS.get(payload["trigger"], ("adt.other",))[0]),
        payload=payload,
        essms_finess=settings.essms_finess,
        person_ref=person_ref[:128] if person_ref else None,
        series=_series(header.sender, payload),
        identifiers=tuple(f"{i['system']}|{i['value']}" for i in ids if i["system"]),
        former_identifiers=tuple(
            f"{i['system']}|{i['value']}" for i in payload.get("merged_identifiers", []) if i["system"]
        ),
        sharing_refusals=sharing,
    )
    return Interpretation(events=(event,))
