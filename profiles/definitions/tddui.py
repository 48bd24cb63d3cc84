"""TDDUI (ans.fhir.fr.tddui) profiles the gateway emits and accepts.

Generated from the IG (``generated.py``: TDDUI 2.2.0 differentials, 2.2.0-ballot for Practitioner
and Encounter séjour, over FR Core and IHE MHD) for every profile of the 2.2.0 bundle; two profiles
the generated set does not hold are still declared by hand from the IG sources: Task prestation
(2.2.0-ballot) and Goal projet de vie (2.2.0-ballot, removed in 2.2.0).

The gateway's own rules (``dui-*``), each with its reason:

- ``dui-tddui-id`` (warning): business identifier values follow ``3+FINESS/localId-KIND-n`` —
  the IG states it as an example, not a constraint;
- ``dui-tddui-patient-1`` (error): a ``tddui-patient`` carries no INS — the IG's definition of
  the profile ("usager lorsque l'INS n'est pas transmis"); ``tddui-patient-ins`` is for the INS.
"""

from __future__ import annotations

from profiles._rules import Card, Fixed, Invariant, Profile, RefTarget, Rule
from profiles.definitions.fr_core import INS_SYSTEMS
from profiles.definitions.generated import load, overlay

__all__ = ["PROFILES", "TDDUI", "TDDUI_ALIASES", "TDDUI_BUNDLE"]

TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"
TDDUI_CS = "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/"
PATIENT = ("Patient",)

_NO_INS = "identifier.where(" + " or ".join(f"system = '{s}'" for s in sorted(INS_SYSTEMS)) + ").empty()"


def _id_convention(path: str, kind: str) -> Rule:
    """The TDDUI business identifier value convention ``3<FINESS>/<local id>-<KIND>-<n>`` (warning)."""
    return Invariant(
        "dui-tddui-id",
        f"matches('^3([0-9]{{2}}|2[AB])[0-9]{{7}}/.+-{kind}-.+$')"
        if kind
        else "matches('^3([0-9]{2}|2[AB])[0-9]{7}/.+$')",
        f"TDDUI identifier value convention: 3+FINESS/localId{'-' + kind + '-n' if kind else ''}",
        severity="warning",
        context=f"{path}.value",
    )


def _business_id(path: str, system: str, kind: str) -> tuple[Rule, ...]:
    return (
        Card(f"{path}.system", 1, 1),
        Fixed(f"{path}.system", system),
        Card(f"{path}.value", 1, 1),
        _id_convention(path, kind),
    )


#: generated profile id -> the gateway's own rules on it
_GATEWAY_RULES: dict[str, tuple[Rule, ...]] = {
    "tddui-patient": (
        _id_convention("identifier:PI", ""),
        Invariant(
            "dui-tddui-patient-1", _NO_INS, "tddui-patient carries no INS: use tddui-patient-ins to transmit an INS"
        ),
    ),
    "tddui-patient-ins": (_id_convention("identifier:PI", ""),),
    "tddui-encounter-sejour": (_id_convention("identifier:idStay", "SEJOUR"),),
    "tddui-encounter-evenement": (_id_convention("identifier", "EVN"),),
    "tddui-questionnaire-response": (_id_convention("identifier", "EVAL"),),
    "tddui-careplan-projet-personnalise": (_id_convention("identifier", "PPER"),),
    "tddui-goal-objectif": (_id_convention("identifier", "OBJE"),),
    "tddui-goal-attente": (_id_convention("identifier", "ATTE"),),
    "tddui-service-request-besoin": (_id_convention("identifier", "BESO"),),
    "tddui-task-bilan": (_id_convention("identifier", "BILA"),),
    "tddui-task-prestation": (_id_convention("identifier", "PRES"),),
}


def _generated() -> dict[str, Profile]:
    out = {}
    for profile in load():
        if profile.url.startswith(TDDUI):
            out[profile.url] = overlay(profile, (), _GATEWAY_RULES.get(profile.url[len(TDDUI) :], ()))
    return out


_BY_URL = _generated()
TDDUI_BUNDLE = _BY_URL[TDDUI + "tddui-bundle"]

TDDUI_GOAL_PROJET_VIE = Profile(
    url=TDDUI + "tddui-goal-projet-vie",
    type="Goal",
    title="TDDUI Goal Projet de vie",
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-projetvie.esante.gouv.fr", "PDV"),
        Card("description.text", 1, 1),
        RefTarget("subject", PATIENT),
    ),
)


PROFILES = (*_BY_URL.values(), TDDUI_GOAL_PROJET_VIE)

#: earlier canonical ids of the same profiles (2.2.0-ballot FSH ids)
TDDUI_ALIASES = {
    TDDUI + "tddui-careplan-projet-perso": TDDUI + "tddui-careplan-projet-personnalise",
}
