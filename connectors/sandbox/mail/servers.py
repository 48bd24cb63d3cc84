"""Real mail servers on loopback for the MSSanté sandbox (demo) and tests.

- :class:`Dovecot`: Debian's dovecot (``scripts/install-test-deps.sh``), run unprivileged with a
  configuration generated in a temporary folder: IMAPS (implicit TLS) and IMAP+STARTTLS
  listeners, TLS 1.2+, client certificates from the test CA required, password users from a
  passwd-file, Maildir storage. When the tests run as root, dovecot is started as the
  ``dovecot`` system user through ``setpriv`` (dovecot refuses to run its login processes as
  root); otherwise as the current user.
- :class:`SmtpRelay`: an aiosmtpd server standing in for the MSSanté operator's relay: STARTTLS
  required (or implicit TLS), client certificate from the test CA required, the DSN extension
  (RFC 3461: RET, ENVID, NOTIFY, ORCPT). What it accepts it delivers like an LDA into the
  recipients' Maildirs (one copy per Message-ID and mailbox, as duplicate elimination would),
  and it writes RFC 3464 reports into the sender's mailbox: ``delivered`` when NOTIFY asks for
  SUCCESS, ``failed`` (5.1.1) for a recipient that has no mailbox. It can be told to answer
  4xx/5xx to the next transactions, to refuse some recipients, or to never report.
- :func:`make_mdn`: the RFC 8098 disposition notification a recipient's system sends back.

With ``certificate_login=True`` dovecot takes the login from the client certificate's common
name and offers SASL EXTERNAL only: the ESSMS authenticates with its organisation certificate
alone, no password (the mail sandbox of the demo). Otherwise logins use passwords (the tests).
"""

from __future__ import annotations

import email
import getpass
import itertools
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email import policy
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.sandbox.mail.pki import DevPki

__all__ = [
    "DOVECOT",
    "Accepted",
    "Dovecot",
    "DsnSMTP",
    "SmtpRelay",
    "dovecot",
    "dovecot_available",
    "free_port",
    "make_dsn",
    "make_mdn",
    "plain_mail",
    "smtp_relay",
    "wait_port",
]

_CRLF32 = policy.compat32.clone(linesep="\r\n")
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
_counter = itertools.count()


def dovecot_available() -> bool:
    return Path(shutil.which("dovecot") or DOVECOT).exists()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, *, timeout: float = 20.0, alive: Callable[[], bool] | None = None) -> None:
    """Until something listens on 127.0.0.1:``port`` (``alive`` lets a dead process fail fast)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"process died before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _traversable(path: Path, uid: int) -> bool:
    """True when user ``uid`` can reach ``path`` (every parent searchable by it)."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except OSError:
            continue  # not created yet: mkdir gives it a usable mode
        if st.st_uid != uid and not st.st_mode & 0o001:
            return False
    return True


