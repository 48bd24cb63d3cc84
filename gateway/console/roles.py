"""Who a console user is and what they may do: the console side of the shared role vocabulary.

One small module on purpose: it maps 1:1 onto ``gateway/security/authz.py`` (branch ``access``:
``Principal`` with roles per tenant, an optional ESSMS restriction and a platform operator), so
the two can be reconciled at merge by making :class:`ConsolePrincipal` a thin view of it.

* ``lecteur``: reads the tenant's flows, documents and receipts (each read audited);
* ``operateur``: what a lecteur does, plus retry / replay / cancel;
* ``administrateur``: administers the tenant's users and reads its audit trail; **no clinical
  content** (documents, conformance details, person references) unless also lecteur or operateur;
* platform operator: metadata and metrics across tenants (counts, connector health), never
  documents nor person references.

A grant may be limited to one ESSMS (FINESS): the user then sees that ESSMS's submissions only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ADMINISTRATEUR", "LECTEUR", "OPERATEUR", "ROLES", "ConsolePrincipal", "Grant", "TenantAccess"]

LECTEUR = "lecteur"
OPERATEUR = "operateur"
ADMINISTRATEUR = "administrateur"
ROLES = (LECTEUR, OPERATEUR, ADMINISTRATEUR)
ROLE_LABELS = {LECTEUR: "lecteur", OPERATEUR: "opérateur", ADMINISTRATEUR: "administrateur"}


@dataclass(frozen=True)
class Grant:
    tenant_id: str
    role: str
    essms_finess: str | None = None  # None: every ESSMS of the tenant


@dataclass(frozen=True)
class TenantAccess:
    """What one user may do in one tenant (the union of their grants there)."""

    tenant_id: str
    roles: frozenset[str]
    # ESSMS the clinical roles are limited to; None = every ESSMS of the tenant
    essms: frozenset[str] | None

    @property
    def can_read_clinical(self) -> bool:
        return bool(self.roles & {LECTEUR, OPERATEUR})

    @property
    def can_operate(self) -> bool:
        return OPERATEUR in self.roles

    @property
    def can_administer(self) -> bool:
        return ADMINISTRATEUR in self.roles

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

    @classmethod
    def build(
        cls, *, user_id: str, username: str, display_name: str, grants: Iterable[Grant], platform_operator: bool
    ) -> ConsolePrincipal:
        grants = tuple(g for g in grants if g.role in ROLES)
        tenants: dict[str, TenantAccess] = {}
        for tenant_id in sorted({g.tenant_id for g in grants}):
            mine = [g for g in grants if g.tenant_id == tenant_id]
            clinical = [g for g in mine if g.role in (LECTEUR, OPERATEUR)]
            essms: frozenset[str] | None
            if not clinical or any(g.essms_finess is None for g in clinical):
                essms = None
            else:
                essms = frozenset(g.essms_finess for g in clinical if g.essms_finess is not None)
            tenants[tenant_id] = TenantAccess(tenant_id=tenant_id, roles=frozenset(g.role for g in mine), essms=essms)
        return cls(
            user_id=user_id,
            username=username,
            display_name=display_name,
            grants=grants,
            platform_operator=platform_operator,
            tenants=tenants,
        )

    @property
    def actor(self) -> str:
        """The audit trail's actor for this user."""
        return f"user:{self.user_id}"

    def access(self, tenant_id: str) -> TenantAccess | None:
        return self.tenants.get(tenant_id)

    def clinical_tenants(self) -> list[str]:
        return [t for t, a in self.tenants.items() if a.can_read_clinical]

    def admin_tenants(self) -> list[str]:
        return [t for t, a in self.tenants.items() if a.can_administer]

    def operates(self, tenant_id: str) -> bool:
        access = self.access(tenant_id)
        return access is not None and access.can_operate
