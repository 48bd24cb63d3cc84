"""PDSm (ans.fhir.fr.pdsm 3.x, IHE MHD 4.2) DocumentReference, SubmissionSet and provide
Bundle, declared from the PDSm profile definitions (comprehensive and simplified publish)."""

from __future__ import annotations

from profiles._rules import Binding, Card, Fixed, Invariant, Profile, RefTarget, Slice
from profiles.definitions.valuesets import CONFIDENTIALITY

__all__ = ["PDSM", "PDSM_ALIASES", "PROFILES"]

PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
_V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

PDSM_COMPREHENSIVE_DOCUMENT_REFERENCE = Profile(
    url=PDSM + "pdsm-comprehensive-document-reference",
    type="DocumentReference",
    title="PDSm Comprehensive DocumentReference",
    slices=(Slice("securityLabel:confidentiality", (("coding.system", _V3_CONFIDENTIALITY),)),),
    rules=(
        # IHE MHD Comprehensive DocumentReference
        Card("masterIdentifier", 1, 1),
        Card("type", 1, 1),
        Card("category", 1, 1),
        Card("subject", 1, 1),
        RefTarget("subject", ("Patient",)),
        Card("content.attachment.contentType", 1, 1),
        Card("content.format", 1, 1),
        Card("context", 1, 1),
        Card("context.facilityType", 1, 1),
        Card("context.practiceSetting", 1, 1),
        Card("context.sourcePatientInfo", 1, 1),
        RefTarget("context.sourcePatientInfo", ("Patient",)),
        # PDSm
        Card("contained", 1, None),
        Card("custodian", 1, 1),
        RefTarget("custodian", ("Organization",)),
        Card("date", 1, 1),
        Card("author", 1, None),
        RefTarget("author", ("Practitioner", "PractitionerRole", "Device", "Patient")),
        RefTarget("authenticator", ("Practitioner", "PractitionerRole", "Organization")),
        Card("securityLabel:confidentiality", 1, 1),
        Binding("securityLabel:confidentiality", CONFIDENTIALITY),
        Card("content.attachment.size", 1, 1),
        Card("content.attachment.hash", 1, 1),
        Card("content.attachment.title", 1, 1),
        Card("context.period", 1, 1),
        Card("context.period.start", 1, 1),
        Invariant(
            "dui-pdsm-relates",
            "relatesTo.exists() implies relatesTo.count() = 1",
            "relatesTo is 1..1 when the submission replaces a document",
        ),
    ),
)

PDSM_SIMPLIFIED_PUBLISH = Profile(
    url=PDSM + "pdsm-simplified-publish",
    type="DocumentReference",
    title="PDSm Simplified Publish DocumentReference",
    rules=(
        Card("modifierExtension", 0, 0),
        Card("masterIdentifier", 1, 1),
        Card("status", 1, 1),
        Fixed("status", "current"),
        Card("subject", 1, 1),
        RefTarget("subject", ("Patient",)),
        Card("author", 1, None),
        RefTarget("author", ("PractitionerRole", "Practitioner", "Organization", "Device", "Patient", "RelatedPerson")),
        Card("authenticator", 0, 1),
        Card("content.attachment.contentType", 1, 1),
        Card("content.attachment.data", 1, 1),
        Card("content.attachment.url", 0, 0),
        Card("content.attachment.title", 1, 1),
        Card("content.attachment.language", 0, 1),
        Card("content.format", 0, 1),
        Card("context.event", 0, 1),
        Card("context.period", 0, 1),
        Card("context.practiceSetting", 0, 1),
    ),
)

PDSM_SUBMISSIONSET = Profile(
    url=PDSM + "pdsm-submissionset-comprehensive",
    type="List",
    title="PDSm SubmissionSet (comprehensive)",
    rules=(
        Fixed("mode", "working"),
        Fixed("status", "current"),
        Fixed(
            "code",
            {
                "coding": [
                    {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}
                ]
            },
            pattern=True,
        ),
        Card("extension(https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId)", 1, 1),
        Card("extension(https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType)", 1, 1),
        Card("date", 1, 1),
        Card("source", 1, 1),
        Card("subject", 1, 1),
        RefTarget("subject", ("Patient",)),
    ),
)

PDSM_PROVIDE_BUNDLE = Profile(
    url=PDSM + "pdsm-comprehensive-provide-document-bundle",
    type="Bundle",
    title="PDSm Comprehensive Provide Document Bundle (ITI-65)",
    rules=(
        Fixed("type", "transaction"),
        Card("entry.request", 1, 1),
        Card("entry.resource", 1, 1),
        Invariant(
            "dui-pdsm-bundle-1",
            "entry.resource.where(is(List) and code.coding.where(code = 'submissionset').exists()).count() = 1",
            "exactly one SubmissionSet List",
        ),
        Invariant(
            "dui-pdsm-bundle-2",
            "entry.resource.where(is(DocumentReference)).exists()",
            "at least one DocumentReference",
        ),
    ),
)

PROFILES = (PDSM_COMPREHENSIVE_DOCUMENT_REFERENCE, PDSM_SIMPLIFIED_PUBLISH, PDSM_SUBMISSIONSET, PDSM_PROVIDE_BUNDLE)

#: the FSH ids differ from the canonical urls used by the examples
PDSM_ALIASES = {PDSM + "PDSm-SimplifiedPublish": PDSM_SIMPLIFIED_PUBLISH.url}
