"""Base FHIR R4 (4.0.1) rules the R4B models do not enforce: required bindings of the
code elements we emit or accept, and the resource invariants (bdl-*, cmp-*, con-*, ait-*...).

Applied to every resource of the named type, whatever profile it declares.
"""

from __future__ import annotations

from profiles._rules import Binding, Invariant, Profile, Rule
from profiles.definitions.valuesets import ADMINISTRATIVE_GENDER, code_list

__all__ = ["BASE_PROFILES", "COMMON_RULES", "base_profile", "base_url"]

HL7_VS = "http://hl7.org/fhir/ValueSet/"
HL7_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"


def base_url(resource_type: str) -> str:
    return f"http://hl7.org/fhir/StructureDefinition/{resource_type}"


def _bind(path: str, name: str, codes: str, system: str = "") -> Binding:
    systems = frozenset({system}) if system else frozenset()
    return Binding(path, code_list(HL7_VS + name, name, codes, systems))


# Data types used by every resource (checked on the resource's direct elements).
COMMON_RULES: tuple[Rule, ...] = (
    _bind("identifier.use", "identifier-use", "usual|official|temp|secondary|old"),
    _bind("name.use", "name-use", "usual|official|temp|nickname|anonymous|old|maiden"),
    _bind("telecom.system", "contact-point-system", "phone|fax|email|pager|url|sms|other"),
    _bind("telecom.use", "contact-point-use", "home|work|temp|old|mobile"),
    _bind("address.use", "address-use", "home|work|temp|old|billing"),
    _bind("address.type", "address-type", "postal|physical|both"),
    _bind("text.status", "narrative-status", "generated|extensions|additional|empty"),
    Invariant(
        "dom-2",
        "contained.contained.empty()",
        "If the resource is contained in another resource, it SHALL NOT contain nested Resources",
        when=("contained",),
    ),
    Invariant(
        "dom-4",
        "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
        "If a resource is contained in another resource, it SHALL NOT have a meta.versionId or a meta.lastUpdated",
        when=("contained",),
    ),
)

_CLINICAL = HL7_TERMINOLOGY + "condition-clinical"
_CONDITION_VER = HL7_TERMINOLOGY + "condition-ver-status"
_ALLERGY_CLINICAL = HL7_TERMINOLOGY + "allergyintolerance-clinical"
_ALLERGY_VER = HL7_TERMINOLOGY + "allergyintolerance-verification"

_R4_BUNDLE_TYPES = "document|message|transaction|transaction-response|batch|batch-response|history|searchset|collection"

