"""The process-wide runtime: settings, database, key ring, configured destinations, workers.

Built once at start-up (API process, worker process, or both in embedded mode) and passed
explicitly; nothing here is a module-level global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Health
from gateway.settings import Settings
from gateway.storage.db import make_engine, make_sessionmaker

if TYPE_CHECKING:
    from gateway.security.crypto import KeyRing

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    keyring: KeyRing
    # destination name -> configured connector instance (filled by gateway.routing)
    destinations: dict[str, Any] = field(default_factory=dict)
    routing: Any = None  # gateway.routing.RoutingTable once loaded
    sources: dict[str, Any] = field(default_factory=dict)  # inbound source name -> (Source, tenant id/code)
    credentials: Any = None  # gateway.credentials.CredentialsProvider
    routing_state: dict[str, Any] = field(default_factory=dict)  # gateway.routing_store's (version in force)
    # the delivery engine's claims look for expired leases first again from this time (claim clock)
    expired_check_at: Any = None
    _workers: Any = None
    _bulkheads: Any = None
    _token_signer: Any = None
    _auth_caches: Any = None
    _intake_store_many: Any = None  # gateway.api.submissions.store_many_for

    def __post_init__(self) -> None:
        # Sessions carry this runtime's audit sealer, so audit.append never falls back to
        # process-wide settings that may differ from the runtime's.
        from gateway.audit.chain import SEALER_INFO_KEY, AuditSealer

        info = dict(self.session_factory.kw.get("info") or {})
        info[SEALER_INFO_KEY] = AuditSealer.for_settings(self.settings)
        self.session_factory.configure(info=info)
        if self.credentials is None:
            from gateway.credentials import CredentialsProvider

            self.credentials = CredentialsProvider.from_settings(self.settings, self.keyring)

    @property
    def bulkheads(self) -> Any:
        """Per-destination concurrency limits and circuit breakers of this process (built on first use)."""
        if self._bulkheads is None:
            from gateway.delivery.bulkhead import BreakerPolicy, Bulkheads

            limits = {}
            for name in self.destinations:
                dest = self.routing.config.destinations.get(name) if self.routing is not None else None
                limit = getattr(dest, "concurrency", None) if dest is not None else None
                limits[name] = int(limit) if limit is not None else self.settings.destination_concurrency
            policy = BreakerPolicy(
                failure_threshold=self.settings.breaker_failure_threshold,
                cooldown_seconds=self.settings.breaker_cooldown_seconds,
            )
            self._bulkheads = Bulkheads(limits, policy=policy)
        return self._bulkheads

    @property
    def token_signer(self) -> Any:
        """The OAuth2 access-token signer (gateway.security.oauth.TokenSigner), built on first use."""
        if self._token_signer is None:
            from gateway.security.oauth import TokenSigner

            self._token_signer = TokenSigner.from_settings(self.settings)
        return self._token_signer

    @property
    def auth_caches(self) -> Any:
        """This process's short-lived memory of authenticated credentials and of each tenant's ESSMS
        (gateway.security.auth_cache; ``auth_cache_seconds``, 0: none), built on first use."""
        if self._auth_caches is None:
            from gateway.security.auth_cache import AuthCaches

            self._auth_caches = AuthCaches(self.settings.auth_cache_seconds)
        return self._auth_caches

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: Engine | None = None) -> Runtime:
        from gateway.security.crypto import KeyRing

        engine = engine or make_engine(settings.database_url)
        rt = cls(
            settings=settings,
            engine=engine,
            session_factory=make_sessionmaker(engine),
            keyring=KeyRing.from_settings(settings),
        )
        rt.load_routing()
        return rt

    def load_routing(self) -> None:
        """Load routing rules and instantiate destinations (owned by gateway.routing)."""
        try:
            from gateway import routing
        except ModuleNotFoundError as exc:
            if exc.name != "gateway.routing":
                raise
            return
        from gateway.delivery.engine import check_connectors

        self.routing, self.destinations = routing.load(self.settings)
        check_connectors(self.settings, self.destinations)
        self.sources = routing.build_sources(self.routing.config, settings=self.settings, source=self.routing.source)
        self._bulkheads = None

    def health(self) -> dict[str, Health]:
        """Each configured destination's health (one cheap call to its peer)."""
        out: dict[str, Health] = {}
        for name, connector in self.destinations.items():
            try:
                out[name] = connector.health()
            except Exception as exc:  # health() must not raise; be defensive anyway
                out[name] = Health(ok=False, detail=f"{type(exc).__name__}")
        return out

    def start_workers(self) -> None:
        """Start in-process delivery workers (embedded mode)."""
        from gateway.worker import WorkerPool

        if self._workers is None:
            self._workers = WorkerPool(self)
            self._workers.start()

    def wake_workers(self) -> None:
        """Cut the in-process workers' idle sleep short (new work was just stored)."""
        if self._workers is not None:
            self._workers.wake()

    def stop_workers(self, timeout: float = 30.0) -> None:
        if self._workers is not None:
            self._workers.stop(timeout=timeout)
            self._workers = None

    def close(self) -> None:
        self.stop_workers()
        self.engine.dispose()
