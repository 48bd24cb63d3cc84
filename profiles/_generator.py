"""Authoring-time generator: FHIR StructureDefinitions -> the engine's constraint data.

Reads standard FHIR NPM packages (``package.tgz``: ``package/*.json``) and folders of
StructureDefinition / ValueSet / CodeSystem JSON (the hand-transcribed TDDUI 2.2 and IHE MHD
differentials under ``profiles/sources/``), resolves each profile's parents, and maps

- ``min``/``max`` -> ``card``; ``fixed[x]``/``pattern[x]`` -> ``fixed`` (``pattern``);
- required ``binding`` -> ``binding`` (the code list resolved from the IGs' ValueSets and
  CodeSystems or from the CI-SIS kit's ``jeuxDeValeurs``; unresolved -> ``available: false``,
  reported by the validator as "not checked");
- ``type.targetProfile`` -> ``reference``; a choice restricted to some types -> ``types``;
- ``slicing`` discriminators -> slice predicates; ``constraint`` (FHIRPath) -> ``invariant``;
- type profiles of extensions and data types (``extension(url)``, ``HumanName`` profiles) are
  inlined under the element that uses them.

Each profile keeps only the rules of its own differential; its ``parents`` (the generated
profiles of its ``baseDefinition`` chain) apply too. The result is plain JSON, committed as
``profiles/data/generated.json`` by ``scripts/gen_profiles.py`` and pinned by a test.
"""

from __future__ import annotations

import copy
import json
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

__all__ = ["Library", "generate"]

BASE_SD = "http://hl7.org/fhir/StructureDefinition/"
BASE_VS = "http://hl7.org/fhir/ValueSet/"
SVS = "{urn:ihe:iti:svs:2008}"

#: target profiles not available as StructureDefinitions here -> the resource type they constrain
KNOWN_TYPES = {
    "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-practitioner-role": "PractitionerRole",
    "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-task-action": "Task",
    "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-task-moyen-ressource": "Task",
    "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-task-prestation": "Task",
    "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-task-transport-professionnel": "Task",
    "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-task-transport-usager": "Task",
    # RASS (ans.fhir.fr.annuaire 1.1.0) profiles PDSm references: not transcribed, checked as plain types
    "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-practitioner": "Practitioner",
    "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-practitionerrole": "PractitionerRole",
    "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-organization": "Organization",
    "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-folder-comprehensive": "List",
}

#: OIDs of the kit's JDV code systems -> their FHIR canonical URI (others are expected as ``urn:oid:``)
OID_URIS = {
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.5.111": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "1.2.250.1.213.1.1.4.327": "https://mos.esante.gouv.fr/NOS/TRE_R217-ProtectionJuridique/FHIR/TRE-R217-ProtectionJuridique",
    "2.16.840.1.113883.5.25": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "1.2.250.1.213.1.1.4.322": "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis",
    "1.2.250.1.213.3.3.60": "https://smt.esante.gouv.fr/terminologie-SERAFINPH",
    # ROR / MDPH nomenclatures bound by SDO (NOS CodeSystems' identifier urn:oid:…, read in the NOS FHIR
    # definitions; TRE_R240 from the FHIR JDV_J30, which lists the kit's JDV_J30 codes under it)
    "1.2.250.1.213.3.3.13": "https://mos.esante.gouv.fr/NOS/TRE_R213-ModePriseEnCharge/FHIR/TRE-R213-ModePriseEnCharge",
    "1.2.250.1.213.3.3.31": "https://mos.esante.gouv.fr/NOS/TRE_R240-TemporaliteAccueil/FHIR/TRE-R240-TemporaliteAccueil",
    "1.2.250.1.213.3.3.39": "https://mos.esante.gouv.fr/NOS/TRE_R244-CategorieOrganisation/FHIR/TRE-R244-CategorieOrganisation",
    "1.2.250.1.213.1.6.1.8": "https://mos.esante.gouv.fr/NOS/TRE_R66-CategorieEtablissement/FHIR/TRE-R66-CategorieEtablissement",
}

