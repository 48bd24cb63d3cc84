"""Deliberately broken copies of the kit's DLU/FLUDT/FLUDR examples, with the findings each must produce.

Each expected finding is (schema file, pattern id, kind, location, a fragment of the message). They were
derived from the schematron text and cross-checked, during development, against the ANS reference
pipeline (ISO skeleton, three XSLT steps, Saxon): same failed asserts / fired reports, same locations.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

NS = {"cda": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
V = "urn:hl7-org:v3"

DLU = ("DLU-EHPAD-DLU_2022.01.xml", "DLU-EHPAD-DLU_2022.01")
FLUDT = ("DLU-EHPAD-FLUDT_2022.01.xml", "DLU-EHPAD-FLUDT_2022.01")
FLUDR = ("DLU-EHPAD-FLUDR_2022.01.xml", "DLU-EHPAD-FLUDR_2022.01")

VOLET_DLU = "CI-SIS_DLU-EHPAD-DLU_2022.01.sch"
VOLET_FLUDT = "CI-SIS_DLU-EHPAD-FLUDT_2022.01.sch"
VOLET_FLUDR = "CI-SIS_DLU-EHPAD-FLUDR_2022.01.sch"
MODELES = "CI-SIS_ModelesDeContenusCDA.sch"
ANS = "CI-SIS_Modeles_ANS.sch"

Expected = tuple[str, str, str, str, str]  # schema file, pattern, kind, location, message fragment


@dataclass(frozen=True)
class Mutation:
    name: str
    example: tuple[str, str]
    mutate: Callable[[etree._ElementTree], None]
    expected: tuple[Expected, ...]


def one(tree: etree._ElementTree, xpath: str) -> etree._Element:
    found = tree.xpath(xpath, namespaces=NS)
    assert found, f"mutation target not found: {xpath}"
    return found[0]


def remove(tree: etree._ElementTree, xpath: str) -> None:
    el = one(tree, xpath)
    el.getparent().remove(el)


def section_component(root: str) -> str:
    body = "/cda:ClinicalDocument/cda:component/cda:structuredBody"
    return f"{body}/cda:component[cda:section/cda:templateId/@root='{root}']"


def set_attr(xpath: str, name: str, value: str) -> Callable[[etree._ElementTree], None]:
    def apply(tree: etree._ElementTree) -> None:
        one(tree, xpath).set(name, value)

    return apply


def drop(xpath: str) -> Callable[[etree._ElementTree], None]:
    def apply(tree: etree._ElementTree) -> None:
        remove(tree, xpath)

    return apply


def duplicate(xpath: str) -> Callable[[etree._ElementTree], None]:
    def apply(tree: etree._ElementTree) -> None:
        el = one(tree, xpath)
        el.addnext(copy.deepcopy(el))

    return apply


def null_flavor(xpath: str) -> Callable[[etree._ElementTree], None]:
    def apply(tree: etree._ElementTree) -> None:
        el = one(tree, xpath)
        for attr in ("code", "codeSystem", "displayName", "codeSystemName"):
            el.attrib.pop(attr, None)
        el.set("nullFlavor", "UNK")

    return apply


DOC = "/cda:ClinicalDocument"
BODY = "/ClinicalDocument/component/structuredBody"  # location prefix in findings
CHECKLIST_VALUE = "//cda:observation[cda:templateId/@root='1.2.250.1.213.1.1.3.48.18']/cda:value"
ETAT_PATIENT_CODE = (
    "//cda:section[cda:templateId/@root='1.3.6.1.4.1.19376.1.7.3.1.1.13.7']/cda:entry/"
    "cda:observation[cda:templateId/@root='1.3.6.1.4.1.19376.1.5.3.1.4.13']/cda:code"
)
SERVICE_EVENT = "/cda:ClinicalDocument/cda:documentationOf/cda:serviceEvent"
PROTHESE_CODE = "//cda:observation[cda:templateId/@root='1.2.250.1.213.1.1.3.12']/cda:code"


def add_interpretation_codes(tree: etree._ElementTree) -> None:
    """Two interpretationCode in one FR-Simple-Observation (cardinality [0..1])."""
    value = one(
        tree, "//cda:observation[cda:templateId/@root='1.3.6.1.4.1.19376.1.5.3.1.4.13'][cda:value][1]/cda:value[last()]"
    )
    for code in ("H", "L"):
        el = etree.Element(f"{{{V}}}interpretationCode", code=code, codeSystem="2.16.840.1.113883.5.83")
        value.addnext(el)


CASES: list[tuple[str, tuple[str, str], Callable[[etree._ElementTree], None]]] = [
    ("dlu-missing-documents-ajoutes-section", DLU, drop(section_component("1.2.250.1.213.1.1.2.37"))),
    ("dlu-missing-traitements-section", DLU, drop(section_component("1.3.6.1.4.1.19376.1.5.3.1.3.19"))),
    ("dlu-duplicated-pathologies-actives-section", DLU, duplicate(section_component("1.3.6.1.4.1.19376.1.5.3.1.3.6"))),
    ("dlu-wrong-document-code", DLU, set_attr(f"{DOC}/cda:code", "code", "11488-4")),
    (
        "dlu-wrong-model-templateid",
        DLU,
        set_attr(f"{DOC}/cda:templateId[@root='1.2.250.1.213.1.1.1.22']", "root", "1.2.250.1.213.1.1.1.99"),
    ),
    ("dlu-missing-birth-time", DLU, drop(f"{DOC}/cda:recordTarget/cda:patientRole/cda:patient/cda:birthTime")),
    ("dlu-missing-medecin-traitant", DLU, drop(f"{DOC}/cda:participant[cda:functionCode/@code='PCP']")),
    ("dlu-wrong-service-event-code", DLU, set_attr(f"{SERVICE_EVENT}/cda:code", "code", "28651-8")),
    ("dlu-missing-service-event-effective-time", DLU, drop(f"{SERVICE_EVENT}/cda:effectiveTime")),
    ("dlu-null-flavor-service-event-low", DLU, null_flavor(f"{SERVICE_EVENT}/cda:effectiveTime/cda:low")),
    ("dlu-checklist-code-not-in-value-set", DLU, set_attr(CHECKLIST_VALUE, "code", "DLU_999")),
    ("dlu-checklist-code-null-flavor", DLU, null_flavor(CHECKLIST_VALUE)),
    ("dlu-etat-patient-code-not-in-value-set", DLU, set_attr(ETAT_PATIENT_CODE, "code", "12345678")),
    (
        "dlu-gender-code-not-in-value-set",
        DLU,
        set_attr(f"{DOC}/cda:recordTarget/cda:patientRole/cda:patient/cda:administrativeGenderCode", "code", "X"),
    ),
    (
        "dlu-author-specialty-not-in-value-set",
        DLU,
        set_attr(f"{DOC}/cda:author/cda:assignedAuthor/cda:code", "code", "ZZ_99"),
    ),
    ("dlu-simple-observation-two-interpretation-codes", DLU, add_interpretation_codes),
    (
        "dlu-documents-ajoutes-wrong-section-code",
        DLU,
        set_attr(f"{section_component('1.2.250.1.213.1.1.2.37')}/cda:section/cda:code", "code", "55112-7"),
    ),
    (
        "dlu-dispositions-section-without-text",
        DLU,
        drop(f"{section_component('1.2.250.1.213.1.1.2.172')}/cda:section/cda:text"),
    ),
    (
        "dlu-attached-document-organizer-not-completed",
        DLU,
        set_attr("//cda:organizer[cda:templateId/@root='1.2.250.1.213.1.1.3.18'][1]/cda:statusCode", "code", "active"),
    ),
    (
        "fludt-prothese-section-without-id",
        FLUDT,
        drop(f"{section_component('1.2.250.1.213.1.1.2.53')}/cda:section/cda:id"),
    ),
    ("fludt-missing-signes-vitaux-section", FLUDT, drop(section_component("1.3.6.1.4.1.19376.1.5.3.1.3.25"))),
    ("fludt-wrong-transfer-reason-code", FLUDT, set_attr(ETAT_PATIENT_CODE, "code", "11450-4")),
    ("fludt-prothese-code-not-in-value-set", FLUDT, set_attr(PROTHESE_CODE, "code", "Q999999")),
    ("fludt-wrong-service-event-code", FLUDT, set_attr(f"{SERVICE_EVENT}/cda:code", "code", "34117-2")),
    ("fludt-missing-model-templateid", FLUDT, drop(f"{DOC}/cda:templateId[@root='1.2.250.1.213.1.1.1.23']")),
    ("fludr-missing-documents-ajoutes-section", FLUDR, drop(section_component("1.2.250.1.213.1.1.2.37"))),
    ("fludr-checklist-code-not-in-value-set", FLUDR, set_attr(CHECKLIST_VALUE, "code", "DLU_006")),
]

EXPECTED: dict[str, tuple[Expected, ...]] = {
    "dlu-missing-documents-ajoutes-section": (
        (
            VOLET_DLU,
            "variables",
            "assert",
            "/ClinicalDocument",
            '[CI-SIS_DLU-EHPAD-DLU_2022.01] La section "Documents ajoutés" doit être présente une fois.',
        ),
    ),
    "dlu-missing-traitements-section": (
        (
            VOLET_DLU,
            "variables",
            "assert",
            "/ClinicalDocument",
            '[CI-SIS_DLU-EHPAD-DLU_2022.01] La section "Traitements" doit être présente une fois. Cardinalité',
        ),
    ),
    "dlu-duplicated-pathologies-actives-section": (
        (
            VOLET_DLU,
            "variables",
            "assert",
            "/ClinicalDocument",
            '[CI-SIS_DLU-EHPAD-DLU_2022.01] La section "Pathologies actives" ne peut être présente qu\'une fois.',
        ),
    ),
    "dlu-wrong-document-code": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            '[Entete_DLU-DLU] L\'élément code doit avoir @code ="74207-2" et @codeSystem =',
        ),
    ),
    "dlu-wrong-model-templateid": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            '[Entete_DLU-DLU] Le templateId "1.2.250.1.213.1.1.1.22" (Conformité au modèle DLU-DLU du CI-SIS)',
        ),
    ),
    "dlu-missing-birth-time": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            "[Entete_DLU-DLU] La date de naissance du patient est obligatoirement",
        ),
    ),
    "dlu-missing-medecin-traitant": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            "[Entete_DLU-DLU] Dans le contexte du DLU, le code du functionCode de l'informant est fixé à",
        ),
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            "[Entete_DLU-DLU] Dans le contexte du DLU, le typeCode du participant est fixé à",
        ),
    ),
    "dlu-wrong-service-event-code": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            "[Entete_DLU-DLU] L'attribut code de l'élément documentationOf/serviceEvent/code est fixé à",
        ),
    ),
    "dlu-missing-service-event-effective-time": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "assert",
            "/ClinicalDocument",
            "[Entete_DLU-DLU] Dans le contexte du DLU, la date du début d'exécution de l'acte est",
        ),
    ),
    "dlu-null-flavor-service-event-low": (
        (
            VOLET_DLU,
            "Entete_DLU-DLU",
            "report",
            "/ClinicalDocument",
            "[Entete_DLU-DLU] Dans le contexte du DLU, l'utilisation du nullFlavor pour la date du début",
        ),
    ),
    "dlu-checklist-code-not-in-value-set": (
        (
            VOLET_DLU,
            "JDV_CheckListDLU_DLU",
            "assert",
            BODY + "/component[12]/section/entry/organizer/component/observation/value",
            "[dansJeuDeValeurs] L'élément observation/value [DLU_999:Attestation de la carte",
        ),
    ),
    "dlu-checklist-code-null-flavor": (
        (
            VOLET_DLU,
            "JDV_CheckListDLU_DLU",
            "assert",
            BODY + "/component[12]/section/entry/organizer/component/observation/value",
            '[dansJeuDeValeurs] L\'élément "observation/value" doit avoir ses attributs @code, @codeSystem',
        ),
        (
            VOLET_DLU,
            "JDV_CheckListDLU_DLU",
            "assert",
            BODY + "/component[12]/section/entry/organizer/component/observation/value",
            "[dansJeuDeValeurs] L'élément \"observation/value\" ne doit pas comporter d'attribut",
        ),
    ),
    "dlu-etat-patient-code-not-in-value-set": (
        (
            VOLET_DLU,
            "JDV_ObservationEtatPatient",
            "assert",
            BODY + "/component[8]/section/entry/observation/code",
            "[dansJeuDeValeurs] L'élément observation/code [12345678:capable de",
        ),
    ),
    "dlu-gender-code-not-in-value-set": (
        (
            MODELES,
            "JDV_administrativeGenderCode",
            "assert",
            "/ClinicalDocument/recordTarget/patientRole/patient/administrativeGenderCode",
            "[dansJeuDeValeurs] L'élément administrativeGenderCode [X:Féminin:2.16.840.1.113883.5.1] doit faire",
        ),
    ),
    "dlu-author-specialty-not-in-value-set": (
        (
            MODELES,
            "JDV_assignedAuthorCode",
            "assert",
            "/ClinicalDocument/author/assignedAuthor/code",
            "[dansJeuDeValeurs] L'élément author/assignedAuthor/code [ZZ_99:Médecin - Qualifié en Médecine",
        ),
    ),
    "dlu-simple-observation-two-interpretation-codes": (
        (
            MODELES,
            "E_simpleObservation_fr",
            "assert",
            BODY + "/component[7]/section/entry/observation",
            "[E_simpleObservation_fr.sch] Erreur de conformité CI-SIS : L'élément interpretationCode ne peut",
        ),
    ),
    "dlu-documents-ajoutes-wrong-section-code": (
        (
            ANS,
            "S_documentsAjoutes_ANS",
            "assert",
            BODY + "/component[12]/section",
            "[S_documentsAjoutes_ANS.sch] Erreur de conformité CI-SIS : Le code de cette section doit être",
        ),
    ),
    "dlu-dispositions-section-without-text": (
        (
            ANS,
            "S_dispositions_ANS",
            "assert",
            BODY + "/component/section",
            "[S_dispositions_ANS.sch] Erreur de conformité CI-SIS : l’élément 'text' est",
        ),
    ),
    "dlu-attached-document-organizer-not-completed": (
        (
            ANS,
            "E_organizerDocumentAttache_ANS",
            "assert",
            BODY + "/component[12]/section/entry/organizer",
            "[E_organizerDocumentAttache_ANS.sch] Erreur de conformité CI-SIS : Dansl'entrée",
        ),
    ),
    "fludt-prothese-section-without-id": (
        (
            ANS,
            "S_protheseEtObjetPersonnel_ANS",
            "assert",
            BODY + "/component[6]/section",
            "[S_ProtheseEtObjetPersonnel_ANS] Erreur de conformité CI-SIS : La section doit contenir un élément",
        ),
    ),
    "fludt-missing-signes-vitaux-section": (
        (
            VOLET_FLUDT,
            "variables",
            "assert",
            "/ClinicalDocument",
            '[CI-SIS_DLU-EHPAD-FLUDT_2022.01] La section "Signes vitaux : Pouls / Température / Poids / Tension',
        ),
    ),
    "fludt-wrong-transfer-reason-code": (
        (
            VOLET_FLUDT,
            "S_ResultatsEvenements_DLU-FLUDT",
            "assert",
            BODY + "/component/section/entry/observation",
            "[S_ResultatsEvenements_DLU-FLUDT] Erreur de conformité : l'entrée FR-Simple observation doit avoir",
        ),
    ),
    "fludt-prothese-code-not-in-value-set": (
        (
            VOLET_FLUDT,
            "JDV_ProtheseObjetPersonnel",
            "assert",
            BODY + "/component[6]/section/entry/observation/code",
            "[dansJeuDeValeurs] L'élément observation/code [Q999999:LUNETTES PRÊTES À PORTER (OU LUNETTES",
        ),
    ),
    "fludt-wrong-service-event-code": (
        (
            VOLET_FLUDT,
            "Entete_DLU-FLUDT",
            "assert",
            "/ClinicalDocument",
            "[Entete_DLU-FLUDT] L’attribut code de l’élément documentationOf/serviceEvent/code prend la valeur",
        ),
    ),
    "fludt-missing-model-templateid": (
        (
            VOLET_FLUDT,
            "Entete_DLU-FLUDT",
            "assert",
            "/ClinicalDocument",
            '[Entete_DLU-FLUDT] Le templateId "1.2.250.1.213.1.1.1.23" (Conformité au modèle DLU-FLUDT du',
        ),
    ),
    "fludr-missing-documents-ajoutes-section": (
        (
            VOLET_FLUDR,
            "variables",
            "assert",
            "/ClinicalDocument",
            '[CI-SIS_DLU-EHPAD-FLUDR_2022.01] La section "Documents ajoutés" doit être présente une fois.',
        ),
    ),
    "fludr-checklist-code-not-in-value-set": (
        (
            VOLET_FLUDR,
            "JDV_CheckListDLU-FLUDR",
            "assert",
            BODY + "/component[5]/section/entry/organizer/component/observation/value",
            "[dansJeuDeValeurs] L'élément observation/value [DLU_006:Ordonnance de",
        ),
    ),
}


MUTATIONS: list[Mutation] = [Mutation(name, example, mutate, EXPECTED[name]) for name, example, mutate in CASES]
