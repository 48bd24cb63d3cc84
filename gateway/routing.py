"""Routing: which destinations receive a document, as configuration (a YAML or JSON file).

The file declares destinations (a connector from the ``dui_gateway.connectors`` entry-point
group, a category and the connector's settings) and rules (tenant, ESSMS, document types,
conditions -> destinations). It is validated once at start-up; a mistake stops the process
with the file path and a JSON pointer to the offending value. Semantics: docs/routing.md.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import structlog
import yaml
from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from connectors.base import Connector
from gateway.settings import Settings
from mappings.base import RecordFacts
from mappings.consent import ConsentFamily, Refusals, read_refusals

__all__ = [
    "CATEGORY_CONSENT",
    "ENTRY_POINT_GROUP",
    "INS_REQUIRED_CATEGORIES",
    "ConfiguredSource",
    "Decision",
    "DestinationConfig",
    "Refusal",
    "RoutingConfig",
    "RoutingConfigError",
    "RoutingTable",
    "Rule",
    "SourceConfig",
    "build_connectors",
    "build_sources",
    "check_tls_policy",
    "load",
    "load_config",
    "parse_config",
]

ENTRY_POINT_GROUP = "dui_gateway.connectors"

# Every routing category and the consent family it falls under: the closed list of categories a
# destination may declare (anything else stops start-up). A person who refused a family is never
# routed to a destination of a category under it. None means "no consent family", said here on
# purpose rather than by default: the DUI vendor's own webhook gets back what its own software
# sent (statuses, the renditions of its record), which is no sharing with a third party.
# A new kind of peer (e.g. an MLLP connector) adds its category here with its family.
CATEGORY_CONSENT: Mapping[str, ConsentFamily | None] = MappingProxyType(
    {
        "dmp": ConsentFamily.DMP,
        "mes": ConsentFamily.DMP,  # Mon espace santé is fed through the DMP (dmp-mes.md)
        "mssante": ConsentFamily.MSSANTE,  # a professional or structure MSSanté box
        "mssante-patient": ConsentFamily.MSSANTE,  # the person's own <INS>@patient.mssante.fr box
        "viatrajectoire": ConsentFamily.VIATRAJECTOIRE,  # SI-SdO orientation follow-up
        "sidoba": ConsentFamily.SIDOBA,  # CNSA indicators
        "fhir": ConsentFamily.FHIR,  # a partner's FHIR server (TDDUI)
        "webhook": None,  # the DUI vendor itself
    }
)

# Categories whose destination may only receive a document when the person's INS is qualifiée
# (identity-and-security.md: "no DMP/MES feeding, no MSSanté patient mailbox" without it).
# A professional MSSanté box ("mssante") receives local identifiers and X-MSS-INS: N instead.
INS_REQUIRED_CATEGORIES: frozenset[str] = frozenset({"dmp", "mes", "mssante-patient"})

_log = structlog.get_logger(__name__)


class RoutingConfigError(ValueError):
    """The routing file (or a configured connector) is unusable; the message names file and pointer."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DestinationConfig(_Strict):
    """One named destination: which connector, what kind of peer, the connector's settings."""

    connector: str = Field(min_length=1)
    category: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_-]*$")
    settings: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to send() in Envelope.options
    # None: derived from the category (INS_REQUIRED_CATEGORIES)
    requires_qualified_ins: bool | None = None
    # bulkhead: concurrent sends to this destination per process (default DUI_GATEWAY_DESTINATION_CONCURRENCY)
    concurrency: int | None = Field(default=None, ge=1, le=256)
    # a "sent" delivery (relay accepted) with no receipt after this long becomes "unconfirmed"
    receipt_timeout_seconds: float | None = Field(default=None, gt=0)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in CATEGORY_CONSENT:
            known = ", ".join(sorted(CATEGORY_CONSENT))
            raise ValueError(f"unknown category {value!r}: not in the consent map (known: {known})")
        return value

    @property
    def consent_family(self) -> ConsentFamily | None:
        """The consent family a refusal of which excludes this destination (None: no consent family)."""
        return CATEGORY_CONSENT[self.category]

    @property
    def needs_qualified_ins(self) -> bool:
        if self.requires_qualified_ins is not None:
            return self.requires_qualified_ins
        return self.category in INS_REQUIRED_CATEGORIES


