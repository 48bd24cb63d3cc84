"""The DUI record model: what a DUI vendor sends to the gateway.

Reusable parts (:class:`Person` with its :class:`Ins` and identity traits, :class:`Essms`,
:class:`Professional`...) make up :class:`DuiRecord`, the generic base every document type
extends (``DluRecord`` here, ``PpaRecord`` in ``mappings.ppa``). Every model is frozen and
rejects unknown fields; field descriptions become the OpenAPI / JSON Schema documentation.

Validators never read the clock: dates are only compared with other fields of the record
(e.g. nothing may happen after ``last_updated``, nobody is treated before being born).

Identity rules (RNIV, see ``shared/specs/identity-and-security.md``):

- an INS (matricule + OID) exists only once INSi was called, so the statuses
  ``recuperee`` and ``qualifiee`` require one, and ``provisoire`` / ``validee`` forbid it;
- a doubtful or fictitious identity stays ``provisoire``;
- the INS may be *used* (put in a document, sent to the DMP or MSSanté) only when the
  identity is ``qualifiee``: :attr:`Person.ins_usable`, :func:`facts`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from mappings import valuesets
from mappings.base import RecordFacts, RenderContext
from mappings.consent import ConsentFamily, DmpVisibility

__all__ = [
    "Address",
    "AdvanceDirectives",
    "Allergy",
    "AttachedDocument",
    "BmrStatus",
    "CodedConcept",
    "Condition",
    "DluContent",
    "DluRecord",
    "Dose",
    "DuiRecord",
    "Essms",
    "ExchangeIdentity",
    "Frequency",
    "HealthEstablishment",
    "IdentityStatus",
    "IdentityTraits",
    "Ins",
    "InsKind",
    "Pain",
    "Person",
    "PersonalItem",
    "Professional",
    "RelatedPerson",
    "Sex",
    "StateObservation",
    "Telecom",
    "TransferContext",
    "Treatment",
    "Vaccination",
    "VitalSigns",
    "exchange_identity",
    "facts",
    "finess_key_ok",
    "ins_refusal",
    "local_person_root",
    "luhn_ok",
    "nir_key",
]

# --------------------------------------------------------------------------------------------
# Scalar types
# --------------------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry (C0 controls except TAB/LF/CR, lone surrogates, U+FFFE/FFFF).
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value: str) -> str:
    match = _XML_FORBIDDEN.search(value)
    if match:
        raise ValueError(f"contains a character not allowed in XML documents (U+{ord(match.group()):04X})")
    return value


def _single_line(value: str) -> str:
    if "\n" in value or "\r" in value or "\t" in value:
        raise ValueError("must be a single line (no tab or line break)")
    if value != value.strip():
        raise ValueError("must not start or end with spaces")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (e.g. 2024-05-02T14:30:00+02:00)")
    return value


Text = Annotated[str, Field(min_length=1, max_length=10_000), AfterValidator(_xml_text)]
"""Free text (may span lines); XML-safe."""
Label = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_xml_text), AfterValidator(_single_line)]
"""A short single-line label (drug name, problem label...)."""
Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_xml_text), AfterValidator(_single_line)]
"""A person or organisation name part: accents, apostrophes, hyphens and spaces allowed."""
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
Oid = Annotated[str, Field(pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$", max_length=64, description="An ISO OID.")]
InseeCode = Annotated[
    str,
    Field(
        pattern=r"^(\d{5}|2[AB]\d{3})$",
        description="INSEE code of a commune (5 characters, 2A/2B for Corsica), or 99xxx for a country.",
    ),
]


def luhn_ok(digits: str) -> bool:
    """True when the last digit of ``digits`` is the Luhn key of the others."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def finess_key_ok(finess: str) -> bool:
    """FINESS key (9th character) check: Luhn over the 9 digits; Corsican 2A/2B numbers are not checked."""
    if not finess.isdigit():
        return True
    return luhn_ok(finess)


def nir_key(first13: str) -> int:
    """The 2-digit key of a NIR/NIA (97 - number mod 97); Corsica 2A/2B count as 19/18."""
    numeric = first13.upper().replace("2A", "19", 1) if first13[5:7].upper() == "2A" else first13
    numeric = numeric.upper().replace("2B", "18", 1) if first13[5:7].upper() == "2B" else numeric
    return 97 - int(numeric) % 97


def _check_rpps(value: str) -> str:
    if not luhn_ok(value):
        raise ValueError("RPPS number has a wrong key (11th digit, Luhn)")
    return value


