"""The decision table of gateway.security.authz: administrators administer, they do not read."""

from __future__ import annotations

import pytest

from gateway.security.authz import (
    Grant,
    Kind,
    Principal,
    Role,
    can_act,
    can_administer,
    can_read_audit,
    can_read_clinical,
    can_read_metadata,
    can_submit,
    expand_scopes,
    missing_scope,
)

A, B = "tenant-a", "tenant-b"
F1, F2 = "750000010", "750000028"


def test_legacy_scopes_expand_to_the_current_names() -> None:
    assert expand_scopes({"submit", "read"}) == {"submissions:write", "submissions:read", "fhir:read"}
    assert expand_scopes({"admin", "audit"}) == {"admin", "audit:read"}


def test_an_api_client_reads_and_acts_in_its_tenant_only() -> None:
    p = Principal.api_client(client_id="c1", tenant_id=A, scopes="submit read".split())
    assert p.kind is Kind.API_CLIENT and p.subject == "client:c1"
    assert can_read_clinical(p, A) and can_act(p, "retry", A) and can_submit(p, A, F1)
    assert not can_read_clinical(p, B) and not can_act(p, "cancel", B) and not can_read_metadata(p, B)
    assert not can_act(p, "delete", A)  # unknown actions are refused
    assert not can_administer(p, A) and not can_read_audit(p, A)


def test_an_admin_client_administers_but_reads_no_clinical_content() -> None:
    p = Principal.api_client(client_id="c2", tenant_id=A, scopes=["admin"])
    assert can_administer(p, A) and can_read_audit(p, A) and can_read_metadata(p, A)
    assert not can_read_clinical(p, A) and not can_act(p, "replay", A)
    assert not can_administer(p, None) and not can_administer(p, B) and not can_read_audit(p, None)


def test_an_essms_restriction_narrows_every_decision() -> None:
    p = Principal.api_client(client_id="c3", tenant_id=A, scopes=["submissions:read"], essms=[F1])
    assert can_read_clinical(p, A, F1) and not can_read_clinical(p, A, F2)


def test_the_platform_operator_sees_metadata_everywhere_and_never_documents() -> None:
    p = Principal.platform_operator()
    assert can_read_metadata(p, A) and can_read_metadata(p, B) and can_read_audit(p, None)
    assert can_administer(p, None) and can_administer(p, A)
    assert not can_read_clinical(p, A) and not can_act(p, "retry", A) and not can_submit(p, A)


@pytest.mark.parametrize(
    ("roles", "clinical", "act", "admin"),
    [
        ({Role.LECTEUR}, True, False, False),
        ({Role.OPERATEUR}, True, True, False),
        ({Role.ADMINISTRATEUR}, False, False, True),
        ({Role.ADMINISTRATEUR, Role.LECTEUR}, True, False, True),
    ],
)
def test_user_roles(roles: set[Role], clinical: bool, act: bool, admin: bool) -> None:
    p = Principal.user(user_id="u1", grants=[Grant(A, r) for r in roles])
    assert can_read_clinical(p, A) is clinical
    assert can_act(p, "cancel", A) is act
    assert can_administer(p, A) is admin and can_read_audit(p, A) is admin
    assert not can_read_clinical(p, B) and not can_submit(p, A)


def test_role_labels_and_parsing() -> None:
    assert Role.parse("opérateur") is Role.OPERATEUR and Role.OPERATEUR.label == "opérateur"


def test_missing_scope_names_the_scope() -> None:
    p = Principal.api_client(client_id="c", tenant_id=A, scopes=["submissions:read"])
    assert missing_scope(p, "fhir:read") == "fhir:read"
    assert missing_scope(p, "submissions:read") is None
    assert missing_scope(Principal.user(user_id="u", grants=[]), "admin") is None  # users: roles decide


@pytest.mark.parametrize("role", list(Role))
def test_a_console_role_and_its_scopes_decide_alike(role: Role) -> None:
    """One table (ROLE_SCOPES): a user holding a role and an API client holding the role's scopes get
    the same decisions in their tenant, and nothing in another tenant; the console asks the same."""
    from gateway.console.roles import ConsolePrincipal
    from gateway.console.roles import Grant as ConsoleGrant
    from gateway.security.authz import ROLE_SCOPES, roles_for_scopes, scopes_for_roles

    assert role in roles_for_scopes(ROLE_SCOPES[role])
    scopes = scopes_for_roles({role})
    client = Principal.api_client(client_id="c", tenant_id=A, scopes=scopes)
    user = Principal.user(user_id="u", grants=[Grant(A, role)])
    console = ConsolePrincipal.build(user_id="u", username="u", display_name="U",
                                     grants=[ConsoleGrant(A, role.value)], platform_operator=False)  # fmt: skip
    access = console.access(A)
    assert access is not None
    for tenant in (A, B):
        assert can_read_clinical(client, tenant) == can_read_clinical(user, tenant)
        assert can_act(client, "retry", tenant) == can_act(user, "retry", tenant)
        assert can_administer(client, tenant) == can_administer(user, tenant)
        assert can_read_audit(client, tenant) == can_read_audit(user, tenant)
    assert (access.can_read_clinical, access.can_operate, access.can_administer) == (
        can_read_clinical(user, A), can_act(user, "retry", A), can_administer(user, A))  # fmt: skip
    assert console.access(B) is None and console.administers() == (role is Role.ADMINISTRATEUR)


def test_a_console_platform_operator_administers_every_tenant_and_reads_no_document() -> None:
    from gateway.console.roles import ConsolePrincipal

    console = ConsolePrincipal.build(user_id="p", username="p", display_name="P", grants=[], platform_operator=True)
    principal = console.authz_principal
    assert principal.kind is Kind.PLATFORM_OPERATOR and principal.subject == "user:p"
    assert can_administer(principal, None) and can_administer(principal, A) and console.administers()
    assert not can_read_clinical(principal, A)
