"""Console users: local accounts (argon2id), OpenID Connect identities, roles, lockout.

Services never commit (the caller owns the transaction), like :mod:`gateway.services`.
Every change of a user or a grant, every login and every lockout is an audit event.
"""

from __future__ import annotations

import functools
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from gateway import audit
from gateway.console.roles import ROLES, ConsolePrincipal, Grant
from gateway.errors import Conflict, FieldError, NotFound, ValidationFailed
from gateway.storage.models import Essms, Tenant, User, UserRole

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "LoginResult",
    "authenticate_local",
    "check_password",
    "create_user",
    "find_oidc_user",
    "generate_password",
    "grant_role",
    "is_locked",
    "principal_of",
    "revoke_role",
    "set_active",
    "set_password",
    "unlock",
]

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user does not exist, so both answers take the same time; computed on
    first use (an argon2 hash costs 64 MiB and a fraction of a second at every import)."""
    return _hasher.hash("not-a-password-of-anyone")


MIN_PASSWORD_LENGTH = 12


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def check_password(password: str) -> None:
    """The password policy, the same for the CLI and the console (``password`` field error)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"the password must be at least {MIN_PASSWORD_LENGTH} characters long",
            [FieldError("password", f"at least {MIN_PASSWORD_LENGTH} characters", "too_short")],
        )


def generate_password() -> str:
    """A random initial password (20 URL-safe characters, 120 bits) that passes the policy."""
    password = secrets.token_urlsafe(15)
    check_password(password)
    return password


def is_locked(user: User, now: datetime | None = None) -> bool:
    locked_until = _aware(user.locked_until)
    return locked_until is not None and locked_until > (now or _now())


def _state(user: User) -> dict[str, object]:
    """What the audit trail records of an account before and after a change (never the password
    nor its hash: only whether one is set)."""
    return {"active": user.active, "locked": is_locked(user), "local_password": user.password_hash is not None}


def _tenant(session: Session, tenant: str) -> Tenant:
    row = session.scalars(select(Tenant).where((Tenant.code == tenant) | (Tenant.id == tenant))).first()
    if row is None:
        raise NotFound(f"no tenant {tenant!r}")
    return row


def create_user(
    session: Session,
    *,
    username: str,
    actor: str,
    display_name: str = "",
    password: str | None = None,
    oidc_issuer: str | None = None,
    oidc_subject: str | None = None,
    platform_operator: bool = False,
) -> User:
    username = username.strip()
    if not username or len(username) > 255:
        raise ValidationFailed("a user name is required", [FieldError("username", "required", "missing")])
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise Conflict(f"a user {username!r} already exists")
    if (oidc_issuer is None) != (oidc_subject is None):
        raise ValidationFailed(
            "an OpenID Connect identity needs both the issuer and the subject",
            [FieldError("oidc_subject", "issuer and subject go together", "incomplete")],
        )
    if password is not None:
        check_password(password)
    now = _now()
    user = User(
        id=str(uuid.uuid4()),
        username=username,
        display_name=display_name or username,
        password_hash=_hasher.hash(password) if password is not None else None,
        oidc_issuer=oidc_issuer,
        oidc_subject=oidc_subject,
        platform_operator=platform_operator,
        active=True,
        failed_logins=0,
        session_epoch=0,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="user_created",
        entity_type="user",
        entity_id=user.id,
        detail={"username": username, "platform_operator": platform_operator, "oidc": oidc_issuer is not None},
    )
    return user


def set_password(session: Session, *, user: User, password: str, actor: str, tenant_id: str | None = None) -> None:
    """Set a local password: the lockout is lifted and the user's open sessions end. Audited
    before/after (whether a password is set, never the password nor its hash)."""
    check_password(password)
    before = _state(user)
    user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    user.session_epoch += 1  # sessions opened with the old password end
    user.updated_at = _now()
    audit.append(session, actor=actor, action="password_set", entity_type="user", entity_id=user.id,
                 tenant_id=tenant_id, detail={"before": before, "after": _state(user)})  # fmt: skip


def set_active(session: Session, *, user: User, active: bool, actor: str, tenant_id: str | None = None) -> bool:
    """Disable (no login, open sessions end at once) or re-enable an account; audited before/after.
    Returns whether anything changed (nothing is audited otherwise)."""
    if user.active == active:
        return False
    before = _state(user)
    user.active = active
    if not active:
        user.session_epoch += 1
    user.updated_at = _now()
    audit.append(session, actor=actor, action="user_enabled" if active else "user_disabled", entity_type="user",
                 entity_id=user.id, tenant_id=tenant_id, detail={"before": before, "after": _state(user)})  # fmt: skip
    return True


def unlock(session: Session, *, user: User, actor: str, tenant_id: str | None = None) -> None:
    """Lift a lockout after repeated failed logins (and reset the failure count); audited before/after."""
    before = _state(user)
    user.locked_until = None
    user.failed_logins = 0
    user.updated_at = _now()
    audit.append(session, actor=actor, action="unlocked", entity_type="user", entity_id=user.id,
                 tenant_id=tenant_id, detail={"before": before, "after": _state(user)})  # fmt: skip