class When(_Strict):
    """Extra conditions of a rule, on the record's facts."""

    ins_qualified: bool | None = None
    not_refused: list[ConsentFamily] = Field(default_factory=list)  # consent families the person must not have refused

    @field_validator("not_refused", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Rule(_Strict):
    """Documents of ``document_types`` from ``tenant`` / ``essms`` (absent = any) go to ``destinations``."""

    name: str = ""
    tenant: str | None = None  # tenant code (or id)
    essms: list[str] | None = None  # FINESS numbers
    document_types: list[str] = Field(min_length=1)
    when: When = Field(default_factory=When)
    destinations: list[str] = Field(min_length=1)

    @field_validator("essms")
    @classmethod
    def _finess(cls, value: list[str] | None) -> list[str] | None:
        for finess in value or []:
            if not (len(finess) == 9 and finess.isdigit()):
                raise ValueError(f"FINESS must be 9 digits, got {finess!r}")
        return value


class SourceConfig(_Strict):
    """One inbound source: which ``dui_gateway.sources`` entry point, for which tenant, its settings."""

    source: str = Field(min_length=1)
    tenant: str = Field(min_length=1)  # tenant code: encrypts what arrives, owns the deliveries acknowledged
    destinations: list[str] | None = None  # deliveries it may acknowledge (None: any of the tenant's)
    settings: dict[str, Any] = Field(default_factory=dict)


class RoutingConfig(_Strict):
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("destinations")
    @classmethod
    def _names(cls, value: dict[str, DestinationConfig]) -> dict[str, DestinationConfig]:
        for name in value:
            if not name or len(name) > 64:
                raise ValueError(f"destination name must have 1 to 64 characters: {name!r}")
        return value

    @model_validator(mode="after")
    def _known_destinations(self) -> RoutingConfig:
        for i, rule in enumerate(self.rules):
            for j, name in enumerate(rule.destinations):
                if name not in self.destinations:
                    raise ValueError(f"/rules/{i}/destinations/{j}: unknown destination {name!r}")
        return self


@dataclass(frozen=True)
class Refusal:
    destination: str
    reason: str  # "ins_not_qualified", "sharing_refused", "rule_condition"
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"destination": self.destination, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Decision:
    """Where a document goes, and where it does not go and why."""

    destinations: tuple[str, ...]
    refused: tuple[Refusal, ...] = ()
    matched_rules: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "destinations": list(self.destinations),
            "refused": [r.to_dict() for r in self.refused],
            "matched_rules": list(self.matched_rules),
        }


@dataclass(frozen=True)
class RoutingTable:
    """The validated rules; :meth:`decide` is pure."""

    config: RoutingConfig = field(default_factory=RoutingConfig)
    source: str = "<none>"

    def destination(self, name: str) -> DestinationConfig:
        return self.config.destinations[name]

    def decide(self, *, tenant_code: str, tenant_id: str, document_type: str, facts: RecordFacts) -> Decision:
        """All matching rules' destinations, deduplicated in rule order, minus refused ones."""
        chosen: list[str] = []
        refused: dict[str, Refusal] = {}
        matched: list[int] = []
        refusals = read_refusals(facts.sharing_refused_with)
        for index, rule in enumerate(self.config.rules):
            if rule.tenant is not None and rule.tenant not in (tenant_code, tenant_id):
                continue
            if rule.essms is not None and facts.essms_finess not in rule.essms:
                continue
            if document_type not in rule.document_types:
                continue
            condition = _unmet_condition(rule.when, facts, refusals)
            if condition is not None:
                for name in rule.destinations:
                    refused.setdefault(name, Refusal(name, "rule_condition", f"rule {index}: {condition}"))
                continue
            matched.append(index)
            for name in rule.destinations:
                if name in chosen:
                    continue
                dest = self.config.destinations[name]
                family = dest.consent_family
                if family is not None and refusals.refuses(family):
                    refused[name] = Refusal(name, "sharing_refused", _refusal_detail(family, dest.category, refusals))
                    continue
                if dest.needs_qualified_ins and not facts.ins_qualified:
                    refused[name] = Refusal(name, "ins_not_qualified", f"{dest.category} requires a qualified INS")
                    continue
                chosen.append(name)
        # a destination chosen by one rule is not "refused" because another rule's condition failed
        final_refused = tuple(r for n, r in refused.items() if n not in chosen)
        return Decision(destinations=tuple(chosen), refused=final_refused, matched_rules=tuple(matched))