def _check_finess(value: str) -> str:
    if not finess_key_ok(value):
        raise ValueError("FINESS number has a wrong key (9th digit, Luhn)")
    return value


Rpps = Annotated[
    str,
    Field(pattern=r"^\d{11}$", description="RPPS number: 11 digits, the last one a Luhn key."),
    AfterValidator(_check_rpps),
]
Finess = Annotated[
    str,
    Field(
        pattern=r"^(\d{2}|2[AB])\d{7}$",
        description="FINESS number: 9 characters (département 2 digits or 2A/2B, 6 digits, Luhn key).",
    ),
    AfterValidator(_check_finess),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class CodedConcept(_Model):
    """A coded value: code, code system OID, display name."""

    code: str = Field(min_length=1, max_length=64, pattern=r"^\S+$", description="The code.")
    system: Oid = Field(description="OID of the code system (e.g. 2.16.840.1.113883.6.3 for CIM-10).")
    display: Label = Field(description="Human-readable label of the code, in French.")


# --------------------------------------------------------------------------------------------
# Contact details
# --------------------------------------------------------------------------------------------


class Address(_Model):
    """A postal address."""

    lines: list[Label] = Field(
        default_factory=list, max_length=4, description="Street lines (number, street, building...)."
    )
    postal_code: str | None = Field(default=None, pattern=r"^[0-9A-Z -]{2,10}$", description="Postal code.")
    city: Name | None = Field(default=None, description="City.")
    country: Name | None = Field(default=None, description="Country, when not France.")


class Telecom(_Model):
    """A phone number, e-mail address or URL."""

    system: Literal["phone", "fax", "email", "url"] = Field(description="Kind of contact point.")
    value: str = Field(
        min_length=3,
        max_length=256,
        pattern=r"^\S([^<>\"\t\r\n]*\S)?$",
        description="Number or address, without scheme (phone numbers may contain spaces).",
    )
    use: Literal["home", "work", "mobile", "emergency"] | None = Field(
        default=None, description="Purpose of the contact point."
    )

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.system in ("phone", "fax") and not re.fullmatch(r"\+?[0-9 .()-]{3,30}", self.value):
            raise ValueError("a phone/fax value may only contain digits, spaces, '+', '.', '-', '(' and ')'")
        if self.system == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.value):
            raise ValueError("an email value must look like name@domain.tld")
        if self.system == "url" and re.search(r"\s", self.value):
            raise ValueError("a URL may not contain spaces")
        return self


# --------------------------------------------------------------------------------------------
# Person and identity
# --------------------------------------------------------------------------------------------


class IdentityStatus(StrEnum):
    """RNIV identity confidence status."""

    PROVISOIRE = "provisoire"
    RECUPEREE = "recuperee"
    VALIDEE = "validee"
    QUALIFIEE = "qualifiee"


class Sex(StrEnum):
    """Administrative sex (INS trait): M, F, or U when unknown (never for an INS)."""

    M = "M"
    F = "F"
    U = "U"


class InsKind(StrEnum):
    """Kind of INS matricule: the NIR, or the NIA when the person has no NIR yet."""

    NIR = "NIR"
    NIA = "NIA"


_INS_OIDS = {
    (InsKind.NIR, False): "1.2.250.1.213.1.4.8",
    (InsKind.NIA, False): "1.2.250.1.213.1.4.9",
    (InsKind.NIR, True): "1.2.250.1.213.1.4.10",
    (InsKind.NIA, True): "1.2.250.1.213.1.4.11",
}


class Ins(_Model):
    """INS matricule (NIR or NIA with its 2-digit key) as returned by the INSi téléservice."""

    matricule: str = Field(
        pattern=r"^[1-478][0-9]{4}(\d{2}|2[AB])\d{6}\d{2}$",
        description="15 characters: 13-character NIR/NIA (2A/2B for Corsica) followed by its 2-digit key.",
        examples=["279035121518989"],
    )
    kind: InsKind = Field(default=InsKind.NIR, description="NIR (OID 1.2.250.1.213.1.4.8) or NIA (…4.9).")
    test: bool = Field(
        default=False,
        description="A test identity (OIDs 1.2.250.1.213.1.4.10 / .11); never mix test and production identities.",
    )

    @field_validator("matricule")
    @classmethod
    def _key(cls, value: str) -> str:
        if nir_key(value[:13]) != int(value[13:]):
            raise ValueError("INS matricule key is wrong: characters 14-15 do not match the first 13")
        return value

    @property
    def oid(self) -> str:
        """The OID qualifying the matricule (NIR/NIA, production or test)."""
        return _INS_OIDS[(self.kind, self.test)]


