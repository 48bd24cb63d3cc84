"""Base FHIR R4 structure: the R4B models of fhir.resources (identical to R4 for the resources
the gateway handles) plus what separates R4B from R4 and what the models let through.

- elements, types, cardinalities and primitive formats: ``fhir.resources.R4B`` (pydantic);
- resource types added by R4B (4.3) are not R4: rejected;
- ``fhirVersion`` elements must say 4.0.x;
- ele-1: no empty objects, arrays or strings (the models accept ``{}``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from profiles._report import Issue, IssueCode

__all__ = ["R4B_ONLY_RESOURCES", "check_structure", "location"]

#: resource types introduced by FHIR R4B (4.3.0): they do not exist in R4 (4.0.1)
R4B_ONLY_RESOURCES = frozenset(
    {
        "AdministrableProductDefinition",
        "Citation",
        "ClinicalUseDefinition",
        "EvidenceReport",
        "Ingredient",
        "ManufacturedItemDefinition",
        "MedicinalProductDefinition",
        "NutritionProduct",
        "PackagedProductDefinition",
        "RegulatedAuthorization",
        "SubscriptionStatus",
        "SubscriptionTopic",
    }
)


def location(root: str, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a FHIRPath-like expression: ``Patient.identifier[0].system``."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and not part.startswith(("function-", "json-", "union[")) and "[" not in part:
            out += f".{part}"
    return out


def _code_for(error_type: str) -> IssueCode:
    if error_type == "extra_forbidden":
        return "structure"
    if "missing" in error_type:
        return "required"
    if error_type.endswith("_type") or error_type in ("model_type", "list_type", "dict_type"):
        return "structure"
    return "value"


def _message(error: Mapping[str, Any], where: str) -> str:
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown element (not in FHIR R4)"
    return f"{where}: {error['msg']}"


def _walk(value: Any, path: str, issues: list[Issue]) -> None:
    """ele-1, R4B-only resource types and fhirVersion, over the whole tree.

    Strings and other scalars are handled in their parent's loop: no call and no location string
    for the leaves (most of the tree), only for a leaf that has something to report."""
    if isinstance(value, dict) or isinstance(value, Mapping):
        if not value:
            issues.append(
                Issue(
                    "error", "invariant", path, f"{path}: ele-1: an element must have a value or children", rule="ele-1"
                )
            )
            return
        rtype = value.get("resourceType")
        if isinstance(rtype, str) and rtype in R4B_ONLY_RESOURCES:
            issues.append(
                Issue(
                    "error",
                    "not-supported",
                    path,
                    f"{path}: {rtype} is a FHIR R4B resource, not part of R4 (4.0.1)",
                    rule="r4",
                )
            )
        for key, child in value.items():
            if key == "fhirVersion" and isinstance(child, str) and not child.startswith("4.0"):
                issues.append(
                    Issue(
                        "error", "value", f"{path}.{key}", f"{path}.{key}: {child!r} is not FHIR R4 (4.0.1)", rule="r4"
                    )
                )
            if key == "div":
                continue
            if isinstance(child, str):
                if not child:
                    _empty_string(f"{path}.{key}", issues)
            elif isinstance(child, (dict, list)) or isinstance(child, Mapping):
                _walk(child, f"{path}.{key}", issues)
    elif isinstance(value, list):
        if not value:
            issues.append(Issue("error", "invariant", path, f"{path}: ele-1: an array must not be empty", rule="ele-1"))
        for index, item in enumerate(value):
            # JSON null is allowed in primitive arrays only as a placeholder for "_x" extensions
            if isinstance(item, str):
                if not item:
                    _empty_string(f"{path}[{index}]", issues)
            elif isinstance(item, (dict, list)) or isinstance(item, Mapping):
                _walk(item, f"{path}[{index}]", issues)
    elif isinstance(value, str) and value == "":
        _empty_string(path, issues)


def _empty_string(path: str, issues: list[Issue]) -> None:
    issues.append(Issue("error", "invariant", path, f"{path}: ele-1: a string must not be empty", rule="ele-1"))


def check_structure(resource: Mapping[str, Any]) -> list[Issue]:
    """Base R4 structural findings for ``resource`` (and everything nested in it)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return [Issue("fatal", "structure", "", "not a FHIR resource: resourceType is missing", rule="structure")]
    issues: list[Issue] = []
    _walk(resource, rtype, issues)
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError):
        issues.append(Issue("fatal", "not-supported", rtype, f"{rtype}: unknown FHIR resource type", rule="structure"))
        return issues
    issues.extend(_model_issues(model, dict(resource), rtype))
    return issues