_DEFINITIONS: dict[str, tuple[Rule, ...]] = {
    "Bundle": (
        # R4B added "subscription-notification": not a valid R4 Bundle.type.
        _bind("type", "bundle-type", _R4_BUNDLE_TYPES),
        _bind("entry.request.method", "http-verb", "GET|HEAD|POST|PUT|DELETE|PATCH"),
        _bind("entry.search.mode", "search-entry-mode", "match|include|outcome"),
        Invariant(
            "bdl-1",
            "total.empty() or (type = 'searchset') or (type = 'history')",
            "total only when a search or history",
        ),
        Invariant("bdl-2", "entry.search.empty() or (type = 'searchset')", "entry.search only when a search"),
        Invariant(
            "bdl-3",
            "(type = 'batch' or type = 'transaction' or type = 'history') implies entry.all(request.exists())",
            "entry.request mandatory for batch/transaction/history",
        ),
        Invariant(
            "bdl-3",
            "(type = 'batch' or type = 'transaction' or type = 'history').not() implies entry.request.empty()",
            "entry.request only for batch/transaction/history",
        ),
        Invariant(
            "bdl-4",
            "(type = 'batch-response' or type = 'transaction-response' or type = 'history')"
            " implies entry.all(response.exists())",
            "entry.response mandatory for batch-response/transaction-response/history",
        ),
        Invariant(
            "bdl-4",
            "(type = 'batch-response' or type = 'transaction-response' or type = 'history').not()"
            " implies entry.response.empty()",
            "entry.response only for batch-response/transaction-response/history",
        ),
        Invariant(
            "bdl-7",
            "(type = 'history') or entry.where(fullUrl.exists()).fullUrl.isDistinct()",
            "FullUrl must be unique in a bundle, or else entries with the same fullUrl must have"
            " different meta.versionId",
        ),
        Invariant(
            "bdl-9",
            "type = 'document' implies (identifier.system.exists() and identifier.value.exists())",
            "A document must have an identifier with a system and a value",
        ),
        Invariant("bdl-10", "type = 'document' implies timestamp.exists()", "A document must have a date"),
        Invariant(
            "bdl-11",
            "type = 'document' implies entry.first().resource.is(Composition)",
            "A document must have a Composition as the first resource",
        ),
        Invariant(
            "bdl-12",
            "type = 'message' implies entry.first().resource.is(MessageHeader)",
            "A message must have a MessageHeader as the first resource",
        ),
        Invariant(
            "bdl-5",
            "resource.exists() or request.exists() or response.exists()",
            "must be a resource unless there's a request or response",
            context="entry",
        ),
        Invariant(
            "bdl-8",
            "fullUrl.contains('/_history/').not()",
            "fullUrl cannot be a version specific reference",
            context="entry",
        ),
    ),
    "Patient": (
        Binding("gender", ADMINISTRATIVE_GENDER),
        Invariant(
            "pat-1",
            "name.exists() or telecom.exists() or address.exists() or organization.exists()",
            "SHALL at least contain a contact's details or a reference to an organization",
            context="contact",
        ),
    ),
    "Practitioner": (Binding("gender", ADMINISTRATIVE_GENDER),),
    "RelatedPerson": (Binding("gender", ADMINISTRATIVE_GENDER),),
    "Composition": (
        _bind("status", "composition-status", "preliminary|final|amended|entered-in-error"),
        _bind("attester.mode", "composition-attestation-mode", "personal|professional|legal|official"),
        _bind("section.mode", "list-mode", "working|snapshot|changes"),
        _bind("confidentiality", "v3-ConfidentialityClassification", "U|L|M|N|R|V"),
        Invariant(
            "cmp-1",
            "text.exists() or entry.exists() or section.exists()",
            "A section must contain at least one of text, entries, or sub-sections",
            context="section",
        ),
        Invariant(
            "cmp-2",
            "emptyReason.empty() or entry.empty()",
            "A section can only have an emptyReason if it is empty",
            context="section",
        ),
    ),
    "Observation": (
        _bind(
            "status",
            "observation-status",
            "registered|preliminary|final|amended|corrected|cancelled|entered-in-error|unknown",
        ),
        Invariant(
            "obs-6",
            "dataAbsentReason.empty() or value.empty()",
            "dataAbsentReason SHALL only be present if Observation.value[x] is not present",
            when=("dataAbsentReason",),
        ),
    ),
    "Condition": (
        _bind(
            "clinicalStatus", "condition-clinical", "active|recurrence|relapse|inactive|remission|resolved", _CLINICAL
        ),
        _bind(
            "verificationStatus",
            "condition-ver-status",
            "unconfirmed|provisional|differential|confirmed|refuted|entered-in-error",
            _CONDITION_VER,
        ),
        Invariant(
            "con-4",
            "abatement.empty() or clinicalStatus.coding.where("
            f"system='{_CLINICAL}' and (code='resolved' or code='remission' or code='inactive')).exists()",
            "If condition is abated, then clinicalStatus must be either inactive, resolved, or remission",
            when=("abatement",),
        ),
        Invariant(
            "con-5",
            f"verificationStatus.coding.where(system='{_CONDITION_VER}' and code='entered-in-error').empty()"
            " or clinicalStatus.empty()",
            "Condition.clinicalStatus SHALL NOT be present if verification Status is entered-in-error",
            when=("verificationStatus",),
        ),
    ),
    "AllergyIntolerance": (
        _bind("clinicalStatus", "allergyintolerance-clinical", "active|inactive|resolved", _ALLERGY_CLINICAL),
        _bind(
            "verificationStatus",
            "allergyintolerance-verification",
            "unconfirmed|confirmed|refuted|entered-in-error",
            _ALLERGY_VER,
        ),
        _bind("type", "allergy-intolerance-type", "allergy|intolerance"),
        _bind("category", "allergy-intolerance-category", "food|medication|environment|biologic"),
        _bind("criticality", "allergy-intolerance-criticality", "low|high|unable-to-assess"),
        Invariant(
            "ait-1",
            f"verificationStatus.coding.where(system = '{_ALLERGY_VER}' and code = 'entered-in-error').exists()"
            " or clinicalStatus.exists()",
            "AllergyIntolerance.clinicalStatus SHALL be present if verificationStatus is not entered-in-error",
        ),
        Invariant(
            "ait-2",
            f"verificationStatus.coding.where(system = '{_ALLERGY_VER}' and code = 'entered-in-error').empty()"
            " or clinicalStatus.empty()",
            "AllergyIntolerance.clinicalStatus SHALL NOT be present if verification Status is entered-in-error",
            when=("verificationStatus",),
        ),
    ),
    "MedicationStatement": (
        _bind(
            "status",
            "medication-statement-status",
            "active|completed|entered-in-error|intended|stopped|on-hold|unknown|not-taken",
        ),
    ),
    "Immunization": (_bind("status", "immunization-status", "completed|entered-in-error|not-done"),),
    "Encounter": (
        _bind(
            "status",
            "encounter-status",
            "planned|arrived|triaged|in-progress|onleave|finished|cancelled|entered-in-error|unknown",
        ),
    ),
    "DocumentReference": (
        _bind("status", "document-reference-status", "current|superseded|entered-in-error"),
        _bind("docStatus", "composition-status", "preliminary|final|amended|entered-in-error"),
        _bind("relatesTo.code", "document-relationship-type", "replaces|transforms|signs|appends"),
    ),
    "Consent": (_bind("status", "consent-state-codes", "draft|proposed|active|rejected|inactive|entered-in-error"),),
    "CarePlan": (
        _bind("status", "request-status", "draft|active|on-hold|revoked|completed|entered-in-error|unknown"),
        _bind("intent", "care-plan-intent", "proposal|plan|order|option"),
    ),
    "Goal": (
        _bind(
            "lifecycleStatus",
            "goal-status",
            "proposed|planned|accepted|active|on-hold|completed|cancelled|entered-in-error|rejected",
        ),
    ),
    "ServiceRequest": (
        _bind("status", "request-status", "draft|active|on-hold|revoked|completed|entered-in-error|unknown"),
        _bind(
            "intent",
            "request-intent",
            "proposal|plan|directive|order|original-order|reflex-order|filler-order|instance-order|option",
        ),
    ),
    "QuestionnaireResponse": (
        _bind("status", "questionnaire-answers-status", "in-progress|completed|amended|entered-in-error|stopped"),
    ),
    "Task": (
        _bind(
            "status",
            "task-status",
            "draft|requested|received|accepted|rejected|ready|cancelled|in-progress|on-hold|failed|completed|entered-in-error",
        ),
        _bind(
            "intent",
            "task-intent",
            "unknown|proposal|plan|order|original-order|reflex-order|filler-order|instance-order|option",
        ),
    ),
    "List": (
        _bind("status", "list-status", "current|retired|entered-in-error"),
        _bind("mode", "list-mode", "working|snapshot|changes"),
    ),
}


def _base(resource_type: str, rules: tuple[Rule, ...]) -> Profile:
    return Profile(
        url=base_url(resource_type), type=resource_type, title=f"FHIR R4 {resource_type}", rules=COMMON_RULES + rules
    )


BASE_PROFILES: dict[str, Profile] = {rtype: _base(rtype, rules) for rtype, rules in _DEFINITIONS.items()}


def base_profile(resource_type: str) -> Profile:
    """The base R4 rules for ``resource_type`` (the common data-type rules when none are declared)."""
    return BASE_PROFILES.get(resource_type) or _base(resource_type, ())