class IdentityTraits(_Model):
    """The identity traits (INS traits when the identity comes from INSi)."""

    birth_family_name: Name = Field(description="Nom de naissance.", examples=["D'ARTAGNAN-LÉVÊQUE"])
    birth_given_names: list[Name] = Field(
        min_length=1,
        max_length=10,
        description="Liste des prénoms de naissance, in order; the first one is the INS first name.",
    )
    sex: Sex = Field(description="Administrative sex.")
    birth_date: date = Field(description="Date of birth.")
    birth_place_code: InseeCode | None = Field(
        default=None, description="INSEE code of the birth commune (99xxx: country of birth abroad)."
    )
    birth_place_city: Name | None = Field(default=None, description="Name of the birth commune.")


class RelatedPerson(_Model):
    """A relative or close person (personne de confiance, personne à prévenir, legal representative)."""

    family_name: Name = Field(description="Family name.")
    given_name: Name | None = Field(default=None, description="First name.")
    relationship: str | None = Field(
        default=None,
        description="Relationship to the person, code from JDV_J11_RelationPatient (e.g. DAU, SON, SIS, TUTEUR).",
        examples=["DAU"],
    )
    telecoms: list[Telecom] = Field(default_factory=list, max_length=10, description="Contact points.")
    address: Address | None = Field(default=None, description="Postal address.")

    @field_validator("relationship")
    @classmethod
    def _relationship(cls, value: str | None) -> str | None:
        if value is not None and value not in valuesets.RELATION_PATIENT:
            raise ValueError("relationship is not in JDV_J11_RelationPatient_CISIS")
        return value


class Professional(_Model):
    """A professional (author, legal authenticator, médecin traitant...)."""

    rpps: Rpps | None = Field(
        default=None, description="RPPS number (11 digits). Required unless internal_id is given."
    )
    internal_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,40}$",
        description="Identifier inside the ESSMS for staff without RPPS (sent as 3+FINESS/id).",
    )
    family_name: Name = Field(description="Family name.")
    given_name: Name | None = Field(default=None, description="First name.")
    title: Literal["DR", "PR"] | None = Field(default=None, description="Title (Docteur, Professeur).")
    role: str = Field(
        default="G15_10/SM54",
        description=(
            "Profession/speciality code from JDV_J01_XdsAuthorSpecialty (1.2.250.1.213.1.1.4.5), "
            "e.g. G15_10/SM54 médecin généraliste, G15_60 infirmier."
        ),
    )
    telecoms: list[Telecom] = Field(default_factory=list, max_length=10, description="Contact points.")
    address: Address | None = Field(default=None, description="Professional address.")

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in valuesets.AUTHOR_SPECIALTY:
            raise ValueError("role is not in JDV_J01_XdsAuthorSpecialty_CISIS")
        return value

    @model_validator(mode="after")
    def _identified(self) -> Self:
        if self.rpps is None and self.internal_id is None:
            raise ValueError("a professional needs an rpps or an internal_id")
        return self


