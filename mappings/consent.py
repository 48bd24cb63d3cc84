"""The one closed vocabulary of sharing choices: consent families.

A person (or their legal representative) may oppose sharing their data with a family of
recipients. The record says so in ``person.sharing_refusals`` (every document type) and
``ppa.sharing_refusals[].partner`` (the PPA); both use :class:`ConsentFamily`, and
:attr:`mappings.base.RecordFacts.sharing_refused_with` carries the merged families. The gateway
maps each routing category to the family it falls under (``gateway.routing.CATEGORY_CONSENT``).

- ``dmp``: the DMP and Mon espace santé, which is fed through the DMP (dmp-mes.md: feeding needs
  no explicit consent, but the person may oppose it for a legitimate reason);
- ``mssante``: MSSanté messaging, professional mailboxes and the person's own
  ``<INS>@patient.mssante.fr`` box in Mon espace santé (mssante.md);
- ``viatrajectoire``: the SI-SdO orientation follow-up (sdo-viatrajectoire.md);
- ``sidoba``: statistical and indicator feeds to the CNSA (sidoba-indicators.md);
- ``fhir``: partner software receiving TDDUI data through a FHIR server (tddui-fhir.md).

Values are matched after trimming and lower-casing (``"DMP "`` is ``dmp``), so a spelling variant
can never slip past a refusal. :func:`read_refusals` reads stored values conservatively: one it
does not recognise refuses every family.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ConsentFamily", "DmpVisibility", "Refusals", "read_refusals"]


class ConsentFamily(StrEnum):
    """A family of recipients a person may refuse to share with (the record's refusal values)."""

    DMP = "dmp"
    MSSANTE = "mssante"
    VIATRAJECTOIRE = "viatrajectoire"
    SIDOBA = "sidoba"
    FHIR = "fhir"

    @classmethod
    def _missing_(cls, value: object) -> ConsentFamily | None:
        # Called by ConsentFamily(value) and by pydantic when the exact value is not a member.
        if isinstance(value, str):
            normalised = value.strip().lower()
            for member in cls:
                if member.value == normalised:
                    return member
        return None


class DmpVisibility(StrEnum):
    """What the person chose about who may see their documents in the DMP (dmp-mes.md, masking):
    sent as DMP confidentiality codes in the exchange metadata, never written in the CDA."""

    MASKED_TO_PROFESSIONALS = "masked_to_professionals"
    INVISIBLE_TO_PERSON = "invisible_to_person"
    INVISIBLE_TO_LEGAL_REPRESENTATIVES = "invisible_to_legal_representatives"


@dataclass(frozen=True)
class Refusals:
    """What a person refused: the families recognised, and whether anything was not recognised."""

    families: frozenset[ConsentFamily] = frozenset()
    unrecognised: bool = False

    def refuses(self, family: ConsentFamily) -> bool:
        """True when sharing with ``family`` is refused; an unrecognised refusal refuses every family."""
        return self.unrecognised or family in self.families


def read_refusals(values: Iterable[str]) -> Refusals:
    """Refusal values (e.g. facts stored by an older version) read as consent families.

    A value that is no family after trimming and lower-casing cannot be matched to what the
    person meant, so it is kept as "unrecognised" and refuses every family: a refusal is never
    dropped because its spelling changed.
    """
    families: set[ConsentFamily] = set()
    unrecognised = False
    for value in values:
        try:
            families.add(ConsentFamily(value))
        except ValueError:
            unrecognised = True
    return Refusals(families=frozenset(families), unrecognised=unrecognised)
