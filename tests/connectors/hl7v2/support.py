"""HL7 v2 test material: the ANS examples (copied from shared/hl7v2-examples) and a builder of
hand-written PAM-FR ADT messages for every trigger event the source accepts."""

from __future__ import annotations

from pathlib import Path

from connectors.hl7v2.mllp import read_frame  # noqa: F401 - re-exported for tests

EXAMPLES = Path(__file__).parent / "examples"

INS_OID = "1.2.250.1.213.1.4.10"  # the INS-NIR test OID of the ANS examples
INS = "279035121518989"
IPP = "000003"

# trigger -> (message structure, ZBE action or None when the message has no movement)
STRUCTURES = {
    "A01": ("ADT_A01", "INSERT"),
    "A02": ("ADT_A02", "INSERT"),
    "A03": ("ADT_A03", "INSERT"),
    "A04": ("ADT_A01", "INSERT"),
    "A05": ("ADT_A05", "INSERT"),
    "A06": ("ADT_A06", "INSERT"),
    "A07": ("ADT_A06", "INSERT"),
    "A08": ("ADT_A01", None),
    "A11": ("ADT_A09", "CANCEL"),
    "A12": ("ADT_A12", "CANCEL"),
    "A13": ("ADT_A01", "CANCEL"),
    "A21": ("ADT_A21", "INSERT"),
    "A22": ("ADT_A21", "INSERT"),
    "A28": ("ADT_A05", None),
    "A31": ("ADT_A05", None),
    "A38": ("ADT_A38", "CANCEL"),
    "A40": ("ADT_A39", None),
    "A52": ("ADT_A52", "CANCEL"),
    "A53": ("ADT_A52", "CANCEL"),
    "A54": ("ADT_A54", "INSERT"),
    "A55": ("ADT_A52", "CANCEL"),
    "Z99": ("ADT_A01", "UPDATE"),  # PAM-FR: update of an existing movement (ZBE-6: its original trigger)
}
ORIGINAL = {
    "Z99": "A01",
    "A11": "A01",
    "A12": "A02",
    "A13": "A03",
    "A38": "A05",
    "A52": "A21",
    "A53": "A22",
    "A55": "A54",
}


def adt(
    trigger: str,
    *,
    control_id: str = "MSG-1",
    sender: str = "APP",
    facility: str = "FAC",
    ins: str | None = INS,
    ipp: str = IPP,
    local_id: str | None = None,
    movement: str = "MVT-1",
    zfa_feeding: str | None = None,
    merged_ipp: str = "000999",
    visit: str = "V-1",
    charset: str = "UNICODE UTF-8",
) -> bytes:
    """A PAM-FR 2.11 ADT message; ``local_id`` adds the ESSMS's own id (authority ESSMS-LOCAL)."""
    structure, action = STRUCTURES[trigger]
    ids = [f"{ipp}^^^HOSP&1.2.250.1.999.1&ISO^PI"]
    if ins:
        ids.append(f"{ins}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS^^20101207")
    if local_id:
        ids.append(f"{local_id}^^^ESSMS-LOCAL&1.2.250.1.999.2&ISO^PI")
    lines = [
        f"MSH|^~\\&|{sender}|{facility}|DUI|ESSMS|20240309111154||ADT^{trigger}^{structure}|{control_id}|P|"
        f"2.5^FRA^2.11|||||FRA|{charset}|FR||2.11^IHE_FRANCE-2.11-PAM",
        "EVN||20240309111154||||20240309110000",
        f"PID|1||{'~'.join(ids)}||NOM-TEST^PRENOM^^^^^L||19400101|F|||||||||||||||||||||||||VALI",
    ]
    if trigger == "A40":
        lines.append(f"MRG|{merged_ipp}^^^HOSP&1.2.250.1.999.1&ISO^PI")
    if trigger not in ("A28", "A31", "A40"):
        klass = "O" if trigger in ("A04", "A07") else "I"
        lines.append(
            f"PV1|1|{klass}|^^^HOSP&1.2.250.1.999.1&ISO^UF1||||||||||||||||{visit}^^^HOSP^VN|||||||||||||||||||||||||20240309110000"
        )
    if action:
        original = ORIGINAL.get(trigger, "")
        lines.append(
            f"ZBE|{movement}^HOSP^000897406|20240309110000||{action}|N|{original}|"
            "Chir V^^^^^HOSP&000897406&N^UF^^^6268|Chir V^^^^^HOSP&000897406&N^UF^^^6268|HMS"
        )
    if zfa_feeding:
        lines.append(f"ZFA|ACTIF|20240309111154|||||||{zfa_feeding}|20240309111154|INC|20240309111154")
    if trigger in ("A01", "A03"):
        lines.append("ZFM|8|||")
    lines.append("ZFD|||Y|N|INSI|20211201||")
    return ("\r".join(lines) + "\r").encode("utf-8")


def msa(answer: bytes) -> list[str]:
    """MSA-1, MSA-2, MSA-3 of an ACK."""
    for segment in answer.decode("utf-8").split("\r"):
        if segment.startswith("MSA|"):
            fields = [*segment.split("|")[1:], "", "", ""]
            return fields[:3]
    raise AssertionError(f"no MSA in {answer!r}")
