"""PDSm (ans.fhir.fr.pdsm 3.1.1) and IHE MHD (4.2.4-current) profiles: the ITI-65 Provide Document
Bundle, its SubmissionSet and DocumentReference, and the ITI-105 simplified publish.

Generated from the IGs (``generated.py``): the PDSm FSH profiles and their IHE MHD parents
(Minimal -> UnContained Comprehensive -> Comprehensive ProvideBundle / SubmissionSet /
DocumentReference, SimplifiedPublish, the MHD identifier data types and extensions), transcribed in
``profiles/sources/pdsm-3.1.1`` and ``profiles/sources/ihe-mhd-4.2.4`` and pinned by digest.
The IHE MHD profiles are registered too: they apply as parents (of PDSm, of
``tddui-document-reference``) and to resources that declare them.

The gateway's own rules, each with its reason (``docs/profiles.md``):

- ``dui-pdsm-relates`` (error): a replacement carries one ``relatesTo`` — PDSm states it in prose
  only (``constr-bind-relatesTo``/``constr-cdr-rempl``, no FHIRPath);
- ``dui-pdsm-confidentiality`` (error): exactly one HL7 v3 confidentiality level (U/L/M/N/R/V)
  among the security labels — the DMP's ``confidentialityCode`` needs it; PDSm binds
  ``securityLabel`` to JDV_J08 as *extensible* only;
- ``dui-pdsm-bundle-2`` (error): the ITI-65 bundle carries at least one DocumentReference — PDSm's
  description says "une à plusieurs"; its slice stays ``0..*`` as in MHD;
- ``custodian`` targets an Organization: the base R4 element's target, which the generated rules
  do not restate (not a deviation).

Not checked (``docs/profiles.md``): the ``constr-*`` prose invariants, aggregation other than
``contained``, the closed slicing of ``Bundle.entry`` (an entry in no slice is not reported), the
RASS (annuaire) target profiles beyond their resource type, ``context.related:referenceIdList``
(discriminated by a ``type`` pattern the slice does not set).
"""

from __future__ import annotations

from profiles._rules import Invariant, Profile, RefTarget, Rule
from profiles.definitions.generated import load, overlay

__all__ = ["MHD", "PDSM", "PDSM_ALIASES", "PDSM_PROVIDE_BUNDLE", "PROFILES"]

PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
_V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_LEVELS = " or ".join(f"code = '{c}'" for c in ("U", "L", "M", "N", "R", "V"))

#: generated profile id -> the gateway's own rules on it
_GATEWAY_RULES: dict[str, tuple[Rule, ...]] = {
    "pdsm-comprehensive-document-reference": (
        RefTarget("custodian", ("Organization",)),
        Invariant(
            "dui-pdsm-relates",
            "relatesTo.exists() implies relatesTo.count() = 1",
            "relatesTo is 1..1 when the submission replaces a document (PDSm constr-bind-relatesTo, prose)",
        ),
        Invariant(
            "dui-pdsm-confidentiality",
            f"securityLabel.coding.where(system = '{_V3_CONFIDENTIALITY}' and ({_LEVELS})).count() = 1",
            "exactly one HL7 v3 confidentiality level (U/L/M/N/R/V) in securityLabel (the DMP confidentialityCode)",
        ),
    ),
    "pdsm-simplified-publish": (RefTarget("custodian", ("Organization",)),),
    "pdsm-comprehensive-provide-document-bundle": (
        Invariant(
            "dui-pdsm-bundle-2",
            "entry.resource.where(is(DocumentReference)).exists()",
            "at least one DocumentReference (PDSm: 'une à plusieurs' fiches)",
        ),
    ),
}


def _generated() -> dict[str, Profile]:
    out = {}
    for profile in load():
        if profile.url.startswith(PDSM):
            out[profile.url] = overlay(profile, (), _GATEWAY_RULES.get(profile.url[len(PDSM) :], ()))
        elif profile.url.startswith(MHD):
            out[profile.url] = profile
    return out


_BY_URL = _generated()
PDSM_PROVIDE_BUNDLE = _BY_URL[PDSM + "pdsm-comprehensive-provide-document-bundle"]
PROFILES: tuple[Profile, ...] = tuple(_BY_URL.values())

#: the FSH ids differ from the canonical urls used by the examples
PDSM_ALIASES = {PDSM + "PDSm-SimplifiedPublish": PDSM + "pdsm-simplified-publish"}