def _model_issues(model: Any, data: dict[str, Any], rtype: str, tripped: int = 0) -> list[Issue]:
    """What the R4B model finds in ``data``."""
    issues: list[Issue] = []
    try:
        model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            where = location(rtype, tuple(error["loc"]))
            issues.append(Issue("error", _code_for(error["type"]), where, _message(error, where), rule="structure"))
    except KeyError as exc:  # a nested resource of an unknown type
        issues.append(Issue("error", "not-supported", rtype, f"unknown FHIR resource type {exc}", rule="structure"))
    except AttributeError as exc:
        # fhir_core's url type calls ``startswith`` on whatever it is given: a number or a boolean
        # there escapes pydantic. Find that element, report it, validate the rest without it.
        path = _tripping_path(model, data) if tripped < _MAX_TRIPPED else ()
        if not path or not isinstance(path[-1], str):
            return [Issue("error", "structure", rtype, f"{rtype}: {exc}", rule="structure")]
        data = copy.deepcopy(data) if not tripped else data
        holder: Any = data
        for part in path[:-1]:
            holder = holder[part]
        value = holder.pop(path[-1])
        where = location(rtype, path)
        issues.append(
            Issue(
                "error",
                "structure",
                where,
                f"{where}: a {_json_kind(value)} is not a valid value here",
                rule="structure",
            )
        )
        issues.extend(
            i
            for i in _model_issues(model, data, rtype, tripped + 1)
            if not (i.expression == where and i.code == "required")  # the element just taken out
        )
    except (TypeError, ValueError) as exc:
        # a model's own validator tripping on a wrong JSON type (fhir_core's url type hashes an
        # object): the resource is malformed, no location known
        issues.append(Issue("error", "structure", rtype, f"{rtype}: {exc}", rule="structure"))
    return issues


#: elements located by ``_tripping_path`` in one resource, and validations of a branch it may run
#: to locate one; past either, one finding at the resource
_MAX_TRIPPED = 8
_MAX_PROBES = 256


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, Mapping) else "null"


def _trips(model: Any, data: Any) -> bool:
    try:
        model.model_validate(data)
    except AttributeError:
        return True
    except Exception:  # a finding or another failure: not the one looked for
        return False
    return False


def _branch(value: Any, path: tuple[int | str, ...]) -> Any:
    """``value`` reduced to the one branch leading to ``path`` (objects keep their resourceType)."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = {"resourceType": value["resourceType"]} if "resourceType" in value else {}
        out[key] = _branch(value[key], rest)  # type: ignore[index]
        return out
    return [_branch(value[key], rest)]


def _tripping_path(model: Any, data: dict[str, Any]) -> tuple[int | str, ...]:
    """The location of an element the model's validator trips on (AttributeError), found by
    validating the resource reduced to one branch at a time; ``()`` when no single branch does."""
    path: tuple[int | str, ...] = ()
    node: Any = data
    probes = 0
    while True:
        children: list[tuple[int | str, Any]] = (
            list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
        )
        for key, child in children:
            if key == "resourceType":
                continue
            probes += 1
            if probes > _MAX_PROBES:  # a bound on the work a hostile input can cause
                return ()
            if _trips(model, _branch(data, (*path, key))):
                path, node = (*path, key), child
                break
        else:
            return path