class Person(_Model):
    """The person cared for by the ESSMS (resident, user)."""

    local_id: str = Field(
        pattern=r"^[A-Za-z0-9._/-]{1,64}$",
        description="Identifier of the person in the DUI (IPP); used instead of the INS when not qualified.",
    )
    identity_status: IdentityStatus = Field(description="RNIV identity status.")
    doubtful: bool = Field(default=False, description="Identité douteuse (RNIV attribute DOUT).")
    fictitious: bool = Field(default=False, description="Identité fictive (RNIV attribute FICT).")
    ins: Ins | None = Field(default=None, description="INS, required when the status is recuperee or qualifiee.")
    traits: IdentityTraits = Field(description="Identity traits.")
    used_family_name: Name | None = Field(default=None, description="Nom utilisé, when different.")
    used_given_name: Name | None = Field(default=None, description="Prénom utilisé, when different.")
    address: Address | None = Field(default=None, description="Home address (the ESSMS address for a resident).")
    telecoms: list[Telecom] = Field(default_factory=list, max_length=10, description="Contact points.")
    trusted_person: RelatedPerson | None = Field(default=None, description="Personne de confiance.")
    emergency_contacts: list[RelatedPerson] = Field(
        default_factory=list, max_length=5, description="Personnes à prévenir, in order."
    )
    legal_representative: RelatedPerson | None = Field(
        default=None, description="Legal representative (tuteur, curateur...)."
    )
    general_practitioner: Professional | None = Field(default=None, description="Médecin traitant.")
    sharing_refusals: list[ConsentFamily] = Field(
        default_factory=list,
        description=(
            "Consent families the person (or their representative) opposed sharing with, e.g. ['dmp'] "
            "(dmp also covers Mon espace santé, mssante also the person's own MSSanté box)."
        ),
    )
    dmp_visibility: list[DmpVisibility] = Field(
        default_factory=list,
        max_length=3,
        description=(
            "The person's choices about who may see their documents in the DMP: masked to "
            "professionals, invisible to the person, invisible to legal representatives (sent as DMP "
            "confidentiality codes, never written in the document)."
        ),
    )

    @model_validator(mode="after")
    def _identity_rules(self) -> Self:
        status = self.identity_status
        if (self.doubtful or self.fictitious) and status is not IdentityStatus.PROVISOIRE:
            raise ValueError("a doubtful or fictitious identity must stay 'provisoire' (RNIV)")
        if self.doubtful and self.fictitious:
            raise ValueError("an identity cannot be both doubtful and fictitious (RNIV)")
        if status in (IdentityStatus.RECUPEREE, IdentityStatus.QUALIFIEE) and self.ins is None:
            raise ValueError("a 'recuperee' or 'qualifiee' identity status requires the INS (obtained from INSi)")
        if status in (IdentityStatus.PROVISOIRE, IdentityStatus.VALIDEE) and self.ins is not None:
            raise ValueError("a 'provisoire' or 'validee' identity status cannot carry an INS: INSi was not called")
        if self.ins is not None:
            self._check_ins_traits(self.ins)
        if len(set(self.sharing_refusals)) != len(self.sharing_refusals):
            raise ValueError("sharing_refusals has duplicates")
        if len(set(self.dmp_visibility)) != len(self.dmp_visibility):
            raise ValueError("dmp_visibility has duplicates")
        return self

    def _check_ins_traits(self, ins: Ins) -> None:
        traits = self.traits
        if traits.sex is Sex.U:
            raise ValueError("an identity with an INS has sex M or F")
        if ins.kind is InsKind.NIR:
            expected = "1" if traits.sex is Sex.M else "2"
            if ins.matricule[0] != expected:
                raise ValueError("INS matricule sex (character 1) does not match traits.sex")
            year, month = ins.matricule[1:3], int(ins.matricule[3:5])
            if year != f"{traits.birth_date.year % 100:02d}":
                raise ValueError("INS matricule birth year (characters 2-3) does not match traits.birth_date")
            if 1 <= month <= 12 and month != traits.birth_date.month:
                raise ValueError("INS matricule birth month (characters 4-5) does not match traits.birth_date")
        if traits.birth_place_code is None:
            raise ValueError("an identity with an INS needs traits.birth_place_code (INS trait)")

    @property
    def usable_ins(self) -> Ins | None:
        """The INS when it may be used and transmitted (the identity is qualifiée), else None."""
        return self.ins if self.identity_status is IdentityStatus.QUALIFIEE else None

    @property
    def ins_usable(self) -> bool:
        """The INS may be used and transmitted only when the identity is qualifiée."""
        return self.usable_ins is not None


class Essms(_Model):
    """The social or medico-social establishment (géographique) producing the document."""

    finess: Finess = Field(description="FINESS géographique (ET) of the ESSMS.", examples=["750803447"])
    legal_entity_finess: Finess | None = Field(default=None, description="FINESS juridique (EJ) of its manager.")
    name: Name = Field(description="Name of the ESSMS.")
    category_code: str | None = Field(
        default=None, pattern=r"^\d{3}$", description="FINESS category (e.g. 500 EHPAD, 183 IME, 354 SSIAD)."
    )
    facility_type_code: str = Field(
        default="SA17",
        description="healthcareFacilityTypeCode from JDV_J02 (SA17 personnes âgées, SA16 personnes handicapées...).",
    )
    practice_setting_code: str = Field(default="ESSMS", description="practiceSettingCode from JDV_J04 (ESSMS).")
    patient_id_oid: Oid | None = Field(
        default=None,
        description="OID under which the ESSMS issues local person ids; derived from the deployment root if absent.",
    )
    address: Address | None = Field(default=None, description="Postal address.")
    telecoms: list[Telecom] = Field(default_factory=list, max_length=10, description="Contact points.")

    @field_validator("facility_type_code")
    @classmethod
    def _facility(cls, value: str) -> str:
        if value not in valuesets.FACILITY_TYPE:
            raise ValueError("facility_type_code is not in JDV_J02_XdsHealthcareFacilityTypeCode_CISIS")
        return value

    @field_validator("practice_setting_code")
    @classmethod
    def _practice(cls, value: str) -> str:
        if value not in valuesets.PRACTICE_SETTING:
            raise ValueError("practice_setting_code is not in JDV_J04_XdsPracticeSettingCode_CISIS")
        return value


