"""The real mail peers now live in :mod:`connectors.sandbox.mail` (the demo uses them too)."""

from connectors.sandbox.mail.servers import (
    Accepted,
    Dovecot,
    DsnSMTP,
    SmtpRelay,
    dovecot,
    dovecot_available,
    make_dsn,
    make_mdn,
    plain_mail,
    smtp_relay,
)

__all__ = [
    "Accepted",
    "Dovecot",
    "DsnSMTP",
    "SmtpRelay",
    "dovecot",
    "dovecot_available",
    "make_dsn",
    "make_mdn",
    "plain_mail",
    "smtp_relay",
]
