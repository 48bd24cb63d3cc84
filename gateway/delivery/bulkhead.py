"""Bulkheads: per-destination concurrency limits and circuit breakers (per process).

One slow or down destination must not starve the others: a worker thread only claims
deliveries for destinations where it could reserve a slot, and a destination whose peer keeps
failing (consecutive transient failures) is left alone for a cool-off period (the circuit is
*open*), then tried with a single probe (*half-open*) before it is closed again.

A permanent refusal is an answer from a working peer: it closes the circuit like a success.
State is shown by ``/readyz`` and ``/metrics`` (``dui_gateway_circuit_open``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BreakerPolicy", "Bulkheads"]


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    cooldown_seconds: float = 30.0
    max_cooldown_seconds: float = 600.0


@dataclass
class _Lane:
    limit: int
    in_flight: int = 0
    failures: int = 0
    opened_at: float | None = None
    cooldown: float = 0.0
    probing: bool = False
    opened_count: int = 0

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now >= self.opened_at + self.cooldown else "open"


class Bulkheads:
    """Thread-safe slots and breakers for a fixed set of destinations."""

    def __init__(
        self,
        limits: Mapping[str, int],
        *,
        policy: BreakerPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._lanes = {name: _Lane(limit=max(1, int(limit))) for name, limit in limits.items()}

    def reserve(self, names: Iterable[str]) -> list[str]:
        """Take one slot on every destination of ``names`` that has room and a closed circuit
        (or a half-open one with no probe out yet). Give back the unused ones with :meth:`release`."""
        now = self._clock()
        taken: list[str] = []
        with self._lock:
            for name in names:
                lane = self._lanes.get(name)
                if lane is None or lane.in_flight >= lane.limit:
                    continue
                state = lane.state(now)
                if state == "open" or (state == "half_open" and lane.probing):
                    continue
                if state == "half_open":
                    lane.probing = True
                lane.in_flight += 1
                taken.append(name)
        return taken

    def release(self, name: str, *, outcome: str | None = None) -> None:
        """Give a slot back; ``outcome`` (success, permanent, transient, deferred) feeds the breaker.

        ``None`` means the slot was not used (nothing was claimed for it).
        """
        now = self._clock()
        with self._lock:
            lane = self._lanes.get(name)
            if lane is None:
                return
            lane.in_flight = max(0, lane.in_flight - 1)
            was_probe = lane.probing and lane.state(now) == "half_open"
            if outcome is None:
                if was_probe:
                    lane.probing = False
                return
            if outcome in ("success", "permanent"):
                lane.failures = 0
                lane.opened_at = None
                lane.cooldown = 0.0
                lane.probing = False
            elif outcome == "transient":
                lane.failures += 1
                if was_probe or lane.failures >= self.policy.failure_threshold:
                    base = lane.cooldown * 2 if was_probe and lane.cooldown else self.policy.cooldown_seconds
                    lane.cooldown = min(self.policy.max_cooldown_seconds, base)
                    lane.opened_at = now
                    lane.opened_count += 1
                lane.probing = False
            else:  # deferred: the gateway's own fault, says nothing about the peer
                if was_probe:
                    lane.probing = False

    def is_open(self, name: str) -> bool:
        with self._lock:
            lane = self._lanes.get(name)
            return lane is not None and lane.state(self._clock()) == "open"

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per destination: circuit state, slots in use / limit, consecutive failures, seconds to the probe."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, lane in sorted(self._lanes.items()):
                state = lane.state(now)
                out[name] = {
                    "circuit": state,
                    "in_flight": lane.in_flight,
                    "limit": lane.limit,
                    "consecutive_failures": lane.failures,
                    "retry_in_seconds": round(max(0.0, (lane.opened_at or now) + lane.cooldown - now), 1)
                    if state == "open"
                    else 0.0,
                }
        return out