class DuiRecord(_Model):
    """Common base of every record a DUI submits: who, where, by whom."""

    person: Person = Field(description="The person the document is about.")
    essms: Essms = Field(description="The ESSMS producing the document (author institution, custodian).")
    author: Professional = Field(description="Author of the document.")
    legal_authenticator: Professional | None = Field(
        default=None, description="Professional taking legal responsibility for the document; the author if absent."
    )
    confidentiality: Literal["N", "R", "V"] = Field(
        default="N", description="HL7 confidentiality: N normal, R restreint, V très restreint."
    )

    @property
    def signer(self) -> Professional:
        """The legal authenticator, defaulting to the author."""
        return self.legal_authenticator or self.author


# --------------------------------------------------------------------------------------------
# DLU content
# --------------------------------------------------------------------------------------------


class HealthEstablishment(_Model):
    """A health establishment (preferred hospital, emergency department...)."""

    finess: Finess | None = Field(default=None, description="FINESS of the establishment.")
    name: Name = Field(description="Name.")
    address: Address | None = Field(default=None, description="Postal address.")
    telecoms: list[Telecom] = Field(default_factory=list, max_length=10, description="Contact points.")


class Condition(_Model):
    """A problem or a past medical history item."""

    label: Label = Field(description="Label as written by the professional.")
    code: CodedConcept | None = Field(default=None, description="Code (CIM-10 2.16.840.1.113883.6.3 preferred).")
    onset: date | None = Field(default=None, description="Start date.")


class Allergy(_Model):
    """An allergy or intolerance."""

    agent: Label = Field(description="Agent (substance, food, drug).")
    agent_code: CodedConcept | None = Field(default=None, description="Code of the agent.")
    category: Literal["food", "medication", "environment", "other"] = Field(
        default="other", description="Kind of allergy."
    )
    reaction: Label | None = Field(default=None, description="Observed reaction.")
    onset: date | None = Field(default=None, description="Start date.")
    end: date | None = Field(default=None, description="End date.")

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.onset and self.end and self.end < self.onset:
            raise ValueError("end is before onset")
        return self


class Dose(_Model):
    """A dose per intake (a range when high is given)."""

    value: float = Field(gt=0, le=100_000, description="Dose (low bound of a range).")
    high: float | None = Field(default=None, gt=0, le=100_000, description="High bound of a dose range.")
    unit: Label = Field(description="Unit as written (comprimé, mg, goutte, UI...).")

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.high is not None and self.high < self.value:
            raise ValueError("dose high is below value")
        return self


class Frequency(_Model):
    """How often: ``count`` intakes every ``period`` ``unit``."""

    count: int = Field(ge=1, le=48, description="Number of intakes per period.")
    period: int = Field(default=1, ge=1, le=365, description="Length of the period.")
    unit: Literal["h", "d", "wk", "mo"] = Field(default="d", description="Period unit (UCUM): h, d, wk, mo.")


class Treatment(_Model):
    """A current (long-term) treatment."""

    drug: Label = Field(description="Drug as prescribed (name, strength, form).")
    drug_code: CodedConcept | None = Field(
        default=None, description="Drug code (CIS 1.2.250.1.213.2.3.1, UCD, or ATC 2.16.840.1.113883.6.73)."
    )
    dose: Dose | None = Field(default=None, description="Dose per intake.")
    route: str | None = Field(default=None, description="Route, code from JDV_RouteofAdministration (EDQM).")
    frequency: Frequency | None = Field(default=None, description="Frequency of intake.")
    start: date | None = Field(default=None, description="Start date.")
    end: date | None = Field(default=None, description="End date (may be in the future).")
    instructions: Text | None = Field(default=None, description="Free instructions.")

    @field_validator("route")
    @classmethod
    def _route(cls, value: str | None) -> str | None:
        if value is not None and value not in valuesets.ROUTE_OF_ADMINISTRATION:
            raise ValueError("route is not in JDV_RouteofAdministration_CISIS (EDQM code)")
        return value

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        return self