TRE_R216 = "https://mos.esante.gouv.fr/NOS/TRE_R216-HL7RoleCode/FHIR/TRE-R216-HL7RoleCode"

_CHOICE_SUFFIX = re.compile(r"^[a-z][A-Za-z]*$")


def _bare(url: str) -> str:
    return url.split("|", 1)[0]


def _strip_display(value: Any) -> Any:
    """Patterns are matched without ``display`` (a label, not part of the code's identity)."""
    if isinstance(value, Mapping):
        return {k: _strip_display(v) for k, v in value.items() if k != "display"}
    if isinstance(value, list):
        return [_strip_display(v) for v in value]
    return value


def _fixed(element: Mapping[str, Any]) -> tuple[Any, bool] | None:
    for key, value in element.items():
        if key.startswith("fixed") and key != "fixed":
            return _strip_display(value), False
        if key.startswith("pattern") and key != "pattern":
            return _strip_display(value), True
    return None


@dataclass
class Expansion:
    """A value set's codes, the systems they come from, and whole systems without a code list here
    (``open_systems``: any code of such a system is accepted, only the system is checked)."""

    codes: set[str] = field(default_factory=set)
    systems: set[str] = field(default_factory=set)
    open_systems: set[str] = field(default_factory=set)
    source: str = ""
    any_system: bool = False  # some codes come without their system
    partial: bool = False  # a part of the union has no code list here: codes outside the rest are "not checked"

    def merge(self, other: Expansion) -> None:
        self.any_system = self.any_system or other.any_system
        self.partial = self.partial or other.partial
        self.codes |= other.codes
        self.systems |= other.systems
        self.open_systems |= other.open_systems


