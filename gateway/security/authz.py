"""Who may do what: one vocabulary of principals, roles and scopes, and the decisions on it.

Shared by the API (API clients, the administrator token) and the console (users): both build a
:class:`Principal` and ask the functions below; neither re-implements a rule.

* **Kinds** of principal: an ``api_client`` of one tenant (static key or OAuth token), a console
  ``user`` holding roles per tenant (optionally per ESSMS), a ``platform_operator`` (the people
  who run the gateway for many tenants; the administrator token is one).
* **Roles**, per tenant and optionally restricted to some ESSMS (FINESS):
  ``lecteur`` reads (clinical content included), ``operateur`` reads and acts (retry, replay,
  cancel), ``administrateur`` administers (ESSMS, API clients, credentials, users, the audit
  trail) and **reads no clinical content** unless it also holds ``lecteur`` or ``operateur``.
* A **platform operator** sees metadata (statuses, counts, audit references) and metrics across
  tenants and administers the platform (tenants, routing rules); it never reads documents.
* **Scopes** (OAuth2, API clients) bound what a token may do; for an API client the roles are
  derived from its scopes (:func:`roles_for_scopes`). A route checks the scope it needs
  (:func:`missing_scope`) and then the decision for the tenant/ESSMS of the data.

Decisions are pure functions of the principal and the target; they never raise. The API turns
"no" into 403 naming the missing scope, or 404 when the target belongs to another tenant (so an
id of another tenant is indistinguishable from an id that does not exist).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ACTIONS",
    "LEGACY_SCOPES",
    "ROLE_SCOPES",
    "SCOPES",
    "Grant",
    "Kind",
    "Principal",
    "Role",
    "can_act",
    "can_administer",
    "can_read_audit",
    "can_read_clinical",
    "can_read_metadata",
    "can_submit",
    "expand_scopes",
    "missing_scope",
    "parse_scopes",
    "roles_for_scopes",
    "scopes_for_roles",
]


class Kind(StrEnum):
    API_CLIENT = "api_client"
    USER = "user"
    PLATFORM_OPERATOR = "platform_operator"


class Role(StrEnum):
    """Roles per tenant (values are ASCII so they travel in URLs, tokens and database rows)."""

    LECTEUR = "lecteur"
    OPERATEUR = "operateur"
    ADMINISTRATEUR = "administrateur"

    @property
    def label(self) -> str:
        """The French label shown to people."""
        return {"lecteur": "lecteur", "operateur": "opérateur", "administrateur": "administrateur"}[self.value]

    @classmethod
    def parse(cls, value: str) -> Role:
        """Accepts the value or the French label (``opérateur``)."""
        normalised = value.strip().lower().replace("é", "e")
        return cls(normalised)


# Scopes an API client may be given (OAuth2 ``scope``; the static key's scopes too).
SCOPES: dict[str, str] = {
    "submissions:write": "submit records; retry, replay and cancel the tenant's submissions and deliveries",
    "submissions:read": "read the tenant's submissions, records and rendered documents",
    "fhir:read": "read the tenant's DocumentReference and Binary through the FHIR facade",
    "audit:read": "export the tenant's audit trail (references, no clinical content)",
    "admin": "administer the tenant (ESSMS, API clients, credentials); no clinical content",
}

# Scopes of the first API (still stored on older clients) and what they mean now.
LEGACY_SCOPES: dict[str, frozenset[str]] = {
    "submit": frozenset({"submissions:write"}),
    "read": frozenset({"submissions:read", "fhir:read"}),
    "audit": frozenset({"audit:read"}),
}

ACTIONS = frozenset({"retry", "replay", "cancel"})


def parse_scopes(value: str | Iterable[str]) -> frozenset[str]:
    """Split a space-separated scope string (or take an iterable); unknown names are kept as is."""
    items = value.split() if isinstance(value, str) else list(value)
    return frozenset(s for s in items if s)


def expand_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Current scope names for a set that may hold legacy ones (``submit``, ``read``, ``audit``)."""
    out: set[str] = set()
    for scope in scopes:
        out |= LEGACY_SCOPES.get(scope, frozenset({scope}))
    return frozenset(out)


# The one table between roles and scopes, read both ways: an API client holds a role when it
# holds one of the role's scopes (:func:`roles_for_scopes`); a console user holding roles in a
# tenant may do there what a client with :func:`scopes_for_roles` may do. The decisions below
# are written on roles, so the API and the console ask the same questions.
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.LECTEUR: frozenset({"submissions:read", "fhir:read"}),
    Role.OPERATEUR: frozenset({"submissions:write"}),  # reading included (see can_read_clinical)
    Role.ADMINISTRATEUR: frozenset({"admin"}),  # the audit trail included (see can_read_audit)
}


def roles_for_scopes(scopes: Iterable[str]) -> frozenset[Role]:
    """The tenant roles an API client holds through its scopes."""
    have = expand_scopes(scopes)
    return frozenset(role for role, scopes_of_role in ROLE_SCOPES.items() if have & scopes_of_role)


def scopes_for_roles(roles: Iterable[Role]) -> frozenset[str]:
    """The scopes equivalent to these roles (an operateur reads too, an administrateur reads the audit trail)."""
    held = set(roles)
    if Role.OPERATEUR in held:
        held.add(Role.LECTEUR)
    out: set[str] = {"audit:read"} if Role.ADMINISTRATEUR in held else set()
    for role in held:
        out |= ROLE_SCOPES[role]
    return frozenset(out)


