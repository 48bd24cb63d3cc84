"""Who a console user is and what they may do: a thin view of :mod:`gateway.security.authz`.

The roles, what each may do (and the scopes each corresponds to for API clients) are defined
once, in ``authz`` (``Role``, ``ROLE_SCOPES`` and the ``can_*`` decisions); the console builds an
``authz.Principal`` from the user's grants and asks the same functions as the API:

* ``lecteur``: reads the tenant's flows, documents and receipts (each read audited);
* ``operateur``: what a lecteur does, plus retry / replay / cancel;
* ``administrateur``: administers the tenant (ESSMS, API clients, credentials, users) and reads
  its audit trail; **no clinical content** unless also lecteur or operateur;
* platform operator: metadata and metrics across tenants, administration of every tenant and
  of the routing rules, never documents nor person references.

A grant may be limited to one ESSMS (FINESS): the user then sees that ESSMS's submissions only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.security import authz
from gateway.security.authz import Role

__all__ = ["ADMINISTRATEUR", "LECTEUR", "OPERATEUR", "ROLES", "ConsolePrincipal", "Grant", "TenantAccess"]

LECTEUR = Role.LECTEUR.value
OPERATEUR = Role.OPERATEUR.value
ADMINISTRATEUR = Role.ADMINISTRATEUR.value
ROLES = tuple(r.value for r in Role)
ROLE_LABELS = {r.value: r.label for r in Role}


@dataclass(frozen=True)
class Grant:
    tenant_id: str
    role: str
    essms_finess: str | None = None  # None: every ESSMS of the tenant


@dataclass(frozen=True)
class TenantAccess:
    """What one user may do in one tenant, as decided by ``authz`` for the user's grants there."""

    tenant_id: str
    roles: frozenset[str]
    # ESSMS the clinical roles are limited to; None = every ESSMS of the tenant
    essms: frozenset[str] | None
    principal: authz.Principal = field(compare=False, repr=False)

    @property
    def can_read_clinical(self) -> bool:
        return authz.can_read_clinical(self.principal, self.tenant_id)

    @property
    def can_operate(self) -> bool:
        return authz.can_act(self.principal, "retry", self.tenant_id)

    @property
    def can_administer(self) -> bool:
        return authz.can_administer(self.principal, self.tenant_id)

    def sees_essms(self, finess: str) -> bool:
        return self.essms is None or finess in self.essms


@dataclass(frozen=True)
class ConsolePrincipal:
    user_id: str
    username: str
    display_name: str
    grants: tuple[Grant, ...] = ()
    platform_operator: bool = False
    tenants: dict[str, TenantAccess] = field(default_factory=dict, compare=False)
    user: authz.Principal | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(
        cls, *, user_id: str, username: str, display_name: str, grants: Iterable[Grant], platform_operator: bool
    ) -> ConsolePrincipal:
        grants = tuple(g for g in grants if g.role in ROLES)
        user = authz.Principal.user(
            user_id=user_id,
            grants=[
                authz.Grant(g.tenant_id, Role(g.role), frozenset({g.essms_finess}) if g.essms_finess else None)
                for g in grants
            ],
        )
        tenants: dict[str, TenantAccess] = {}
        for tenant_id in sorted({g.tenant_id for g in grants}):
            mine = [g for g in grants if g.tenant_id == tenant_id]
            clinical = [g for g in mine if g.role in (LECTEUR, OPERATEUR)]
            essms: frozenset[str] | None
            if not clinical or any(g.essms_finess is None for g in clinical):
                essms = None
            else:
                essms = frozenset(g.essms_finess for g in clinical if g.essms_finess is not None)
            tenants[tenant_id] = TenantAccess(
                tenant_id=tenant_id, roles=frozenset(g.role for g in mine), essms=essms, principal=user
            )
        return cls(
            user_id=user_id,
            username=username,
            display_name=display_name,
            grants=grants,
            platform_operator=platform_operator,
            tenants=tenants,
            user=user,
        )

    @property
    def actor(self) -> str:
        """The audit trail's actor for this user."""
        return f"user:{self.user_id}"

    @property
    def authz_principal(self) -> authz.Principal:
        """The principal the shared services are called with (administration: the same functions as
        ``/v1/admin``). A platform operator administers every tenant; others their grants."""
        if self.platform_operator:
            return authz.Principal.platform_operator(subject=self.actor)
        return self.user or authz.Principal.user(user_id=self.user_id, grants=())

    def access(self, tenant_id: str) -> TenantAccess | None:
        return self.tenants.get(tenant_id)

    def clinical_tenants(self) -> list[str]:
        return [t for t, a in self.tenants.items() if a.can_read_clinical]

    def admin_tenants(self) -> list[str]:
        return [t for t, a in self.tenants.items() if a.can_administer]

    def administers(self) -> bool:
        """Whether the administration pages exist for this user (a tenant, or the platform)."""
        return authz.can_administer(self.authz_principal, None) or bool(self.admin_tenants())

    def operates(self, tenant_id: str) -> bool:
        access = self.access(tenant_id)
        return access is not None and access.can_operate