@dataclass
class Library:
    """StructureDefinitions, ValueSets and CodeSystems by canonical URL (later loads win)."""

    sds: dict[str, dict[str, Any]] = field(default_factory=dict)
    older: list[dict[str, Any]] = field(default_factory=list)  # replaced SDs with snapshots (fallback)
    valuesets: dict[str, dict[str, Any]] = field(default_factory=dict)
    codesystems: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, str]] = field(default_factory=list)
    jdv: dict[str, tuple[str, list[str], list[str]]] = field(default_factory=dict)  # key -> (file, codes, systems)

    # -- loading --------------------------------------------------------------------------
    def load_package(self, path: Path) -> None:
        with tarfile.open(path) as tar:
            manifest = json.load(_member(tar, "package/package.json"))
            label = f"{manifest['name']}#{manifest['version']}"
            self.sources.append({"source": label, "file": path.name})
            for member in tar.getmembers():
                name = member.name
                if name.count("/") != 1 or not name.endswith(".json") or name.endswith("package.json"):
                    continue
                resource = json.load(_member(tar, name))
                self._add(resource, label)

    def load_folder(self, path: Path, label: str) -> None:
        self.sources.append({"source": label, "file": path.name})
        for file in sorted(path.glob("*.json")):
            self._add(json.loads(file.read_text(encoding="utf-8")), label)

    def load_jdv(self, folder: Path) -> None:
        """The CI-SIS kit's value sets (IHE SVS files), by ``urlFichier`` tail, JDV number and name."""
        for file in sorted(folder.glob("*.xml")):
            try:
                tree = etree.parse(str(file))
            except etree.XMLSyntaxError:
                continue
            valueset = tree.find(f".//{SVS}ValueSet")
            if valueset is None:
                continue
            concepts = [c for c in tree.iter(f"{SVS}Concept") if c.get("code")]
            codes = [str(c.get("code")) for c in concepts]
            oids = {str(c.get("codeSystem")) for c in concepts if c.get("codeSystem")}
            systems = sorted({OID_URIS.get(o, f"urn:oid:{o}") for o in oids})
            if "2.16.840.1.113883.5.111" in oids:  # the MOS publishes v3 RoleCode as TRE_R216 too
                systems.append(TRE_R216)
            entry = (file.name, codes, systems)
            url = valueset.get("urlFichier") or ""
            if url:
                self.jdv.setdefault("url:" + url.rstrip("/").rsplit("/", 1)[-1].lower(), entry)
            number = re.search(r"_(J\d+)_", file.name)
            if number:
                self.jdv.setdefault("num:" + number.group(1).lower(), entry)
            self.jdv.setdefault("name:" + _norm(file.stem), entry)

    def _add(self, resource: Mapping[str, Any], label: str) -> None:
        rtype = resource.get("resourceType")
        url = resource.get("url")
        if not isinstance(url, str):
            return
        target = {"StructureDefinition": self.sds, "ValueSet": self.valuesets, "CodeSystem": self.codesystems}.get(
            str(rtype)
        )
        if target is None:
            return
        previous = target.get(url)
        if previous is not None and rtype == "StructureDefinition" and "snapshot" in previous:
            self.older.append({**previous, "_origin": self.origin.get(url, "")})
        target[url] = dict(resource)
        self.origin[url] = f"{label}|{resource.get('version', '')}"

    # -- structure ------------------------------------------------------------------------
    def chain(self, url: str) -> list[dict[str, Any]]:
        """The SD of ``url`` and its loaded ancestors, root-most first."""
        out: list[dict[str, Any]] = []
        current: str | None = _bare(url)
        while current and current in self.sds and not current.startswith(BASE_SD):
            sd = self.sds[current]
            out.insert(0, sd)
            base = sd.get("baseDefinition")
            current = _bare(base) if isinstance(base, str) else None
        return out

    def merged(self, url: str) -> dict[str, dict[str, Any]]:
        """Element id -> element, differentials applied from the root-most profile down."""
        elements: dict[str, dict[str, Any]] = {}
        for sd in self.chain(url):
            for element in sd.get("differential", {}).get("element", []):
                current = elements.setdefault(element["id"], {})
                current.update(copy.deepcopy(element))
        return elements

    def type_of(self, profile: str) -> str | None:
        bare = _bare(profile)
        if bare.startswith(BASE_SD):
            return bare[len(BASE_SD) :]
        sd = self.sds.get(bare)
        if sd is not None:
            return str(sd["type"])
        return KNOWN_TYPES.get(bare)

    # -- value sets -----------------------------------------------------------------------
    def codes(self, url: str, depth: int = 0) -> Expansion | None:
        """The code list of a value set, or ``None`` when none is available here."""
        bare = _bare(url)
        vs = self.valuesets.get(bare)
        if vs is not None and depth < 5:
            return self._compose(vs, depth)
        return self._jdv(bare)

    def _compose(self, vs: Mapping[str, Any], depth: int) -> Expansion | None:
        out = Expansion(source=self.origin.get(vs["url"], ""))
        expansion = vs.get("expansion", {}).get("contains")
        if expansion:
            for item in expansion:
                out.codes.add(item["code"])
                if item.get("system"):
                    out.systems.add(item["system"])
            return out
        for include in vs.get("compose", {}).get("include", []):
            if include.get("filter"):
                return None
            for inner in include.get("valueSet", []):
                sub = self.codes(inner, depth + 1)
                if sub is None:
                    out.partial = True
                    continue
                out.merge(sub)
            system = include.get("system")
            if system is None:
                continue
            if include.get("concept"):
                out.codes |= {c["code"] for c in include["concept"]}
                out.systems.add(system)
                continue
            cs = self.codesystems.get(system)
            if cs is not None and cs.get("concept"):
                out.codes |= set(_cs_codes(cs["concept"]))
                out.systems.add(system)
            else:
                out.open_systems.add(system)  # the whole code system, whose codes are not available here
        for exclude in vs.get("compose", {}).get("exclude", []):
            out.codes -= {c["code"] for c in exclude.get("concept", [])}
        if not out.codes and not out.open_systems:
            return None
        return out

    def _jdv(self, url: str) -> Expansion | None:
        keys = []
        nos = re.search(r"/NOS/([^/]+)", url)
        if nos:
            keys.append("url:" + nos.group(1).lower())
        tail = url.rstrip("/").rsplit("/", 1)[-1]
        number = re.search(r"(?:^|[-_])(j\d+)(?:[-_]|$)", tail.lower())
        if number:
            keys.append("num:" + number.group(1))
        keys.append("name:" + _norm(tail))
        for key in keys:
            if key in self.jdv:
                file, codes, systems = self.jdv[key]
                return Expansion(codes=set(codes), systems=set(systems), source=f"cisis-kit jeuxDeValeurs/{file}")
        return None


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _cs_codes(concepts: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for concept in concepts:
        yield str(concept["code"])
        yield from _cs_codes(concept.get("concept", []))


def _member(tar: tarfile.TarFile, name: str) -> Any:
    handle = tar.extractfile(name)
    if handle is None:
        raise FileNotFoundError(name)
    return handle


# ---------------------------------------------------------------------------------------------
# element ids -> rule paths
# ---------------------------------------------------------------------------------------------


def _split_id(element_id: str) -> list[str]:
    """``Patient.extension:birthPlace.value[x]`` -> [``Patient``, ``extension:birthPlace``, ``value[x]``]
    (slice names may contain dots only inside extension URLs, which ids never carry)."""
    return element_id.split(".")


class _Profile:
    """Generation state for one profile: its merged elements and the rules it emits."""

    def __init__(self, lib: Library, url: str, notes: list[str]) -> None:
        self.lib = lib
        self.url = url
        self.sd = lib.sds[url]
        self.root = str(self.sd["type"])
        self.merged = lib.merged(url)
        self.own = [e["id"] for e in self.sd.get("differential", {}).get("element", [])]
        self.notes = notes
        self.slices: dict[str, list[list[Any]]] = {}
        self.rules: list[dict[str, Any]] = []
        self.unresolved: set[str] = set()

    # --- paths
    def ext_url(self, element_id: str, merged: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
        """The canonical URL of the extension slice ``element_id`` (type profile, fixed url, or via a
        data-type profile of an ancestor)."""
        elements = self.merged if merged is None else merged
        element = elements.get(element_id, {})
        for t in element.get("type", []):
            for profile in t.get("profile", []):
                return _bare(profile)
        fixed = elements.get(element_id + ".url", {}).get("fixedUri")
        if isinstance(fixed, str):
            return fixed
        parts = _split_id(element_id)
        for cut in range(len(parts) - 1, 0, -1):
            ancestor = ".".join(parts[:cut])
            for t in elements.get(ancestor, {}).get("type", []):
                for profile in t.get("profile", []):
                    sub = self.lib.sds.get(_bare(profile))
                    if sub is None:
                        continue
                    sub_merged = self.lib.merged(_bare(profile))
                    sub_id = ".".join([str(sub["type"]), *parts[cut:]])
                    found = self.ext_url(sub_id, sub_merged)
                    if found:
                        return found
        return None

    def rule_path(self, element_id: str, merged: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
        parts = _split_id(element_id)
        out: list[str] = []
        for index in range(1, len(parts)):
            segment = parts[index]
            name, _, slice_name = segment.partition(":")
            if name in ("extension", "modifierExtension") and slice_name:
                url = self.ext_url(".".join(parts[: index + 1]), merged)
                if url is None:
                    return None
                out.append(f"{name}({url})")
            elif name.endswith("[x]") and slice_name:
                if slice_name.startswith(name[:-3]) and _CHOICE_SUFFIX.match(slice_name):
                    out.append(slice_name)
                else:
                    return None
            else:
                out.append(segment)
        return ".".join(out)


def _discriminator_path(path: str) -> str:
    """FHIRPath discriminator -> engine sub-path (``extension('u').value`` -> ``extension(u).value[x]``)."""
    path = re.sub(r"extension\('([^']+)'\)", r"extension(\1)", path)
    if path.endswith(".value"):
        path += "[x]"
    return "" if path == "$this" else path


def _slice_matches(gen: _Profile, sliced_id: str, slicing: Mapping[str, Any]) -> dict[str, list[list[Any]]]:
    """slice element id -> match list [[subpath, pattern], ...] for the slices of ``sliced_id``."""
    prefix = sliced_id + ":"
    slice_ids = sorted(
        {
            i[: len(prefix) + len(i[len(prefix) :].split(".")[0])]
            for i in gen.merged
            if i.startswith(prefix) and "." not in i[len(prefix) :].split(".")[0]
        }
    )
    found: dict[str, list[list[Any]]] = {sid: [] for sid in slice_ids}
    for discriminator in slicing.get("discriminator", []):
        dtype = discriminator.get("type")
        dpath = str(discriminator.get("path", ""))
        values: dict[str, list[list[Any]]] = {}
        for sid in slice_ids:
            if dtype in ("value", "pattern"):
                values[sid] = _discriminator_values(gen, sid, dpath)
            elif dtype == "profile" and dpath == "resource":
                profiles = [
                    _bare(p)
                    for t in gen.merged.get(sid + ".resource", {}).get("type", [])
                    for p in t.get("profile", [])
                ]
                # a base resource "profile" (``Canonical(Binary)``) is met by any resource of that type
                values[sid] = [
                    ["resource.resourceType", p[len(BASE_SD) :]]
                    if p.startswith(BASE_SD)
                    else ["resource.meta.profile", p]
                    for p in profiles
                ]
            else:
                values[sid] = []
        # a value shared by two slices discriminates nothing
        for sid, matches in values.items():
            for match in matches:
                shared = any(match in others for other, others in values.items() if other != sid)
                if not shared:
                    found[sid].append(match)
    return found


def _discriminator_values(gen: _Profile, slice_id: str, dpath: str) -> list[list[Any]]:
    sub = _discriminator_path(dpath)
    if sub == "":
        fixed = _fixed(gen.merged.get(slice_id, {}))
        return [["", fixed[0]]] if fixed else []
    if sub.startswith("extension("):
        url = sub[len("extension(") : sub.index(")")]
        rest = sub[sub.index(")") + 1 :]
        for element_id in gen.merged:
            if element_id.startswith(slice_id + ".extension:") and element_id.count(".") == slice_id.count(".") + 1:
                if gen.ext_url(element_id) == url:
                    element = gen.merged.get(element_id + rest, {})
                    fixed = _fixed(element)
                    return _with_code(sub, fixed[0]) if fixed else []
        return []
    element = gen.merged.get(f"{slice_id}.{sub}", {})
    fixed = _fixed(element)
    if fixed is None:  # the value may come from the data-type profile of the slice (``only UniqueIdIdentifier``)
        for t in gen.merged.get(slice_id, {}).get("type", []):
            for profile in t.get("profile", []):
                sub_sd = gen.lib.sds.get(_bare(profile))
                if sub_sd is not None and sub_sd.get("kind") == "complex-type":
                    fixed = fixed or _fixed(gen.lib.merged(_bare(profile)).get(f"{sub_sd['type']}.{sub}", {}))
    if fixed is None:
        return []
    return _with_code(sub, fixed[0])


def _with_code(sub: str, value: Any) -> list[list[Any]]:
    """A CodeableConcept pattern also recognises the slice by its code alone, so that a wrong
    system is reported on the slice instead of leaving the item unsliced."""
    out = [[sub, value]]
    if isinstance(value, Mapping) and isinstance(value.get("coding"), list) and len(value["coding"]) == 1:
        code = value["coding"][0].get("code")
        if code:
            out.append([f"{sub}.coding.code", code])
    return out


def _element_rules(gen: _Profile, element_id: str, path: str, prefix: str) -> Iterator[dict[str, Any]]:
    element = gen.merged.get(element_id, {})
    own = next((e for e in gen.sd["differential"]["element"] if e["id"] == element_id), None) if prefix == "" else None
    declared = own if own is not None else element
    full = f"{prefix}.{path}" if prefix and path else (prefix or path)
    last = element_id.rsplit(".", 1)[-1]
    parent = element_id.rsplit(".", 2)[-2] if element_id.count(".") >= 1 else ""
    # an extension's url (checked by the slice's url, not as a rule); Attachment.url and the like are rules
    is_url = last == "url" and (parent == "Extension" or parent.partition(":")[0] in ("extension", "modifierExtension"))
    unsliced_extension = last in ("extension", "modifierExtension")
    if full and ("min" in declared or "max" in declared) and not is_url:
        low = int(element.get("min", 0))
        high = element.get("max", "*")
        skip = unsliced_extension and high != "0"
        if not skip and (low > 0 or high != "*") and element_id.count(".") > 0:
            yield {"kind": "card", "path": full, "min": low, "max": None if high == "*" else int(high)}
    fixed = _fixed(declared)
    if fixed is not None and not is_url and full:
        yield {"kind": "fixed", "path": full, "value": fixed[0], "pattern": fixed[1]}
    binding = declared.get("binding")
    if isinstance(binding, Mapping) and binding.get("strength") == "required" and full:
        vs = _bare(str(binding.get("valueSet", "")))
        if vs and not vs.startswith(BASE_VS):
            yield {"kind": "binding", "path": full, "valueset": vs}
    types = declared.get("type") or []
    targets = [p for t in types if t.get("code") == "Reference" for p in t.get("targetProfile", [])]
    if targets and full:
        kinds = [gen.lib.type_of(t) for t in targets]
        if all(kinds):
            yield {"kind": "reference", "path": full, "types": sorted({str(k) for k in kinds})}
        else:
            gen.notes.append(f"{gen.url} {element_id}: target profile type unknown, reference not checked")
    if full and any(t.get("code") == "Reference" and t.get("aggregation") == ["contained"] for t in types):
        yield {
            "kind": "invariant",
            "key": "aggregation-contained",
            "expression": "reference.exists() implies reference.startsWith('#')",
            "human": "aggregation 'contained': the reference points at a contained resource",
            "severity": "error",
            "context": full,
        }
    if full.endswith("[x]") and types and not fixed:
        codes = sorted({str(t["code"]) for t in types})
        yield {"kind": "types", "path": full, "types": codes}
    for constraint in declared.get("constraint", []):
        source = str(constraint.get("source", ""))
        key = str(constraint.get("key", ""))
        if source.startswith(BASE_SD) or key.startswith(("ele-", "ext-", "dom-")):
            continue
        if not constraint.get("expression"):
            gen.notes.append(f"{gen.url} {key}: no FHIRPath expression, not checked")
            continue
        yield {
            "kind": "invariant",
            "key": key,
            "expression": _typed_choices(gen, element_id, str(constraint["expression"])),
            "human": constraint.get("human", key),
            "severity": "warning" if constraint.get("severity") == "warning" else "error",
            "context": full,
        }


def _typed_choices(gen: _Profile, element_id: str, expression: str) -> str:
    """``expression`` with each choice child of ``element_id`` restricted to one type named in full
    (``value.coding`` -> ``valueCodeableConcept.coding``): the FHIRPath engine runs without a type
    model, so it does not resolve ``value`` to ``value[x]``'s single allowed type."""
    for child_id, child in gen.merged.items():
        if not (child_id.startswith(element_id + ".") and child_id.endswith("[x]")):
            continue
        name = child_id[len(element_id) + 1 : -3]
        types = [str(t["code"]) for t in child.get("type", [])]
        if "." in name or len(types) != 1:
            continue
        typed = name + types[0][0].upper() + types[0][1:]
        rewritten = re.sub(rf"(?<![\w.%$]){re.escape(name)}(?=\.)", typed, expression)
        if rewritten != expression:
            gen.notes.append(f"{gen.url} {element_id}: '{name}' read as '{typed}' in an invariant (its only type)")
            expression = rewritten
    return expression


def _declare_slices(gen: _Profile, element_ids: list[str], prefix: str) -> None:
    """Slice predicates for every sliced element (own or inherited) whose slices ``element_ids`` use."""
    for sliced_id, element in gen.merged.items():
        slicing = element.get("slicing")
        if not isinstance(slicing, Mapping):
            continue
        if not any(i.startswith(sliced_id + ":") for i in element_ids) and sliced_id not in element_ids:
            continue
        for sid, matches in _slice_matches(gen, sliced_id, slicing).items():
            spath = gen.rule_path(sid)
            if spath is None or spath.endswith(")"):
                continue  # extension slices: by url
            if "[x]" not in sliced_id and not matches:
                gen.unresolved.add(sid)
                continue
            if matches:
                gen.slices[f"{prefix}.{spath}" if prefix else spath] = matches


def _emit(gen: _Profile, element_ids: list[str], prefix: str, depth: int) -> None:
    _declare_slices(gen, element_ids, prefix)
    for element_id in element_ids:
        if ".meta.profile" in element_id:
            continue  # declared profiles: how the validator picks the profile, not a rule
        path = gen.rule_path(element_id)
        if path is None:
            gen.notes.append(f"{gen.url} {element_id}: path not resolved, not checked")
            continue
        if any(part in gen.unresolved for part in _prefixes(element_id)):
            gen.notes.append(f"{gen.url} {element_id}: slice not recognisable, not checked")
            continue
        element = gen.merged.get(element_id, {})
        for rule in _element_rules(gen, element_id, path, prefix):
            gen.rules.append(rule)
        # inline the type profile (extension or data type) used at this element
        if depth < 4:
            for t in element.get("type", []):
                for profile in t.get("profile", []):
                    sub_url = _bare(profile)
                    if sub_url in gen.lib.sds and gen.lib.sds[sub_url].get("kind") == "complex-type":
                        if element_id in gen.own or _declared_here(gen, element_id, sub_url):
                            _inline(gen, sub_url, f"{prefix}.{path}" if prefix else path, depth)


def _declared_here(gen: _Profile, element_id: str, sub_url: str) -> bool:
    return any(
        e["id"] == element_id and any(sub_url in map(_bare, t.get("profile", [])) for t in e.get("type", []))
        for e in gen.sd.get("differential", {}).get("element", [])
    )


def _inline(gen: _Profile, sub_url: str, at: str, depth: int) -> None:
    inner = _Profile(gen.lib, sub_url, gen.notes)
    element_ids = [i for i in inner.merged if i != inner.root]
    _emit(inner, element_ids, at, depth + 1)
    gen.rules += inner.rules
    gen.slices.update(inner.slices)


def _prefixes(element_id: str) -> Iterator[str]:
    parts = element_id.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _fallback_slices(gen: _Profile) -> None:
    """Slices named by the differential but defined by no loaded ancestor (FR Core 2.1 slices absent
    from the FR Core build available here): take their definition from an older snapshot."""
    for element_id in gen.own:
        base, _, rest = element_id.rpartition(":")
        if not rest or "." in rest or element_id in _defined_by_parents(gen):
            continue
        if base.rsplit(".", 1)[-1] in ("extension", "modifierExtension"):
            continue  # extension slices are recognised by url
        sliced = base
        if sliced in gen.merged and gen.merged[sliced].get("slicing"):
            continue
        for older in gen.lib.older:
            if older.get("type") != gen.root:
                continue
            snap = {e["id"]: e for e in older.get("snapshot", {}).get("element", [])}
            if element_id not in snap or not snap.get(sliced, {}).get("slicing"):
                continue
            gen.merged.setdefault(sliced, {})["slicing"] = snap[sliced]["slicing"]
            for sid, snap_element in snap.items():
                if sid.startswith(sliced + ":") and sid not in gen.merged:
                    keep = {k: v for k, v in snap_element.items() if k in ("id", "path", "sliceName", "type")}
                    keep.update({k: v for k, v in snap_element.items() if k.startswith(("pattern", "fixed"))})
                    if "min" in snap_element and int(snap_element["min"]) > 0 and sid.count(".") > sliced.count("."):
                        keep["min"] = snap_element["min"]
                    gen.merged[sid] = keep
                    if sid.startswith(element_id) and sid != element_id:
                        gen.own.append(sid)
            gen.notes.append(f"{gen.url} {element_id}: slice definition taken from {older.get('_origin', '?')}")
            break


def _defined_by_parents(gen: _Profile) -> set[str]:
    out: set[str] = set()
    for sd in gen.lib.chain(gen.url)[:-1]:
        out |= {e["id"] for e in sd.get("differential", {}).get("element", [])}
    return out


def _apply_deviations(url: str, rules: list[dict[str, Any]], deviations: list[dict[str, Any]]) -> None:
    """Documented relaxations (``MANIFEST.json`` ``deviations``): the rule becomes a warning, or is
    dropped (``"off"``, replaced by the rule of the FR Core version TDDUI depends on), with its reason."""
    for deviation in deviations:
        if deviation["profile"] != url:
            continue
        hits = [r for r in rules if r["kind"] == deviation["kind"] and r.get("path", r.get("key")) == deviation["path"]]
        if not hits:
            raise ValueError(f"deviation matches no generated rule: {deviation}")
        for rule in hits:
            rule["severity"] = deviation["severity"]
            rule["deviation"] = deviation["reason"]
    rules[:] = [r for r in rules if r.get("severity") != "off"]


def generate(lib: Library, urls: Iterable[str], deviations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The constraint data for ``urls`` (and the profiles of their chains), as plain JSON."""
    wanted: list[str] = []
    for url in urls:
        for sd in lib.chain(url):
            if sd["url"] not in wanted:
                wanted.append(sd["url"])
    notes: list[str] = []
    profiles: list[dict[str, Any]] = []
    valuesets: dict[str, dict[str, Any]] = {}
    for url in wanted:
        sd = lib.sds[url]
        if sd.get("kind") == "complex-type":
            continue
        gen = _Profile(lib, url, notes)
        _fallback_slices(gen)
        _emit(gen, gen.own, "", 0)
        base = _bare(str(sd.get("baseDefinition", "")))
        rules = _dedupe(gen.rules)
        _apply_deviations(url, rules, deviations or [])
        parents = [base] if base in lib.sds and lib.sds[base].get("kind") != "complex-type" else []
        for rule in gen.rules:
            if rule["kind"] == "binding" and rule["valueset"] not in valuesets:
                resolved = lib.codes(rule["valueset"])
                if resolved is None:
                    valuesets[rule["valueset"]] = {"available": False}
                else:
                    valuesets[rule["valueset"]] = {
                        "available": True,
                        "codes": sorted(resolved.codes),
                        "systems": [] if resolved.any_system else sorted(resolved.systems),
                        "open_systems": sorted(resolved.open_systems),
                        "partial": resolved.partial,
                        "source": resolved.source,
                    }
        profiles.append(
            {
                "url": url,
                "type": gen.root,
                "title": sd.get("title") or sd.get("name") or sd["id"],
                "version": sd.get("version", ""),
                "source": lib.origin.get(url, ""),
                "parents": parents,
                "slices": [{"path": p, "match": m} for p, m in gen.slices.items()],
                "rules": rules,
            }
        )
    return {
        "sources": lib.sources,
        "deviations": deviations or [],
        "profiles": profiles,
        "valuesets": dict(sorted(valuesets.items())),
        "notes": sorted(set(notes)),
    }


def _dedupe(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for rule in rules:
        key = json.dumps(rule, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(rule)
    return out