# -- IMAP: dovecot ------------------------------------------------------------------------------
@dataclass
class Dovecot:
    """A dovecot instance; ``users`` maps login → password (mailbox = Maildir of that login)."""

    pki: DevPki
    users: dict[str, str]
    where: Path | None = None  # the folder to run in (kept by stop()); None: a temporary one
    imaps_port: int = 0  # 0: a free port
    imap_port: int = 0
    certificate_login: bool = False  # SASL EXTERNAL, login = the client certificate's CN
    root: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("dovecot")
            self.uid, self.gid, self.user = entry.pw_uid, entry.pw_gid, "dovecot"
        else:
            self.uid, self.gid, self.user = os.getuid(), os.getgid(), getpass.getuser()
        # the unprivileged user must be able to traverse the folder (pytest's tmp_path is 0700)
        self._temporary = self.where is None or not _traversable(self.where, self.uid)
        self.root = Path(tempfile.mkdtemp(prefix="mss-dovecot-")) if self._temporary else Path(self.where or ".")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.imaps_port = self.imaps_port or free_port()
        self.imap_port = self.imap_port or free_port()

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)

    def _config(self) -> str:
        r = self.root
        return f"""
base_dir = {r}/run
state_dir = {r}/state
instance_name = mss-test-{self.imaps_port}
protocols = imap
listen = 127.0.0.1
default_login_user = {self.user}
default_internal_user = {self.user}
default_internal_group = {pwd.getpwuid(self.uid).pw_name if os.geteuid() == 0 else self.user}
first_valid_uid = {self.uid}
last_valid_uid = {self.uid}
log_path = {r}/dovecot.log
info_log_path = {r}/dovecot.log
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cert = <{r}/tls/server.pem
ssl_key = <{r}/tls/server.key
ssl_ca = <{r}/tls/ca.pem
ssl_verify_client_cert = yes
ssl_require_crl = no
auth_ssl_require_client_cert = yes
disable_plaintext_auth = yes
{self._auth_config()}
mail_location = maildir:{r}/mail/%u
mail_privileged_group =
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
passdb {{
  driver = passwd-file
  args = {"" if self.certificate_login else "scheme=PLAIN "}username_format=%u {r}/{self._passdb}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {r}/users
}}
"""

    @property
    def _passdb(self) -> str:
        return "users-external" if self.certificate_login else "users"

    def _auth_config(self) -> str:
        if self.certificate_login:
            # the certificate's common name overrides any login name: EXTERNAL only
            return "auth_mechanisms = external\nauth_ssl_username_from_cert = yes\nssl_cert_username_field = commonName"
        return "auth_mechanisms = plain login"

    def start(self) -> Dovecot:
        r = self.root
        for sub in ("run", "state", "mail", "tls"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        for name, src in (
            ("server.pem", self.pki.server.cert_path),
            ("server.key", self.pki.server.key_path),
            ("ca.pem", self.pki.ca_path),
        ):
            shutil.copyfile(src, r / "tls" / name)
        (r / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}:{self.uid}:{self.gid}::{r}/mail/{u}::\n" for u, p in self.users.items())
        )
        # SASL EXTERNAL: the certificate's common name is the login, no password
        (r / "users-external").write_text("".join(f"{u}:::::::nopassword\n" for u in self.users))
        (r / "dovecot.conf").write_text(self._config())
        for user in self.users:
            self.maildir(user)
        for path in [r, *r.rglob("*")]:
            self._own(path)
        cmd = [DOVECOT, "-F", "-c", str(r / "dovecot.conf")]
        if os.geteuid() == 0:
            cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *cmd]
        if shutil.which("setpriv"):
            # dovecot runs in its own session: if this process dies without stop(), it follows
            cmd = (
                ["setpriv", "--pdeathsig", "TERM", *cmd[1:]]
                if cmd[0] == "setpriv"
                else ["setpriv", "--pdeathsig", "TERM", *cmd]
            )
        self._out = open(r / "stdout.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.imaps_port, timeout=20, alive=lambda: self.proc is not None and self.proc.poll() is None)
            wait_port(self.imap_port, timeout=20)
        except Exception:
            self.stop()
            raise RuntimeError(f"dovecot did not start: {self.log()}") from None
        return self

    def log(self) -> str:
        parts = []
        for name in ("dovecot.log", "stdout.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if getattr(self, "_out", None) is not None:
            self._out.close()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- the mailbox store, as an LDA sees it ----------------------------------------------------
    def maildir(self, user: str, folder: str = "") -> Path:
        base = self.mail_root / user
        path = base / f".{folder}" if folder else base
        for sub in ("", "cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
            self._own(path / sub)
        self._own(base)
        return path

    def deliver(self, user: str, raw: bytes) -> None:
        """Maildir delivery (write in tmp/, rename into new/), owned by the mail user."""
        box = self.maildir(user)
        name = f"{int(time.time())}.M{time.time_ns() % 1_000_000}P{os.getpid()}Q{next(_counter)}.mss-test,S={len(raw)}"
        tmp = box / "tmp" / name
        tmp.write_bytes(raw)
        self._own(tmp)
        tmp.rename(box / "new" / name)

    def messages(self, user: str, folder: str = "") -> list[bytes]:
        """Every message of a folder (new and cur), oldest first."""
        box = self.maildir(user, folder)
        files = [*(box / "new").iterdir(), *(box / "cur").iterdir()]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]


@contextmanager
def dovecot(pki: DevPki, users: dict[str, str]) -> Iterator[Dovecot]:
    server = Dovecot(pki, users).start()
    try:
        yield server
    finally:
        server.stop()


# -- SMTP: the operator's relay -----------------------------------------------------------------
def _xtext_decode(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "+" and i + 2 < len(value):
            out.append(chr(int(value[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _split_dsn(arg: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Remove the DSN parameters from a MAIL/RCPT argument (aiosmtpd refuses unknown ones)."""
    kept, dsn = [], {}
    wanted = {n.upper() for n in names}
    for token in arg.split(" "):
        key, _, value = token.partition("=")
        if key.upper() in wanted and value:
            dsn[key.upper()] = value
        else:
            kept.append(token)
    return " ".join(kept), dsn


class DsnSMTP(SMTP):
    """aiosmtpd's SMTP with the DSN extension's parameters accepted and kept on the envelope
    (attributes ``dsn_mail`` and ``dsn_rcpt``)."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        arg, dsn = _split_dsn(arg or "", ("RET", "ENVID"))
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None:
            setattr(self.envelope, "dsn_mail", dsn)  # noqa: B010 (aiosmtpd's Envelope has no such field)

    async def smtp_RCPT(self, arg: str | None) -> None:
        arg, dsn = _split_dsn(arg or "", ("NOTIFY", "ORCPT"))
        envelope = self.envelope
        before = len(envelope.rcpt_tos) if envelope is not None else 0
        await super().smtp_RCPT(arg)
        envelope = self.envelope
        if envelope is not None and len(envelope.rcpt_tos) > before:
            kept: list[dict[str, str]] = getattr(envelope, "dsn_rcpt", [])
            kept.append(dsn)
            setattr(envelope, "dsn_rcpt", kept)  # noqa: B010


@dataclass
class Accepted:
    """One transaction the relay answered 250 to."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    message_id: str
    dsn_mail: dict[str, str]
    dsn_rcpt: list[dict[str, str]]
    client_cert_subject: str


class _Handler:
    def __init__(self, relay: SmtpRelay) -> None:
        self.relay = relay

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        relay = self.relay
        with relay.lock:
            if address.lower() in relay.refuse:
                code_text = relay.refuse[address.lower()]
                return code_text
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        relay = self.relay
        with relay.lock:
            if relay.fail_queue:
                return relay.fail_queue.pop(0)
        raw = envelope.original_content or envelope.content or b""
        content = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        cert = server.transport.get_extra_info("peercert") if server.transport is not None else None
        subject = ""
        if cert:
            subject = ", ".join("=".join(x) for rdn in cert.get("subject", ()) for x in rdn)
        msg = email.message_from_bytes(content, policy=policy.compat32)
        accepted = Accepted(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            content=content,
            message_id=str(msg.get("Message-ID", "")).strip(),
            dsn_mail=dict(getattr(envelope, "dsn_mail", {})),
            dsn_rcpt=list(getattr(envelope, "dsn_rcpt", [{} for _ in envelope.rcpt_tos])),
            client_cert_subject=subject,
        )
        with relay.lock:
            relay.accepted.append(accepted)
        relay.route(accepted)
        return "250 2.0.0 Ok: queued as " + f"{next(_counter):08X}"


class _Controller(Controller):
    def __init__(self, *args: Any, client_context: ssl.SSLContext, **kwargs: Any) -> None:
        self._client_context = client_context
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        return DsnSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # the stock trigger connects without a client certificate, which this server refuses
        with ExitStack() as stk:
            s = stk.enter_context(socket.create_connection((self.hostname, self.port), 1.0))
            if self.ssl_context:
                s = stk.enter_context(self._client_context.wrap_socket(s, server_hostname="localhost"))
            s.recv(1024)


class SmtpRelay:
    """The MSSanté operator's relay. ``mailboxes``: address → dovecot login of its Maildir."""

    def __init__(
        self,
        pki: DevPki,
        imap: Dovecot,
        mailboxes: dict[str, str],
        *,
        implicit_tls: bool = False,
        report: bool = True,
        port: int = 0,
        mdn_from: Iterable[str] = (),
    ) -> None:
        self.pki = pki
        self.imap = imap
        self.mailboxes = {k.lower(): v for k, v in mailboxes.items()}
        self.implicit_tls = implicit_tls
        self.report = report  # False: the relay never writes DSNs (a lost receipt)
        # recipients whose mail software answers a Disposition-Notification-To with an MDN "processed"
        self.mdn_from = {a.lower() for a in mdn_from}
        self.mdns: list[bytes] = []
        self.lock = threading.Lock()
        self.accepted: list[Accepted] = []
        self.fail_queue: list[str] = []
        self.refuse: dict[str, str] = {}
        self.delivered: dict[tuple[str, str], int] = {}  # (login, Message-ID) → copies offered
        self.dsns: list[bytes] = []
        self.port = port or free_port()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_path))
        server_ctx.load_cert_chain(str(pki.server.cert_path), str(pki.server.key_path))
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server_context = server_ctx
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "server_hostname": "mss-relay.test"}
        if implicit_tls:
            kwargs["ssl_context"] = server_ctx
        else:
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = True
        self.controller = _Controller(_Handler(self), client_context=self.client_context(), **kwargs)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_path))
        ctx.load_cert_chain(str(self.pki.client.cert_path), str(self.pki.client.key_path))
        return ctx

    def start(self) -> SmtpRelay:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    # -- controls ----------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, reply: str = "451 4.3.0 Temporary local problem, try again later") -> None:
        with self.lock:
            self.fail_queue.extend([reply] * n)

    def reject_next(self, n: int = 1, reply: str = "554 5.6.0 Message content refused by policy") -> None:
        self.fail_next(n, reply)

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 Recipient address rejected") -> None:
        with self.lock:
            self.refuse[address.lower()] = reply

    # -- delivery and reports ----------------------------------------------------------------------
    def route(self, accepted: Accepted) -> None:
        outcomes: list[tuple[str, dict[str, str], str, str, str]] = []
        for rcpt, dsn in zip(accepted.rcpt_tos, accepted.dsn_rcpt, strict=False):
            login = self.mailboxes.get(rcpt.lower())
            notify = {n.strip().upper() for n in dsn.get("NOTIFY", "FAILURE").split(",")}
            if login is None:
                if "NEVER" not in notify and "FAILURE" in notify:
                    outcomes.append((rcpt, dsn, "failed", "5.1.1", f"smtp; 550 5.1.1 <{rcpt}>: User unknown"))
                continue
            key = (login, accepted.message_id)
            with self.lock:
                seen = self.delivered.get(key, 0)
                self.delivered[key] = seen + 1
            if seen == 0:  # duplicate elimination by Message-ID, per mailbox
                self.imap.deliver(login, accepted.content)
                if rcpt.lower() in self.mdn_from:
                    self._answer_mdn(accepted.content, rcpt)
            if "SUCCESS" in notify:
                outcomes.append((rcpt, dsn, "delivered", "2.0.0", "smtp; 250 2.0.0 Delivered to mailbox"))
        sender_login = self.mailboxes.get(accepted.mail_from.lower())
        if not outcomes or not self.report or sender_login is None:
            return
        report = make_dsn(accepted, outcomes)
        with self.lock:
            self.dsns.append(report)
        self.imap.deliver(sender_login, report)

    def _answer_mdn(self, content: bytes, rcpt: str) -> None:
        """The recipient's software integrated the message: an MDN to its Disposition-Notification-To."""
        orig = email.message_from_bytes(content, policy=policy.compat32)
        if not orig.get("Disposition-Notification-To"):
            return
        mdn, to = make_mdn(
            content,
            disposition="automatic-action/MDN-sent-automatically; processed",
            final_recipient=rcpt,
            include_original=False,
        )
        login = self.mailboxes.get(to.strip("<> ").lower())
        if login is None:
            return
        with self.lock:
            self.mdns.append(mdn)
        self.imap.deliver(login, mdn)

    def accepted_with(self, message_id: str) -> list[Accepted]:
        with self.lock:
            return [a for a in self.accepted if a.message_id == message_id]

    def submit(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> None:
        """What another MSSanté client (a recipient's software) sends through this relay."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            if not self.implicit_tls:
                smtp.starttls(context=self.client_context())
            smtp.sendmail(mail_from, rcpt_tos, raw)


@contextmanager
def smtp_relay(pki: DevPki, imap: Dovecot, mailboxes: dict[str, str], **kwargs: Any) -> Iterator[SmtpRelay]:
    relay = SmtpRelay(pki, imap, mailboxes, **kwargs).start()
    try:
        yield relay
    finally:
        relay.stop()


def make_dsn(accepted: Accepted, outcomes: list[tuple[str, dict[str, str], str, str, str]]) -> bytes:
    """An RFC 3464 delivery status notification about ``accepted``."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mss-relay.test"
    report["To"] = accepted.mail_from
    report["Subject"] = "Delivery Status Notification"
    report["Date"] = format_datetime(time_now())
    report["Message-ID"] = make_msgid(domain="mss-relay.test")
    report["Auto-Submitted"] = "auto-replied"
    human = "\n".join(f"{rcpt}: {action} ({status})" for rcpt, _, action, status, _ in outcomes)
    report.attach(MIMEText("This is the mail system at mss-relay.test.\n\n" + human + "\n", "plain", "utf-8"))
    status_part = Message()
    status_part["Content-Type"] = "message/delivery-status"
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mss-relay.test"
    if "ENVID" in accepted.dsn_mail:
        per_message["Original-Envelope-Id"] = accepted.dsn_mail["ENVID"]
    per_message["Arrival-Date"] = format_datetime(time_now())
    blocks = [per_message]
    for rcpt, dsn, action, status, diagnostic in outcomes:
        block = Message()
        if "ORCPT" in dsn:
            block["Original-Recipient"] = _xtext_decode(dsn["ORCPT"])
        block["Final-Recipient"] = f"rfc822; {rcpt}"
        block["Action"] = action
        block["Status"] = status
        block["Diagnostic-Code"] = diagnostic
        blocks.append(block)
    status_part.set_payload(list[Message | str](blocks))
    report.attach(status_part)
    if accepted.dsn_mail.get("RET", "HDRS").upper() == "FULL":
        report.attach(MIMEMessage(email.message_from_bytes(accepted.content, policy=policy.compat32)))
    else:
        headers = accepted.content.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        part = MIMEBase("text", "rfc822-headers")
        part.set_payload(headers.decode("ascii", "replace"))
        report.attach(part)
    return report.as_bytes(policy=_CRLF32)


def make_mdn(
    original: bytes,
    *,
    disposition: str = "manual-action/MDN-sent-manually; displayed",
    final_recipient: str,
    include_original: bool = True,
) -> tuple[bytes, str]:
    """An RFC 8098 MDN answering ``original`` (raw), and the address it must go to."""
    orig = email.message_from_bytes(original, policy=policy.compat32)
    to = str(orig.get("Disposition-Notification-To", "")).strip()
    mdn = MIMEMultipart("report", report_type="disposition-notification")
    mdn["From"] = final_recipient
    mdn["To"] = to
    mdn["Subject"] = Header("Accusé de lecture", "utf-8").encode()
    mdn["Date"] = format_datetime(time_now())
    mdn["Message-ID"] = make_msgid(domain=final_recipient.rsplit("@", 1)[1])
    mdn["In-Reply-To"] = str(orig.get("Message-ID", ""))
    mdn["References"] = str(orig.get("Message-ID", ""))
    mdn.attach(MIMEText("Le message a été affiché par son destinataire.\n", "plain", "utf-8"))
    fields = Message()
    fields["Reporting-UA"] = "mss-test-client; dui-gateway tests"
    fields["Original-Recipient"] = f"rfc822;{final_recipient}"
    fields["Final-Recipient"] = f"rfc822;{final_recipient}"
    fields["Original-Message-ID"] = str(orig.get("Message-ID", ""))
    fields["Disposition"] = disposition
    part = MIMEMessage(fields, "disposition-notification")
    mdn.attach(part)
    if include_original:
        mdn.attach(MIMEMessage(orig))
    return mdn.as_bytes(policy=_CRLF32), to


def time_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def plain_mail(
    *, sender: str, to: str, subject: str, body: str, attachments: Iterable[tuple[str, str, bytes]] = ()
) -> bytes:
    """An ordinary message (a DAC answering), built with the email package."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
    msg.set_content(body)
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=policy.SMTP)