@dataclass(frozen=True)
class Grant:
    """A role in one tenant, for all its ESSMS (``essms`` None) or only for these FINESS."""

    tenant_id: str
    role: Role
    essms: frozenset[str] | None = None

    def covers(self, tenant_id: str, finess: str | None) -> bool:
        if self.tenant_id != tenant_id:
            return False
        return self.essms is None or finess is None or finess in self.essms


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``subject`` is what the audit trail records (``client:<id>``, ``user:<id>``...).

    ``scopes`` is None for a principal whose rights come from its roles only (a console user);
    for an API client it is the set of (current) scope names its key or token carries.
    """

    kind: Kind
    subject: str
    grants: tuple[Grant, ...] = ()
    scopes: frozenset[str] | None = None
    tenant_id: str | None = None  # an API client's (or a single-tenant user's) home tenant
    essms: frozenset[str] | None = field(default=None)  # optional FINESS restriction of an API client

    @classmethod
    def api_client(
        cls, *, client_id: str, tenant_id: str, scopes: Iterable[str], essms: Iterable[str] | None = None
    ) -> Principal:
        have = expand_scopes(scopes)
        restriction = frozenset(essms) if essms is not None else None
        grants = tuple(Grant(tenant_id, role, restriction) for role in sorted(roles_for_scopes(have)))
        return cls(
            kind=Kind.API_CLIENT,
            subject=f"client:{client_id}",
            grants=grants,
            scopes=have,
            tenant_id=tenant_id,
            essms=restriction,
        )

    @classmethod
    def platform_operator(cls, *, subject: str = "admin", scopes: Iterable[str] | None = None) -> Principal:
        return cls(
            kind=Kind.PLATFORM_OPERATOR,
            subject=subject,
            scopes=frozenset(scopes) if scopes is not None else frozenset({"admin", "audit:read"}),
        )

    @classmethod
    def user(cls, *, user_id: str, grants: Iterable[Grant]) -> Principal:
        grant_list = tuple(grants)
        tenants = {g.tenant_id for g in grant_list}
        return cls(
            kind=Kind.USER,
            subject=f"user:{user_id}",
            grants=grant_list,
            tenant_id=next(iter(tenants)) if len(tenants) == 1 else None,
        )

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def roles(self, tenant_id: str, finess: str | None = None) -> frozenset[Role]:
        """The roles held for this tenant (and this ESSMS when given)."""
        return frozenset(g.role for g in self.grants if g.covers(tenant_id, finess))

    def tenants(self) -> frozenset[str]:
        return frozenset(g.tenant_id for g in self.grants)


def missing_scope(principal: Principal, *any_of: str) -> str | None:
    """None when the principal holds one of these scopes, else the scope to name in the 403."""
    if principal.scopes is None or any(s in principal.scopes for s in any_of):
        return None
    return any_of[0]


def can_read_clinical(principal: Principal, tenant_id: str, finess: str | None = None) -> bool:
    """Records, rendered documents, FHIR DocumentReference/Binary of this tenant (and ESSMS)."""
    if principal.kind is Kind.PLATFORM_OPERATOR:
        return False
    return bool(principal.roles(tenant_id, finess) & {Role.LECTEUR, Role.OPERATEUR})


def can_read_metadata(principal: Principal, tenant_id: str, finess: str | None = None) -> bool:
    """Statuses, counts, delivery outcomes, connector health: no person's data, no document."""
    if principal.kind is Kind.PLATFORM_OPERATOR:
        return True
    return bool(principal.roles(tenant_id, finess))


def can_read_audit(principal: Principal, tenant_id: str | None) -> bool:
    """The audit trail (references, no identity traits). ``tenant_id`` None means every tenant's."""
    if principal.kind is Kind.PLATFORM_OPERATOR:
        return True
    if tenant_id is None:
        return False
    if principal.kind is Kind.API_CLIENT:
        return bool(principal.scopes and principal.scopes & {"audit:read", "admin"}) and (
            principal.tenant_id == tenant_id
        )
    return Role.ADMINISTRATEUR in principal.roles(tenant_id)


def can_submit(principal: Principal, tenant_id: str, finess: str | None = None) -> bool:
    """Only API clients submit records (a DUI sends them), for their tenant's (allowed) ESSMS."""
    return (
        principal.kind is Kind.API_CLIENT
        and principal.has_scope("submissions:write")
        and Role.OPERATEUR in principal.roles(tenant_id, finess)
    )


def can_act(principal: Principal, action: str, tenant_id: str, finess: str | None = None) -> bool:
    """Retry, replay or cancel: an ``operateur`` of the tenant (and ESSMS)."""
    if action not in ACTIONS or principal.kind is Kind.PLATFORM_OPERATOR:
        return False
    return Role.OPERATEUR in principal.roles(tenant_id, finess)


def can_administer(principal: Principal, tenant_id: str | None = None) -> bool:
    """Administration of one tenant (ESSMS, clients, credentials, users), or of the platform when
    ``tenant_id`` is None (tenants, routing rules): the platform operator only."""
    if principal.kind is Kind.PLATFORM_OPERATOR:
        return principal.has_scope("admin")
    if tenant_id is None:
        return False
    return principal.has_scope("admin") and Role.ADMINISTRATEUR in principal.roles(tenant_id)