def _refusal_detail(family: ConsentFamily, category: str, refusals: Refusals) -> str:
    if family not in refusals.families:
        # never echo the stored value: only say that it was not understood
        return f"an unrecognised sharing refusal is read as refusing every consent family ({category})"
    under = "" if category == family.value else f" ({category} falls under {family.value})"
    return f"the person refused sharing with {family.value}{under}"


def _unmet_condition(when: When, facts: RecordFacts, refusals: Refusals) -> str | None:
    if when.ins_qualified is not None and facts.ins_qualified != when.ins_qualified:
        return f"requires ins_qualified={str(when.ins_qualified).lower()}"
    for family in when.not_refused:
        if refusals.refuses(family):
            return f"the person refused sharing with {family.value}"
    return None


def parse_config(data: Any, *, source: str = "<memory>") -> RoutingConfig:
    """Validate a decoded routing document; errors name the source and a JSON pointer."""
    if data is None:
        data = {}
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            pointer = "/" + "/".join(str(p) for p in err["loc"]) if err["loc"] else ""
            lines.append(f"{source}#{pointer}: {err['msg']}")
        raise RoutingConfigError("invalid routing file:\n  " + "\n  ".join(lines)) from None


def load_config(path: Path) -> RoutingConfig:
    """Read and validate a routing file (``.json``, else YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read routing file ({exc.strerror})") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RoutingConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    return parse_config(data, source=str(path))


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


# A connector settings field that turns TLS verification off when False ("verify", "verify_tls",
# "tls_verify", "ssl_verify", "verify_ssl", "check_hostname"...), or on when True ("insecure...").
_VERIFY_FIELD = re.compile(r"(^|_)(verify|check_hostname)(_|$)", re.IGNORECASE)
_INSECURE_FIELD = re.compile(r"(^|_)insecure(_|$)", re.IGNORECASE)


def _leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(JSON pointer parts, value) of every leaf of a validated settings model; secrets are not opened."""
    if isinstance(value, SecretStr | SecretBytes):
        return
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            yield from _leaves(getattr(value, name), (*path, info.alias or name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, str(index)))
    else:
        yield path, value


def _is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tls_policy(connector_settings: BaseModel, *, settings: Settings, pointer: str) -> None:
    """Refuse a destination whose validated connector settings weaken transport security.

    Generic: every field of the settings model (nested models, lists and dicts included) is
    inspected, secrets excepted. A field named like ``verify``/``verify_tls``/``check_hostname``
    set to false (or ``insecure...`` set to true) turns TLS verification off: refused unless
    ``DUI_GATEWAY_TLS_VERIFY=false``, which only the ``dev`` profile allows (the connector then
    keeps its own setting). A string or URL value starting with ``http://`` is refused in the
    ``prod`` profile unless its host is a loopback address (127.0.0.0/8, ::1, localhost).
    ``pointer`` is the destination's ``file#/destinations/<name>``.
    """
    problems: list[str] = []
    for path, value in _leaves(connector_settings, ()):
        where = f"{pointer}/settings/{'/'.join(path)}"
        name = path[-1] if path else ""
        turns_off = (value is False and _VERIFY_FIELD.search(name)) or (value is True and _INSECURE_FIELD.search(name))
        if turns_off and settings.tls_verify:
            problems.append(
                f"{where}: turning TLS verification off is refused "
                f"(only with profile=dev and DUI_GATEWAY_TLS_VERIFY=false; profile is {settings.profile})"
            )
        if isinstance(value, str | AnyUrl) and settings.profile == "prod":
            text = str(value).strip()
            if text.lower().startswith("http://") and not _is_loopback(text):
                problems.append(f"{where}: plain http:// endpoints are refused with profile=prod (use https://)")
    if problems:
        raise RoutingConfigError("insecure destination:\n  " + "\n  ".join(problems))


