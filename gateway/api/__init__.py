"""The REST API: routers (thin: parse, call a service, shape the reply), problem documents,
request dependencies and middleware. The application itself is assembled in :mod:`gateway.app`.
"""

from gateway.api import audit, deliveries, health, inbound, metrics, persons, stays, submissions

__all__ = ["ROUTERS"]

ROUTERS = (
    submissions.router,
    deliveries.router,
    inbound.router,
    persons.router,
    stays.router,
    audit.router,
    health.router,
    metrics.router,
)
