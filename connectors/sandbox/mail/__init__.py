"""MSSanté stand-ins on loopback: a dev PKI, Debian's dovecot run unprivileged, and an aiosmtpd
relay with client-certificate TLS and DSN (:class:`MailSandbox` runs the three together;
``dui-gateway sandbox mail``). The tests use the same servers (``tests/peers/mail.py``)."""

from connectors.sandbox.mail.pki import DevPki, Issued
from connectors.sandbox.mail.sandbox import MailSandbox, MailSandboxUnavailable
from connectors.sandbox.mail.servers import (
    Accepted,
    Dovecot,
    SmtpRelay,
    dovecot_available,
    make_dsn,
    make_mdn,
    plain_mail,
)

__all__ = [
    "Accepted",
    "DevPki",
    "Dovecot",
    "Issued",
    "MailSandbox",
    "MailSandboxUnavailable",
    "SmtpRelay",
    "dovecot_available",
    "make_dsn",
    "make_mdn",
    "plain_mail",
]
