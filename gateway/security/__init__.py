"""Security: envelope encryption of personal data at rest, tenants and API clients."""

from gateway.security.clients import (
    add_essms,
    authenticate,
    create_api_client,
    create_tenant,
    essms_of_tenant,
)
from gateway.security.crypto import KeyRing, decrypt, encrypt, rewrap_all, rotate_data_key

__all__ = [
    "KeyRing",
    "add_essms",
    "authenticate",
    "create_api_client",
    "create_tenant",
    "decrypt",
    "encrypt",
    "essms_of_tenant",
    "rewrap_all",
    "rotate_data_key",
]