class AdvanceDirectives(_Model):
    """Directives anticipées: whether they exist and where to find them."""

    exists: bool | None = Field(default=None, description="True/False; null when unknown.")
    location: Label | None = Field(
        default=None, description="Where they are kept (e.g. 'dossier de soins, bureau IDE')."
    )
    written_on: date | None = Field(default=None, description="Date they were written.")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.exists is not True and (self.location or self.written_on):
            raise ValueError("location/written_on only make sense when exists is true")
        return self


class StateObservation(_Model):
    """Observed state (état psychique, handicap/déficit, déplacements, autres risques)."""

    code: str = Field(
        description="SNOMED CT code from JDV_ObservationEtatPatient (e.g. 62476001 désorienté, 161898004 chutes).",
        examples=["161898004"],
    )
    present: bool = Field(description="Whether the state is observed (true) or explicitly absent (false).")
    comment: Label | None = Field(default=None, description="Precision.")

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if value not in valuesets.OBSERVATION_ETAT_PATIENT:
            raise ValueError("code is not in JDV_ObservationEtatPatient_CISIS")
        return value


class BmrStatus(_Model):
    """Multi-resistant bacteria (BMR/BHRe) carriage."""

    carrier: bool | None = Field(default=None, description="True/False; null when unknown.")
    details: Label | None = Field(default=None, description="Germ, site, isolation measures.")
    observed_on: date | None = Field(default=None, description="Date of the last sample.")


class Vaccination(_Model):
    """A vaccination."""

    vaccine: Label = Field(description="Vaccine (name or disease).")
    code: CodedConcept | None = Field(default=None, description="Vaccine code (CIS, ATC...).")
    administered_on: date | None = Field(default=None, description="Date of administration.")


class AttachedDocument(_Model):
    """A document of the DLU checklist sent with the resident, optionally embedded."""

    code: str = Field(
        description="Code from JDV_ChecklistDLU (DLU_006 attestation carte Vitale … DLU_019).", examples=["DLU_006"]
    )
    media_type: Literal["application/pdf", "image/jpeg", "image/png", "text/plain"] | None = Field(
        default=None, description="Media type of content."
    )
    content: str | None = Field(
        default=None,
        max_length=15_000_000,
        pattern=r"^[A-Za-z0-9+/\r\n]*={0,2}$",
        description="The document, base64-encoded; when absent only the checklist line is sent.",
    )

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if value not in valuesets.CHECKLIST_DLU:
            raise ValueError("the code is not in JDV_ChecklistDLU_CISIS")
        return value

    @model_validator(mode="after")
    def _both(self) -> Self:
        if (self.content is None) != (self.media_type is None):
            raise ValueError("content and media_type go together")
        return self


class DluContent(_Model):
    """The DLU blocks (HAS DLU, CI-SIS DLU-EHPAD-DLU 2022.01)."""

    preferred_establishment: HealthEstablishment | None = Field(
        default=None, description="Établissement de santé de préférence."
    )
    active_problems: list[Condition] = Field(default_factory=list, max_length=100, description="Pathologies actives.")
    medical_history: list[Condition] = Field(default_factory=list, max_length=100, description="Antécédents médicaux.")
    allergies: list[Allergy] = Field(default_factory=list, max_length=50, description="Allergies et intolérances.")
    treatments: list[Treatment] = Field(default_factory=list, max_length=100, description="Traitements en cours.")
    palliative_care: bool | None = Field(default=None, description="Soins palliatifs en cours (null: not stated).")
    advance_directives: AdvanceDirectives = Field(
        default_factory=AdvanceDirectives, description="Directives anticipées."
    )
    observed_state: list[StateObservation] = Field(
        default_factory=list, max_length=15, description="État observé, one item per code of the value set at most."
    )
    bmr: BmrStatus = Field(default_factory=BmrStatus, description="Portage de BMR.")
    vaccinations: list[Vaccination] = Field(default_factory=list, max_length=100, description="Vaccinations.")
    attached_documents: list[AttachedDocument] = Field(
        min_length=1,
        max_length=14,
        description=(
            "Checklist of documents sent with the resident (JDV_ChecklistDLU): the DLU-EHPAD-DLU model requires "
            "at least one (section FR-Documents-ajoutes)."
        ),
    )
    comment: Text | None = Field(default=None, description="Commentaire libre.")

    @field_validator("attached_documents")
    @classmethod
    def _checklist(cls, value: list[AttachedDocument]) -> list[AttachedDocument]:
        codes = [doc.code for doc in value]
        if len(set(codes)) != len(codes):
            raise ValueError("attached_documents has the same code twice")
        return value

    @field_validator("observed_state")
    @classmethod
    def _unique_state(cls, value: list[StateObservation]) -> list[StateObservation]:
        codes = [item.code for item in value]
        if len(set(codes)) != len(codes):
            raise ValueError("observed_state has the same code twice")
        return value


