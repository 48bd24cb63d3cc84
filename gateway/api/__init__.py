"""The REST API: routers (thin: parse, call a service, shape the reply), problem documents,
request dependencies and middleware. The application itself is assembled in :mod:`gateway.app`.
"""

from gateway.api import admin, audit, deliveries, health, inbound, metrics, oauth, persons, stays, submissions

__all__ = ["ROUTERS"]

ROUTERS = (
    oauth.router,
    submissions.router,
    deliveries.router,
    inbound.router,
    persons.router,
    stays.router,
    audit.router,
    admin.router,
    health.router,
    metrics.router,
)