def grant_role(
    session: Session, *, user: User, tenant: str, role: str, actor: str, essms_finess: str | None = None
) -> UserRole:
    if role not in ROLES:
        raise ValidationFailed(
            f"unknown role {role!r} (one of {', '.join(ROLES)})", [FieldError("role", "unknown role", "invalid")]
        )
    row = _tenant(session, tenant)
    if essms_finess is not None:
        essms = session.scalars(select(Essms).where(Essms.finess == essms_finess)).first()
        if essms is None or essms.tenant_id != row.id:
            raise NotFound(f"tenant {row.code} has no ESSMS {essms_finess}")
    for existing in user.roles:
        if existing.tenant_id == row.id and existing.role == role and existing.essms_finess == essms_finess:
            return existing
    grant = UserRole(
        id=str(uuid.uuid4()),
        user_id=user.id,
        tenant_id=row.id,
        role=role,
        essms_finess=essms_finess,
        created_at=_now(),
    )
    session.add(grant)
    user.roles.append(grant)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="role_granted",
        entity_type="user",
        entity_id=user.id,
        tenant_id=row.id,
        detail={"role": role, "essms": essms_finess},
    )
    return grant


def revoke_role(session: Session, *, user: User, tenant: str, role: str, actor: str) -> int:
    row = _tenant(session, tenant)
    gone = [g for g in user.roles if g.tenant_id == row.id and g.role == role]
    for grant in gone:
        user.roles.remove(grant)
        session.delete(grant)
    if gone:
        user.session_epoch += 1
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="role_revoked",
            entity_type="user",
            entity_id=user.id,
            tenant_id=row.id,
            detail={"role": role},
        )
    return len(gone)


def load_user(session: Session, user_id: str) -> User | None:
    return session.scalars(select(User).where(User.id == user_id).options(selectinload(User.roles))).first()


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username).options(selectinload(User.roles))).first()


def find_oidc_user(session: Session, *, issuer: str, subject: str) -> User | None:
    return session.scalars(
        select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject).options(selectinload(User.roles))
    ).first()


def principal_of(user: User) -> ConsolePrincipal:
    return ConsolePrincipal.build(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        grants=[Grant(g.tenant_id, g.role, g.essms_finess) for g in user.roles],
        platform_operator=user.platform_operator,
    )


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    locked: bool = False


def authenticate_local(
    session: Session, *, username: str, password: str, threshold: int, lockout_seconds: int, source: str
) -> LoginResult:
    """Check a local password. ``threshold`` consecutive failures lock the account for
    ``lockout_seconds``; while locked, even the right password is refused. Audited either way
    (the attempted user name is not stored when no such user exists)."""
    now = _now()
    user = find_user(session, username)
    if user is None or user.password_hash is None or not user.active:
        try:
            _hasher.verify(_dummy_hash(), password + "x")
        except VerificationError:
            pass
        audit.append(
            session,
            actor="console",
            action="login_failed",
            entity_type="user",
            entity_id=user.id if user is not None else "unknown",
            outcome="failure",
            detail={"method": "local", "source": source},
        )
        return LoginResult(user=None)
    locked_until = _aware(user.locked_until)
    if locked_until is not None and locked_until > now:
        audit.append(
            session,
            actor="console",
            action="login_failed",
            entity_type="user",
            entity_id=user.id,
            outcome="failure",
            detail={"method": "local", "reason": "locked", "source": source},
        )
        return LoginResult(user=None, locked=True)
    ok: bool
    try:
        ok = bool(_hasher.verify(user.password_hash, password))
    except (VerifyMismatchError, InvalidHashError, VerificationError):
        ok = False
    if not ok:
        user.failed_logins += 1
        locked = user.failed_logins >= threshold
        if locked:
            user.locked_until = now + timedelta(seconds=lockout_seconds)
            user.failed_logins = 0
        audit.append(
            session,
            actor="console",
            action="locked_out" if locked else "login_failed",
            entity_type="user",
            entity_id=user.id,
            outcome="failure",
            detail={"method": "local", "source": source},
        )
        return LoginResult(user=None, locked=locked)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit.append(
        session,
        actor=f"user:{user.id}",
        action="logged_in",
        entity_type="user",
        entity_id=user.id,
        detail={"method": "local", "source": source},
    )
    return LoginResult(user=user)


def end_sessions(session: Session, *, user: User, actor: str) -> None:
    """Log out: every session cookie issued to this user so far stops being accepted."""
    user.session_epoch += 1
    user.updated_at = _now()
    audit.append(session, actor=actor, action="logged_out", entity_type="user", entity_id=user.id)


def record_oidc_login(session: Session, *, user: User, issuer: str, source: str) -> None:
    user.last_login_at = _now()
    audit.append(
        session,
        actor=f"user:{user.id}",
        action="logged_in",
        entity_type="user",
        entity_id=user.id,
        detail={"method": "oidc", "issuer": issuer, "source": source},
    )
