"""Settings: one pydantic-settings model, read from the environment (prefix ``DUI_GATEWAY_``)
and an optional env file (``DUI_GATEWAY_ENV_FILE``), validated once at start-up.

Outside the ``dev`` profile, insecure defaults are refused: the dev master key, TLS
verification turned off, missing audit sealing keys, or (``prod``) a missing admin token.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEV_MASTER_KEY", "Settings", "get_settings"]

# 32 bytes, base64url. Only ever accepted with profile=dev.
DEV_MASTER_KEY = "ZGV2LW9ubHktbWFzdGVyLWtleS1kby1ub3QtdXNlISE="


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DUI_GATEWAY_",
        env_file=os.environ.get("DUI_GATEWAY_ENV_FILE"),
        extra="forbid",
        hide_input_in_errors=True,  # validation errors must not echo keys or tokens
    )

    profile: Literal["dev", "test", "prod"] = "dev"
    database_url: str = "sqlite:///var/dui-gateway.db"
    # master keys: "id:base64key" pairs separated by commas; the first one wraps new data keys
    master_keys: SecretStr = SecretStr(f"dev:{DEV_MASTER_KEY}")
    # audit chain HMAC keys, same "id:base64key" format (first seals new events); unset = plain SHA-256 chain
    audit_keys: SecretStr | None = None
    # audit hash chains appended to in parallel (docs/audit.md); unset = 8 on PostgreSQL, 1 on SQLite
    audit_chains: int | None = Field(default=None, ge=1, le=64)
    admin_token: SecretStr | None = None
    # OAuth2 client credentials (docs/security.md): Ed25519 seeds "kid:base64" (first signs, all verify);
    # unset = one key derived from the first master key
    token_signing_keys: SecretStr | None = None
    token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    token_issuer: str = "dui-gateway"  # noqa: S105 - an identifier
    token_audience: str = "dui-gateway-api"  # noqa: S105 - an identifier
    tls_verify: bool = True  # false (dev only): destinations may turn TLS verification off (routing.check_tls_policy)
    routing_file: Path | None = None  # routing rules + destinations (YAML or JSON)
    routing_refresh_seconds: float = Field(default=5.0, ge=0)  # how soon rules changed in the database apply
    document_id_root: str = "1.2.250.1.999.1.1"  # OID root for the documents this deployment issues
    cisis_kit_dir: Path | None = Field(default=None, validation_alias="CISIS_KIT_DIR")
    # the CI-SIS profiles the ANS pipeline leaves optional (structurationMinimale, terminologies) in the
    # gate: errors for the gateway's own documents. Off by default: they cost ~0.3-1.5 s per DLU today
    # (docs/ci_sis.md); the mapping tests hold the gateway's documents to them in the meantime
    cisis_optional_profiles: bool = False
    max_body_bytes: int = 2 * 1024 * 1024
    embedded_worker: bool = True  # run delivery workers inside the API process (embedded mode)
    # threads per worker process: the pipeline is CPU-bound (GIL), so more threads than that only
    # add switching; 2 keeps a send waiting on a slow peer from idling the process (docs/operations.md)
    worker_concurrency: int = 2
    lease_seconds: int = 60
    max_attempts: int = 8
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    poll_interval_seconds: float = 0.5
    # delivery core v2 (docs/delivery.md)
    lease_heartbeat: bool = True  # extend a claim's lease while its send runs (up to the send deadline)
    max_send_seconds: float = Field(default=300.0, gt=0, le=3600)  # longest send a connector may declare
    receipt_timeout_seconds: float = Field(default=3600.0, gt=0)  # sent -> unconfirmed without a receipt
    destination_concurrency: int = Field(default=4, ge=1, le=256)  # per destination, per process
    breaker_failure_threshold: int = Field(default=5, ge=1)  # consecutive transient failures open the circuit
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)  # first open period (doubles, max 10 min)
    replay_min_interval_seconds: float = Field(default=60.0, ge=0)  # between two replays of one submission
    credentials_file: Path | None = None  # ESSMS credentials by tenant/FINESS/purpose (docs/credentials.md)
    run_sources: bool = True  # run the routing file's inbound sources (listeners, pollers) in this worker process
    inbound_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)  # largest inbound message stored
    # back-pressure (gateway.api.limits): 0 turns a limit off
    max_queue_depth: int = Field(default=100_000, ge=0)  # new submissions refused (503) above this queue depth
    queue_depth_cache_seconds: float = Field(default=1.0, ge=0)
    rate_limit_per_second: float = Field(default=0.0, ge=0)  # per API client and per process (429)
    rate_limit_burst: int = Field(default=50, ge=1)
    # how long a process reuses an authenticated credential and a tenant's ESSMS without reading
    # them again (gateway.security.auth_cache): a revocation by another process takes effect
    # within this delay, one in the same process at once; 0: read them for every request
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    busy_retry_after_seconds: int = Field(default=5, ge=1)  # Retry-After when the database is saturated
    # ops console (gateway.console, docs/console.md)
    console_enabled: bool = True
    console_secret: SecretStr | None = None  # signs session cookies; unset = derived from the first master key
    console_cookie_secure: bool = True  # Secure cookies (HTTPS); false only for plain-HTTP development
    console_session_seconds: int = Field(default=8 * 3600, gt=0)
    console_lockout_threshold: int = Field(default=5, ge=1)  # consecutive failed logins lock the account
    console_lockout_seconds: int = Field(default=900, gt=0)
    # OpenID Connect login (Pro Santé Connect or an ESSMS identity provider); unset = local accounts only
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid profile email"
    oidc_label: str = "Pro Santé Connect"
    oidc_redirect_base: str | None = None  # public base URL of the gateway (else the request's)
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _keys_well_formed(self) -> Settings:
        # Refuse malformed keys at start-up rather than at the first encryption (no key material in messages).
        from gateway.security.crypto import KeyRing, parse_key_spec

        KeyRing.parse(self.master_keys.get_secret_value())
        if self.audit_keys is not None and not parse_key_spec(self.audit_keys.get_secret_value()):
            raise ValueError("DUI_GATEWAY_AUDIT_KEYS is set but holds no key")
        if self.token_signing_keys is not None and not parse_key_spec(self.token_signing_keys.get_secret_value()):
            raise ValueError("DUI_GATEWAY_TOKEN_SIGNING_KEYS is set but holds no key")
        return self

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.profile == "dev":
            return self
        problems: list[str] = []
        if DEV_MASTER_KEY in self.master_keys.get_secret_value():
            problems.append("DUI_GATEWAY_MASTER_KEYS still holds the development key")
        if not self.tls_verify:
            problems.append("DUI_GATEWAY_TLS_VERIFY=false is only allowed with profile=dev")
        if self.audit_keys is None:
            # a plain SHA-256 chain can be rewritten consistently by anyone able to write to the database
            problems.append(f"DUI_GATEWAY_AUDIT_KEYS is required with profile={self.profile} (HMAC-sealed audit chain)")
        if self.profile == "prod" and self.admin_token is None:
            problems.append("DUI_GATEWAY_ADMIN_TOKEN is required with profile=prod")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
