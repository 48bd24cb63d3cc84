"""The MSSanté mail sandbox: a dev PKI, dovecot and the SMTP relay under one folder.

``dui-gateway sandbox mail --dir var/mail`` and the demo run it. In ``folder``:

- ``pki/``: the test CA (``ca.pem``), the servers' certificate, the ESSMS's client certificate
  (``client.pem``/``client.key``, common name = the ESSMS's mailbox address, which is also its
  IMAP login: dovecot offers SASL EXTERNAL only, no password);
- ``imap/``: dovecot's generated configuration, logs and the Maildirs (``imap/mail/<address>``),
  when the ``dovecot`` user can reach the folder (else a temporary folder, named in
  ``sandbox.json``);
- ``sandbox.json``: ports, addresses and file paths, for the demo and for people.

The relay requires STARTTLS and a client certificate from the test CA, announces DSN, delivers
into the mailboxes (one copy per Message-ID), writes DSNs into the sender's mailbox (``failed``
5.1.1 for an address without a mailbox) and, for the addresses in ``mdn_from``, answers
``Disposition-Notification-To`` with an MDN ``processed``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connectors.sandbox.mail.pki import DevPki
from connectors.sandbox.mail.servers import Dovecot, SmtpRelay, dovecot_available

__all__ = ["MailSandbox", "MailSandboxUnavailable"]


class MailSandboxUnavailable(RuntimeError):
    """dovecot is not installed or does not start (the message says which)."""


class MailSandbox:
    """``mailboxes``: the addresses that have a mailbox; ``essms``: the one whose certificate
    the PKI issues (the client certificate's common name)."""

    def __init__(
        self,
        folder: Path,
        mailboxes: Iterable[str],
        *,
        essms: str,
        smtp_port: int = 0,
        imaps_port: int = 0,
        mdn_from: Iterable[str] = (),
    ) -> None:
        self.folder = folder.resolve()
        self.addresses = sorted({a.lower() for a in [essms, *mailboxes]})
        self.essms = essms.lower()
        self.smtp_port = smtp_port
        self.imaps_port = imaps_port
        self.mdn_from = list(mdn_from)
        self.pki: DevPki | None = None
        self.imap: Dovecot | None = None
        self.relay: SmtpRelay | None = None

    def start(self) -> MailSandbox:
        if not dovecot_available():
            raise MailSandboxUnavailable("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        # aiosmtpd warns that it requires client certificates: that is the point
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.pki = DevPki.load_or_create(self.folder / "pki", client_cn=self.essms)
        # passwords nobody uses (EXTERNAL only): the passwd-file needs a field
        users = {a: secrets.token_urlsafe(12) for a in self.addresses}
        imap = Dovecot(self.pki, users, where=self.folder / "imap", imaps_port=self.imaps_port, certificate_login=True)
        try:
            self.imap = imap.start()
        except RuntimeError as exc:
            raise MailSandboxUnavailable(str(exc)) from None
        try:
            self.relay = SmtpRelay(
                self.pki, imap, {a: a for a in self.addresses}, port=self.smtp_port, mdn_from=self.mdn_from
            ).start()
        except Exception as exc:  # a port taken, a TLS file unreadable...
            imap.stop()
            self.imap = None
            raise MailSandboxUnavailable(f"the SMTP relay did not start: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            imap.stop()
            self.imap = None
            raise
        (self.folder / "sandbox.json").write_text(json.dumps(self.info(), indent=2) + "\n")
        return self

    def info(self) -> dict[str, Any]:
        assert self.pki is not None and self.imap is not None and self.relay is not None
        return {
            "smtp": {"host": "127.0.0.1", "port": self.relay.port, "tls": "starttls"},
            "imap": {"host": "127.0.0.1", "imaps_port": self.imap.imaps_port, "starttls_port": self.imap.imap_port},
            "ca_bundle": str(self.pki.ca_path),
            "essms": {
                "mailbox": self.essms,
                "certificate": str(self.pki.client.cert_path),
                "private_key": str(self.pki.client.key_path),
            },
            "mailboxes": {a: str(self.imap.mail_root / a) for a in self.addresses},
            "mdn_from": sorted(a.lower() for a in self.mdn_from),
        }

    def messages(self, address: str) -> list[bytes]:
        """What the mailbox of ``address`` holds (new and read), oldest first."""
        assert self.imap is not None
        return self.imap.messages(address.lower())

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        if self.imap is not None:
            self.imap.stop()
            self.imap = None

    def __enter__(self) -> MailSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
