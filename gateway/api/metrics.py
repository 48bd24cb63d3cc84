"""``/metrics``: Prometheus text exposition.

Two sources: the in-process counters and histograms of :mod:`gateway.metrics` (submissions
received, delivery attempts, end-to-end latency), and a collector that reads the current state
from the database at scrape time, so the figures are right whichever process did the work
(PostgreSQL scale-out mode):

* ``dui_gateway_submissions{status,document_type}``
* ``dui_gateway_deliveries{status,connector,document_type}``
* ``dui_gateway_queue_depth`` — due pending deliveries plus submissions waiting in ``received``
* ``dui_gateway_delivery_attempts_recorded{connector,outcome}`` — attempt rows
* ``dui_gateway_database_up`` — 0 when the scrape could not read the database
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logging import get_logger
from gateway.storage.models import Attempt, Delivery, Submission

__all__ = ["CredentialsCollector", "DatabaseCollector", "router"]

router = APIRouter(tags=["metrics"])

_log = get_logger(__name__)


class DatabaseCollector(Collector):
    """Gauges of the durable state, computed with a few GROUP BY queries per scrape."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no describe-time queries

    def collect(self) -> Iterator[Metric]:
        submissions = GaugeMetricFamily(
            "dui_gateway_submissions", "Submissions by status and document type", labels=["status", "document_type"]
        )
        deliveries = GaugeMetricFamily(
            "dui_gateway_deliveries",
            "Deliveries by status, connector and document type",
            labels=["status", "connector", "document_type"],
        )
        attempts = GaugeMetricFamily(
            "dui_gateway_delivery_attempts_recorded",
            "Delivery attempts recorded in the database, by connector and outcome",
            labels=["connector", "outcome"],
        )
        queue = GaugeMetricFamily(
            "dui_gateway_queue_depth", "Work waiting: due pending deliveries plus submissions in status received"
        )
        up = GaugeMetricFamily("dui_gateway_database_up", "1 when the scrape could read the database")
        try:
            with self._session_factory() as session:
                for status, doc_type, count in session.execute(
                    select(Submission.status, Submission.document_type, func.count()).group_by(
                        Submission.status, Submission.document_type
                    )
                ):
                    submissions.add_metric([status, doc_type], count)
                for status, connector, doc_type, count in session.execute(
                    select(Delivery.status, Delivery.connector, Submission.document_type, func.count())
                    .join(Submission, Submission.id == Delivery.submission_id)
                    .group_by(Delivery.status, Delivery.connector, Submission.document_type)
                ):
                    deliveries.add_metric([status, connector, doc_type], count)
                for connector, outcome, count in session.execute(
                    select(Delivery.connector, Attempt.outcome, func.count())
                    .join(Delivery, Delivery.id == Attempt.delivery_id)
                    .group_by(Delivery.connector, Attempt.outcome)
                ):
                    attempts.add_metric([connector, outcome], count)
                due = session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.status == "pending", Delivery.next_attempt_at <= datetime.now(UTC))
                )
                waiting = session.scalar(
                    select(func.count()).select_from(Submission).where(Submission.status == "received")
                )
                session.rollback()
            queue.add_metric([], (due or 0) + (waiting or 0))
            up.add_metric([], 1)
        except Exception as exc:  # a scrape must not fail because the database is down
            _log.warning("metrics_database_unavailable", error_type=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        yield from (submissions, deliveries, attempts, queue, up)


class CircuitCollector(Collector):
    """This process's bulkheads: circuit state and sends in flight per destination."""

    def __init__(self, bulkheads: Callable[[], Any]) -> None:
        self._bulkheads = bulkheads

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "dui_gateway_circuit_open",
            "1 while a destination's circuit breaker is open in this process (0 closed, 0.5 half-open)",
            labels=["destination"],
        )
        busy = GaugeMetricFamily(
            "dui_gateway_destination_in_flight",
            "Sends in flight per destination in this process",
            labels=["destination"],
        )
        values = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
        for name, lane in self._bulkheads().snapshot().items():
            state.add_metric([name], values.get(lane["circuit"], 1.0))
            busy.add_metric([name], lane["in_flight"])
        yield from (state, busy)


class CredentialsCollector(Collector):
    """Days left before each stored ESSMS certificate expires (alert at 30: docs/security.md)."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        from gateway.credentials import certificate_expiries

        days = GaugeMetricFamily(
            "dui_gateway_credential_certificate_days_left",
            "Days before a stored ESSMS certificate expires (negative: expired)",
            labels=["tenant_id", "essms", "purpose", "field"],
        )
        try:
            with self._runtime.session_factory() as session:
                entries = certificate_expiries(session, keyring=self._runtime.keyring)
                session.rollback()
        except Exception as exc:  # a scrape must not fail because the database is down
            _log.warning("metrics_credentials_unavailable", error_type=type(exc).__name__)
            return
        for entry in entries:
            for cert in entry["certificates"]:
                if "days_left" in cert:
                    days.add_metric([entry["tenant_id"], entry["essms"], entry["purpose"], cert["field"]],
                                    cert["days_left"])  # fmt: skip
        yield days


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: in-process counters and the database state at scrape time."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    body = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