# --------------------------------------------------------------------------------------------
# FLUDT (transfer EHPAD -> emergency department)
# --------------------------------------------------------------------------------------------


class VitalSigns(_Model):
    """Vital signs measured before the transfer."""

    measured_at: AwareDatetime = Field(description="When they were measured.")
    pulse: int | None = Field(default=None, ge=10, le=300, description="Pulse (/min).")
    temperature: float | None = Field(default=None, ge=25, le=45, description="Temperature (°C).")
    weight: float | None = Field(default=None, gt=0, le=400, description="Weight (kg).")
    systolic: int | None = Field(default=None, ge=30, le=300, description="Systolic blood pressure (mm[Hg]).")
    diastolic: int | None = Field(default=None, ge=10, le=200, description="Diastolic blood pressure (mm[Hg]).")

    @model_validator(mode="after")
    def _bp(self) -> Self:
        if self.systolic is not None and self.diastolic is not None and self.diastolic >= self.systolic:
            raise ValueError("diastolic must be below systolic")
        return self


class Pain(_Model):
    """Recent pain."""

    present: bool = Field(description="Whether the person has recent pain.")
    locations: list[Label] = Field(default_factory=list, max_length=10, description="Where (free text).")


class PersonalItem(_Model):
    """A prosthesis or personal item travelling with the person."""

    code: str = Field(
        description="Code from JDV_ProtheseObjetPersonnel (Q021003 lunettes, P0102 prothèse dentaire, Y2145 "
        "aides auditives, GEN-092.02.01 autre).",
    )
    comment: Label | None = Field(default=None, description="Precision (e.g. 'appareil dentaire du haut').")

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if value not in valuesets.PROTHESE_OBJET_PERSONNEL:
            raise ValueError("the code is not in JDV_ProtheseObjetPersonnel_CISIS")
        return value


class TransferContext(_Model):
    """The transfer of the resident to an emergency department (FLUDT)."""

    transfer_time: AwareDatetime = Field(description="Departure from the ESSMS.")
    reason: Text = Field(description="Motif du transfert.")
    destination: HealthEstablishment = Field(description="Emergency department the person is sent to.")
    vital_signs: VitalSigns | None = Field(default=None, description="Last vital signs.")
    consciousness: Literal["DLU_002", "DLU_003", "DLU_004"] = Field(
        description="DLU_002 conscient et éveillé, DLU_003 éveillable, DLU_004 non éveillable."
    )
    pain: Pain | None = Field(default=None, description="Recent pain.")
    last_treatment_intake: AwareDatetime | None = Field(default=None, description="Last intake of usual treatment.")
    last_meal: AwareDatetime | None = Field(default=None, description="Date and time of the last meal.")
    personal_items: list[PersonalItem] = Field(
        default_factory=list, max_length=10, description="Prostheses and personal items."
    )
    comment: Text | None = Field(default=None, description="Commentaire libre.")

    @model_validator(mode="after")
    def _before_transfer(self) -> Self:
        for name in ("last_treatment_intake", "last_meal"):
            value = getattr(self, name)
            if value is not None and value > self.transfer_time:
                raise ValueError(f"{name} is after transfer_time")
        if self.vital_signs is not None and self.vital_signs.measured_at > self.transfer_time:
            raise ValueError("vital_signs.measured_at is after transfer_time")
        return self


# --------------------------------------------------------------------------------------------
# DLU record
# --------------------------------------------------------------------------------------------


