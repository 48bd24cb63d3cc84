"""Hypothesis strategies generating *valid* DUI records (shared by the DLU, PPA and FHIR tests).

Composable pieces: :func:`nirs`, :func:`identity_traits`, :func:`persons`, :func:`essms`,
:func:`professionals`, :func:`related_persons`, :func:`dui_parts` (the keyword arguments of any
``DuiRecord`` subclass: person, essms, author, legal_authenticator, confidentiality),
:func:`dlu_contents`, :func:`transfers` and :func:`dlu_records`.

Generated text mixes French letters with accents, apostrophes, hyphens and XML special
characters; free text may span lines. Every value is accepted by the model validators.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from mappings import valuesets
from mappings.record import (
    Address,
    AdvanceDirectives,
    Allergy,
    AttachedDocument,
    BmrStatus,
    CodedConcept,
    Condition,
    DluContent,
    DluRecord,
    Dose,
    Essms,
    Frequency,
    HealthEstablishment,
    IdentityStatus,
    IdentityTraits,
    Ins,
    InsKind,
    Pain,
    Person,
    PersonalItem,
    Professional,
    RelatedPerson,
    Sex,
    StateObservation,
    Telecom,
    TransferContext,
    Treatment,
    Vaccination,
    VitalSigns,
    luhn_ok,
    nir_key,
)

__all__ = [
    "addresses",
    "dlu_contents",
    "dlu_records",
    "dui_parts",
    "essms",
    "finess_numbers",
    "free_texts",
    "identity_traits",
    "labels",
    "names",
    "nirs",
    "persons",
    "professionals",
    "related_persons",
    "rpps_numbers",
    "telecoms",
    "transfers",
]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèêëàâäîïôöùûüçÉÈÊÀÂÎÔÙÇœŒæ"
_NAME_CHARS = _LETTERS + "'- ’"
_SPECIALS = "<>&\"'"
_OFFSETS = (UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=2)), timezone(timedelta(hours=-3)))


def _tidy(value: str) -> str:
    return " ".join(value.split())


names: st.SearchStrategy[str] = (
    st.text(alphabet=_NAME_CHARS + _SPECIALS[:3], min_size=1, max_size=30)
    .map(_tidy)
    .filter(lambda s: any(c.isalpha() for c in s))
)
"""Person or organisation name parts."""

labels: st.SearchStrategy[str] = (
    st.text(alphabet=_LETTERS + " '-,.;:()/%0123456789" + _SPECIALS, min_size=1, max_size=80).map(_tidy).filter(bool)
)
"""Short single-line labels."""


def _xml_char(c: str) -> bool:
    code = ord(c)
    return code not in (0xFFFE, 0xFFFF) and not 0xD800 <= code <= 0xDFFF


free_texts: st.SearchStrategy[str] = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc", "Co", "Cn")).filter(_xml_char),
        st.sampled_from(list("\n\t" + _SPECIALS)),
    ),
    min_size=1,
    max_size=300,
).filter(lambda s: s.strip() != "")
"""Multi-line free text with any XML-safe Unicode character."""


_ascii_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_local_ids = st.text(alphabet=_ID_CHARS + "/", min_size=1, max_size=20)
_staff_ids = st.text(alphabet=_ID_CHARS, min_size=1, max_size=20)


def _luhn_complete(digits: str) -> str:
    for key in "0123456789":
        if luhn_ok(digits + key):
            return digits + key
    raise AssertionError("unreachable")


def _digits(count: int) -> st.SearchStrategy[str]:
    return st.integers(0, 10**count - 1).map(lambda n: f"{n:0{count}d}")


_depts = st.integers(1, 95).map(lambda n: f"{n:02d}")

finess_numbers: st.SearchStrategy[str] = st.one_of(
    st.tuples(_depts, _digits(6)).map(lambda t: _luhn_complete(t[0] + t[1])),
    st.tuples(st.sampled_from(["2A", "2B"]), _digits(7)).map(lambda t: t[0] + t[1]),
)
"""FINESS numbers (Luhn key; Corsican 2A/2B ones unchecked)."""

rpps_numbers: st.SearchStrategy[str] = _digits(10).map(_luhn_complete)
"""RPPS numbers with a valid Luhn key."""

_insee = st.tuples(st.one_of(_depts, st.sampled_from(["2A", "2B", "99"])), _digits(3)).map(lambda t: t[0] + t[1])


@st.composite
def nirs(draw: st.DrawFn, sex: Sex, birth: date) -> str:
    """A NIR consistent with sex and birth date, with its key."""
    dept = draw(st.one_of(_depts, st.sampled_from(["2A", "2B", "99"])))
    rest = draw(_digits(6))
    first13 = f"{'1' if sex is Sex.M else '2'}{birth.year % 100:02d}{birth.month:02d}{dept}{rest}"
    return f"{first13}{nir_key(first13):02d}"


@st.composite
def _nias(draw: st.DrawFn) -> str:
    first13 = draw(st.sampled_from("78")) + draw(_digits(12))
    return f"{first13}{nir_key(first13):02d}"


@st.composite
def identity_traits(
    draw: st.DrawFn, *, with_birth_place: bool | None = None, known_sex: bool = False
) -> IdentityTraits:
    sex = draw(st.sampled_from([Sex.M, Sex.F] if known_sex else list(Sex)))
    birth = draw(st.dates(min_value=date(1905, 1, 1), max_value=date(2005, 12, 31)))
    place = with_birth_place if with_birth_place is not None else draw(st.booleans())
    return IdentityTraits(
        birth_family_name=draw(names),
        birth_given_names=draw(st.lists(names, min_size=1, max_size=3)),
        sex=sex,
        birth_date=birth,
        birth_place_code=draw(_insee) if place else None,
        birth_place_city=draw(st.none() | names) if place else None,
    )


@st.composite
def telecoms(draw: st.DrawFn) -> Telecom:
    system = draw(st.sampled_from(["phone", "fax", "email", "url"]))
    if system in ("phone", "fax"):
        prefix = draw(st.sampled_from(["0", "+33 ", "+33"]))
        pairs = [draw(_digits(2)) for _ in range(4)]
        value = prefix + str(draw(st.integers(1, 9))) + draw(st.sampled_from([" ", "", "."])).join(["", *pairs])
    elif system == "email":
        value = f"{draw(_ascii_words)}@{draw(_ascii_words)}.{draw(st.sampled_from(['fr', 'org', 'com']))}"
    else:
        value = f"https://{draw(_ascii_words)}.fr/{draw(_ascii_words)}"
    return Telecom(system=system, value=value, use=draw(st.sampled_from([None, "home", "work", "mobile", "emergency"])))


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    return Address(
        lines=draw(st.lists(labels, max_size=2)),
        postal_code=draw(st.none() | _digits(5)),
        city=draw(st.none() | names),
        country=draw(st.none() | st.sampled_from(["FRANCE", "Belgique"])),
    )


@st.composite
def related_persons(draw: st.DrawFn, relationships: list[str] | None = None) -> RelatedPerson:
    codes = relationships or valuesets.RELATION_PATIENT.codes()
    return RelatedPerson(
        family_name=draw(names),
        given_name=draw(st.none() | names),
        relationship=draw(st.none() | st.sampled_from(codes)),
        telecoms=draw(st.lists(telecoms(), max_size=2)),
        address=draw(st.none() | addresses()),
    )


@st.composite
def professionals(draw: st.DrawFn, *, roles: list[str] | None = None) -> Professional:
    with_rpps = draw(st.booleans())
    return Professional(
        rpps=draw(rpps_numbers) if with_rpps else None,
        internal_id=None if with_rpps else draw(_staff_ids),
        family_name=draw(names),
        given_name=draw(st.none() | names),
        title=draw(st.sampled_from([None, "DR", "PR"])),
        role=draw(st.sampled_from(roles or ["G15_10/SM54", "G15_10/SM26", "G15_60", "G15_10/SM18", "G15_10"])),
        telecoms=draw(st.lists(telecoms(), max_size=2)),
        address=draw(st.none() | addresses()),
    )


@st.composite
def persons(draw: st.DrawFn, *, status: IdentityStatus | None = None) -> Person:
    """A person with a coherent RNIV status: an INS exactly for recuperee/qualifiee."""
    status = status or draw(st.sampled_from(list(IdentityStatus)))
    with_ins = status in (IdentityStatus.RECUPEREE, IdentityStatus.QUALIFIEE)
    traits = draw(identity_traits(with_birth_place=True if with_ins else None, known_sex=with_ins))
    ins = None
    if with_ins:
        kind = draw(st.sampled_from(list(InsKind)))
        matricule = draw(nirs(traits.sex, traits.birth_date)) if kind is InsKind.NIR else draw(_nias())
        ins = Ins(matricule=matricule, kind=kind, test=draw(st.booleans()))
    flag = draw(st.sampled_from(["none", "doubtful", "fictitious"])) if status is IdentityStatus.PROVISOIRE else "none"
    return Person(
        local_id=draw(_local_ids),
        identity_status=status,
        doubtful=flag == "doubtful",
        fictitious=flag == "fictitious",
        ins=ins,
        traits=traits,
        used_family_name=draw(st.none() | names),
        used_given_name=draw(st.none() | names),
        address=draw(st.none() | addresses()),
        telecoms=draw(st.lists(telecoms(), max_size=2)),
        trusted_person=draw(st.none() | related_persons()),
        emergency_contacts=draw(st.lists(related_persons(), max_size=2)),
        legal_representative=draw(st.none() | related_persons(["TUTEUR", "CURATEUR", "MSVG"])),
        general_practitioner=draw(st.none() | professionals(roles=["G15_10/SM54", "G15_10/SM26"])),
        sharing_refusals=draw(st.lists(st.sampled_from(["dmp", "mssante", "viatrajectoire"]), unique=True)),
    )


@st.composite
def essms(draw: st.DrawFn) -> Essms:
    return Essms(
        finess=draw(finess_numbers),
        legal_entity_finess=draw(st.none() | finess_numbers),
        name=draw(names),
        category_code=draw(st.sampled_from([None, "500", "183", "354", "246"])),
        facility_type_code=draw(st.sampled_from(["SA17", "SA16", "SA41"])),
        patient_id_oid=draw(
            st.none()
            | st.tuples(st.integers(1, 9999), st.integers(1, 999999)).map(lambda t: f"1.2.250.1.{t[0]}.{t[1]}")
        ),
        address=draw(st.none() | addresses()),
        telecoms=draw(st.lists(telecoms(), max_size=2)),
    )


@st.composite
def dui_parts(draw: st.DrawFn, *, status: IdentityStatus | None = None) -> dict[str, Any]:
    """Keyword arguments common to every ``DuiRecord`` subclass."""
    return {
        "person": draw(persons(status=status)),
        "essms": draw(essms()),
        "author": draw(professionals()),
        "legal_authenticator": draw(st.none() | professionals()),
        "confidentiality": draw(st.sampled_from(["N", "R", "V"])),
    }


def _aware(moment: datetime, offset: timezone) -> datetime:
    return moment.replace(tzinfo=UTC).astimezone(offset).replace(microsecond=0)


def _dates_between(low: date, high: date) -> st.SearchStrategy[date]:
    return st.dates(min_value=low, max_value=max(low, high))


def _code(system: str) -> st.SearchStrategy[CodedConcept]:
    return st.builds(
        CodedConcept,
        code=st.tuples(st.sampled_from("ABCIJKMNRZ"), _digits(2), st.sampled_from(["", ".0", ".9"])).map("".join),
        system=st.just(system),
        display=labels,
    )


@st.composite
def dlu_contents(draw: st.DrawFn, born: date, updated: date) -> DluContent:
    """DLU blocks whose dates lie between ``born`` and ``updated``."""
    when = _dates_between(born, updated)
    cim10 = _code("2.16.840.1.113883.6.3")
    drug = st.builds(
        CodedConcept,
        code=_digits(8),
        system=st.sampled_from(["1.2.250.1.213.2.3.1", "2.16.840.1.113883.6.73"]),
        display=labels,
    )
    conditions = st.builds(Condition, label=labels, code=st.none() | cim10, onset=st.none() | when)

    @st.composite
    def allergy(d: st.DrawFn) -> Allergy:
        onset = d(st.none() | when)
        end = d(st.none() | _dates_between(onset, updated)) if onset else None
        return Allergy(
            agent=d(labels),
            agent_code=d(st.none() | drug),
            category=d(st.sampled_from(["food", "medication", "environment", "other"])),
            reaction=d(st.none() | labels),
            onset=onset,
            end=end,
        )

    @st.composite
    def treatment(d: st.DrawFn) -> Treatment:
        start = d(st.none() | when)
        low = d(st.floats(min_value=0.01, max_value=1000, allow_nan=False).map(lambda v: round(v, 2)))
        high = d(st.none() | st.floats(min_value=low, max_value=2000, allow_nan=False).map(lambda v: round(v, 2)))
        return Treatment(
            drug=d(labels),
            drug_code=d(st.none() | drug),
            dose=d(st.none() | st.just(Dose(value=low, high=high if high and high >= low else None, unit=d(labels)))),
            route=d(st.none() | st.sampled_from(valuesets.ROUTE_OF_ADMINISTRATION.codes())),
            frequency=d(
                st.none()
                | st.builds(
                    Frequency,
                    count=st.integers(1, 12),
                    period=st.integers(1, 30),
                    unit=st.sampled_from(["h", "d", "wk", "mo"]),
                )
            ),
            start=start,
            end=d(st.none() | st.dates(min_value=start or born, max_value=date(2040, 12, 31))),
            instructions=d(st.none() | free_texts),
        )

    exists = draw(st.none() | st.booleans())
    directives = AdvanceDirectives(
        exists=exists,
        location=draw(st.none() | labels) if exists else None,
        written_on=draw(st.none() | when) if exists else None,
    )
    states = draw(st.lists(st.sampled_from(valuesets.OBSERVATION_ETAT_PATIENT.codes()), unique=True, max_size=15))

    @st.composite
    def document(d: st.DrawFn, code: str) -> AttachedDocument:
        embedded = d(st.booleans())
        return AttachedDocument(
            code=code,
            media_type="application/pdf" if embedded else None,
            content=base64.b64encode(d(st.binary(min_size=1, max_size=64))).decode() if embedded else None,
        )

    checklist = draw(st.lists(st.sampled_from(valuesets.CHECKLIST_DLU.codes()), unique=True, min_size=1, max_size=4))
    return DluContent(
        preferred_establishment=draw(
            st.none()
            | st.builds(
                HealthEstablishment,
                finess=st.none() | finess_numbers,
                name=names,
                address=st.none() | addresses(),
                telecoms=st.lists(telecoms(), max_size=1),
            )
        ),
        active_problems=draw(st.lists(conditions, max_size=3)),
        medical_history=draw(st.lists(conditions, max_size=3)),
        allergies=draw(st.lists(allergy(), max_size=3)),
        treatments=draw(st.lists(treatment(), max_size=3)),
        palliative_care=draw(st.none() | st.booleans()),
        advance_directives=directives,
        observed_state=[
            StateObservation(code=code, present=draw(st.booleans()), comment=draw(st.none() | labels))
            for code in states
        ],
        bmr=BmrStatus(
            carrier=draw(st.none() | st.booleans()),
            details=draw(st.none() | labels),
            observed_on=draw(st.none() | when),
        ),
        vaccinations=draw(
            st.lists(
                st.builds(Vaccination, vaccine=labels, code=st.none() | drug, administered_on=st.none() | when),
                max_size=3,
            )
        ),
        attached_documents=[draw(document(code)) for code in checklist],
        comment=draw(st.none() | free_texts),
    )


@st.composite
def transfers(draw: st.DrawFn, after: datetime) -> TransferContext:
    """A transfer to an emergency department a little after ``after``."""
    offset = draw(st.sampled_from(_OFFSETS))
    leave = _aware(
        after.astimezone(UTC).replace(tzinfo=None) + draw(st.timedeltas(timedelta(0), timedelta(days=3))), offset
    )

    def before(d: st.DrawFn) -> datetime | None:
        if not d(st.booleans()):
            return None
        return leave - timedelta(seconds=d(st.integers(0, 30 * 3600)))

    measured = before(draw)
    signs = None
    if measured is not None:
        systolic = draw(st.none() | st.integers(60, 250))
        signs = VitalSigns(
            measured_at=measured,
            pulse=draw(st.none() | st.integers(30, 200)),
            temperature=draw(st.none() | st.floats(34, 42).map(lambda v: round(v, 1))),
            weight=draw(st.none() | st.floats(30, 150).map(lambda v: round(v, 1))),
            systolic=systolic,
            diastolic=draw(st.none() | st.integers(20, min(200, (systolic or 201) - 1))),
        )
    return TransferContext(
        transfer_time=leave,
        reason=draw(free_texts),
        destination=draw(
            st.builds(
                HealthEstablishment,
                finess=st.none() | finess_numbers,
                name=names,
                address=st.none() | addresses(),
                telecoms=st.lists(telecoms(), max_size=1),
            )
        ),
        vital_signs=signs,
        consciousness=draw(st.sampled_from(["DLU_002", "DLU_003", "DLU_004"])),
        pain=draw(st.none() | st.builds(Pain, present=st.booleans(), locations=st.lists(labels, max_size=2))),
        last_treatment_intake=before(draw),
        last_meal=before(draw),
        personal_items=draw(
            st.lists(
                st.builds(
                    PersonalItem,
                    code=st.sampled_from(valuesets.PROTHESE_OBJET_PERSONNEL.codes()),
                    comment=st.none() | labels,
                ),
                max_size=3,
            )
        ),
        comment=draw(st.none() | free_texts),
    )


@st.composite
def dlu_records(
    draw: st.DrawFn, *, with_transfer: bool | None = None, status: IdentityStatus | None = None
) -> DluRecord:
    """A valid :class:`DluRecord` (with a transfer when asked, or at random)."""
    parts = draw(dui_parts(status=status))
    born = parts["person"].traits.birth_date
    day = draw(st.dates(min_value=max(born, date(2015, 1, 1)), max_value=date(2035, 12, 31)))
    moment = datetime.combine(day, draw(st.times(max_value=time(23, 59, 59)))).replace(microsecond=0)
    updated = _aware(moment, draw(st.sampled_from(_OFFSETS)))
    if updated.date() < born:  # a negative offset may move the local date before the birth date
        updated = updated.astimezone(UTC)
        if updated.date() < born:
            updated = datetime.combine(born, time(12), tzinfo=UTC)
    transfer = with_transfer if with_transfer is not None else draw(st.booleans())
    return DluRecord(
        **parts,
        dlu=draw(dlu_contents(born, updated.date())),
        transfer=draw(transfers(updated)) if transfer else None,
        last_updated=updated,
    )