def build_connectors(config: RoutingConfig, *, settings: Settings, source: str = "<memory>") -> dict[str, Connector]:
    """Instantiate each configured destination's connector (loaded lazily from its entry point).

    A destination whose connector is unknown, fails to import, rejects its settings or breaks the
    TLS policy (:func:`check_tls_policy`) raises :class:`RoutingConfigError`; installed connectors
    that no destination uses are only logged.
    """
    available = _entry_points()
    out: dict[str, Connector] = {}
    used: set[str] = set()
    for name, dest in config.destinations.items():
        pointer = f"{source}#/destinations/{name}"
        ep = available.get(dest.connector)
        if ep is None:
            known = ", ".join(sorted(available)) or "none installed"
            raise RoutingConfigError(f"{pointer}/connector: unknown connector {dest.connector!r} (known: {known})")
        used.add(dest.connector)
        try:
            cls = ep.load()
        except Exception as exc:
            raise RoutingConfigError(
                f"{pointer}/connector: connector {dest.connector!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        settings_model = getattr(cls, "Settings", None)
        if not (isinstance(settings_model, type) and issubclass(settings_model, BaseModel)):
            raise RoutingConfigError(f"{pointer}/connector: {dest.connector!r} has no pydantic Settings model")
        try:
            connector_settings = settings_model.model_validate(dest.settings)
        except ValidationError as exc:
            problems = "; ".join(
                f"{pointer}/settings/{'/'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise RoutingConfigError(f"invalid settings for destination {name!r}: {problems}") from None
        check_tls_policy(connector_settings, settings=settings, pointer=pointer)
        try:
            out[name] = cls(connector_settings)
        except Exception as exc:
            raise RoutingConfigError(f"{pointer}: connector {dest.connector!r} failed to start: {exc}") from exc
    for unused in sorted(set(available) - used):
        _log.info("connector_not_configured", connector=unused)
    return out


def load(settings: Settings) -> tuple[RoutingTable, dict[str, Connector]]:
    """The process's routing table and connectors; no routing file means no destination."""
    if settings.routing_file is None:
        _log.info("routing_not_configured", detail="no routing file: documents are mapped and kept, never sent")
        return RoutingTable(), {}
    path = Path(settings.routing_file)
    config = load_config(path)
    connectors = build_connectors(config, settings=settings, source=str(path))
    _log.info("routing_loaded", file=str(path), destinations=len(connectors), rules=len(config.rules))
    return RoutingTable(config=config, source=str(path)), connectors


def destinations_of(decision: Decision, table: RoutingTable) -> Iterable[tuple[str, DestinationConfig]]:
    for name in decision.destinations:
        yield name, table.destination(name)


def options_of(table: RoutingTable, name: str) -> Mapping[str, Any]:
    dest = table.config.destinations.get(name)
    return dest.options if dest is not None else {}


SOURCE_ENTRY_POINT_GROUP = "dui_gateway.sources"


@dataclass(frozen=True)
class ConfiguredSource:
    """An inbound source instance with the routing file's scope for it."""

    name: str
    source: Any  # connectors.base.Source
    tenant: str
    destinations: tuple[str, ...] | None


def build_sources(
    config: RoutingConfig, *, settings: Settings | None = None, source: str = "<memory>"
) -> dict[str, ConfiguredSource]:
    """Instantiate each configured inbound source from the ``dui_gateway.sources`` entry points."""
    available = {ep.name: ep for ep in entry_points(group=SOURCE_ENTRY_POINT_GROUP)}
    out: dict[str, ConfiguredSource] = {}
    for name, conf in config.sources.items():
        pointer = f"{source}#/sources/{name}"
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise RoutingConfigError(f"{pointer}: a source name has 1 to 64 letters, digits, '-' or '_'")
        ep = available.get(conf.source)
        if ep is None:
            known = ", ".join(sorted(available)) or "none installed"
            raise RoutingConfigError(f"{pointer}/source: unknown source {conf.source!r} (known: {known})")
        for j, dest in enumerate(conf.destinations or []):
            if dest not in config.destinations:
                raise RoutingConfigError(f"{pointer}/destinations/{j}: unknown destination {dest!r}")
        try:
            cls = ep.load()
            source_settings = cls.Settings.model_validate(conf.settings)
            if settings is not None:  # the same TLS policy as destinations (an IMAP poller, an SI-SdO client)
                check_tls_policy(source_settings, settings=settings, pointer=pointer)
            instance = cls(source_settings)
        except ValidationError as exc:
            problems = "; ".join(
                f"{pointer}/settings/{'/'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise RoutingConfigError(f"invalid settings for source {name!r}: {problems}") from None
        except RoutingConfigError:
            raise
        except Exception as exc:
            raise RoutingConfigError(
                f"{pointer}: source {conf.source!r} failed to start: {type(exc).__name__}"
            ) from exc
        out[name] = ConfiguredSource(
            name=name,
            source=instance,
            tenant=conf.tenant,
            destinations=tuple(conf.destinations) if conf.destinations is not None else None,
        )
    return out