class DluRecord(DuiRecord):
    """What a DUI sends to produce a person's DLU (and the FLUDT when a transfer is given)."""

    dlu: DluContent = Field(description="DLU content, block by block.")
    transfer: TransferContext | None = Field(
        default=None, description="Transfer to an emergency department: when present a FLUDT is produced too."
    )
    last_updated: AwareDatetime = Field(description="When the DLU content was last updated in the DUI.")

    @model_validator(mode="after")
    def _chronology(self) -> Self:
        born = self.person.traits.birth_date
        updated = self.last_updated.date()
        if born > updated:
            raise ValueError("person.traits.birth_date is after last_updated")
        dated: list[tuple[str, date | None]] = []
        for index, cond in enumerate(self.dlu.active_problems):
            dated.append((f"dlu.active_problems.{index}.onset", cond.onset))
        for index, cond in enumerate(self.dlu.medical_history):
            dated.append((f"dlu.medical_history.{index}.onset", cond.onset))
        for index, allergy in enumerate(self.dlu.allergies):
            dated.append((f"dlu.allergies.{index}.onset", allergy.onset))
        for index, treatment in enumerate(self.dlu.treatments):
            dated.append((f"dlu.treatments.{index}.start", treatment.start))
        for index, vaccination in enumerate(self.dlu.vaccinations):
            dated.append((f"dlu.vaccinations.{index}.administered_on", vaccination.administered_on))
        dated.append(("dlu.advance_directives.written_on", self.dlu.advance_directives.written_on))
        dated.append(("dlu.bmr.observed_on", self.dlu.bmr.observed_on))
        for where, value in dated:
            if value is None:
                continue
            if value < born:
                raise ValueError(f"{where} is before person.traits.birth_date")
            if value > updated:
                raise ValueError(f"{where} is after last_updated")
        if self.transfer is not None and self.transfer.transfer_time.date() < born:
            raise ValueError("transfer.transfer_time is before person.traits.birth_date")
        return self


def facts(record: DuiRecord, *, also_refused: Iterable[ConsentFamily] = ()) -> RecordFacts:
    """Routing/audit facts of any DUI record: references and flags, never names or dates.

    ``sharing_refused_with`` holds the person's refusals plus ``also_refused`` (a document's own
    refusals, e.g. the PPA's), all :class:`~mappings.consent.ConsentFamily` members.
    """
    person = record.person
    return RecordFacts(
        person_ref=person.local_id,
        essms_finess=record.essms.finess,
        ins_qualified=person.ins_usable,
        sharing_refused_with=frozenset(person.sharing_refusals) | frozenset(also_refused),
        extra={
            "identity_status": person.identity_status.value,
            # read by the DMP connector (confidentiality codes of the submission), never in the CDA
            "sharing_choices": sorted(v.value for v in person.dmp_visibility),
        },
    )


# --------------------------------------------------------------------------------------------
# The identity rule, once for every document type
# --------------------------------------------------------------------------------------------


def _finess_arc(finess: str) -> str:
    """An OID arc unique per FINESS (leading zeros and Corsican 2A/2B kept distinct)."""
    if finess.isdigit():
        return f"1{finess}"
    return f"{2 if finess[1] == 'A' else 3}{finess[2:]}"


def local_person_root(record: DuiRecord, ctx: RenderContext) -> str:
    """OID under which the person's local id is issued: the ESSMS's own, else derived from the deployment root."""
    return record.essms.patient_id_oid or f"{ctx.id_root}.5.{_finess_arc(record.essms.finess)}"


@dataclass(frozen=True)
class ExchangeIdentity:
    """How a document's exchange metadata identifies the person (XDS patientId, sourcePatientId)."""

    patient_id: str  # the INS matricule when usable (qualifiée), else the local id
    patient_id_system: str  # its OID
    source_patient_id: str  # always the local id...
    source_patient_id_system: str  # ...under local_person_root
    ins_transmissible: bool

    def extra(self) -> dict[str, Any]:
        """The ``ExchangeMetadata.extra`` entries about the person, in their usual order."""
        return {
            "source_patient_id": self.source_patient_id,
            "source_patient_id_system": self.source_patient_id_system,
            "ins_transmissible": self.ins_transmissible,
        }


def exchange_identity(record: DuiRecord, ctx: RenderContext) -> ExchangeIdentity:
    """The person's identifiers for exchange metadata: the INS only when the identity is qualifiée (RNIV)."""
    person = record.person
    local_root = local_person_root(record, ctx)
    ins = person.usable_ins
    patient_id, system = (ins.matricule, ins.oid) if ins is not None else (person.local_id, local_root)
    return ExchangeIdentity(
        patient_id=patient_id,
        patient_id_system=system,
        source_patient_id=person.local_id,
        source_patient_id_system=local_root,
        ins_transmissible=ins is not None,
    )


def ins_refusal(person: Person) -> str | None:
    """Why the INS cannot be used (so DMP / MSSanté patient routing is refused), or None when it can."""
    if person.ins_usable:
        return None
    status = person.identity_status
    why = "identity is not 'qualifiee'" if status is not IdentityStatus.QUALIFIEE else "no INS on a qualified identity"
    return (
        f"DMP/MSSanté patient routing refused: {why} (status {status.value}); "
        "the INS may only be used with a qualified identity (RNIV)"
    )
