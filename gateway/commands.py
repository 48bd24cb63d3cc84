"""Process commands of ``dui-gateway``: serve, worker, migrate, demo, sandbox, replay.

Each command reads the settings once (environment, prefix ``DUI_GATEWAY_``), configures the
JSON logs, and runs one kind of process:

- ``serve``: the API under uvicorn (plus in-process workers when ``embedded_worker`` is on);
- ``worker``: delivery workers only (PostgreSQL scale-out, or a separate SQLite worker);
- ``migrate``: bring the database to the newest schema;
- ``sandbox``: the sandbox HTTP receiver (a stand-in peer for webhook destinations);
  ``sandbox dmp``: the DMP simulator (mutual TLS); ``sandbox dmp-pki``: its dev PKI;
  ``sandbox mail``: the MSSanté mail sandbox (dev PKI, SMTP relay, dovecot);
  ``sandbox sdo``: the SI-SdO (ViaTrajectoire PH) simulator;
- ``demo``: everything at once on SQLite, with demo documents (see :mod:`gateway.demo`);
- ``replay``: send a delivery again (audited).
"""

from __future__ import annotations

import inspect
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from gateway.settings import Settings

__all__ = ["demo", "migrate", "replay", "sandbox", "sandbox_app", "serve", "sources", "worker"]


def _settings() -> Settings:
    from gateway.logging import configure_logging

    try:
        settings = Settings()
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def migrate() -> None:
    """Bring the database (DUI_GATEWAY_DATABASE_URL) to the newest schema."""
    from gateway.logging import get_logger
    from gateway.storage.migrate import current_revision, upgrade

    settings = _settings()
    upgrade(settings.database_url)
    get_logger("gateway.commands").info("database_migrated", revision=current_revision(settings.database_url))


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="Migrate the database first")] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes sharing the port (uvicorn workers): for PostgreSQL; SQLite takes one writer at a time",
        ),
    ] = 1,
) -> None:
    """Run the API under uvicorn (with in-process workers when DUI_GATEWAY_EMBEDDED_WORKER is on)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.runtime import Runtime
    from gateway.storage.migrate import upgrade

    settings = _settings()
    if migrate_first:
        upgrade(settings.database_url)
    if workers > 1:
        # Each process builds its own runtime from the environment (gateway.app:create_app), with
        # its own connection pool and, when embedded_worker is on, its own delivery workers (they
        # share the outbox through SKIP LOCKED on PostgreSQL). The parent only supervises them.
        if settings.database_url.startswith("sqlite"):
            typer.echo(
                "warning: several API processes on SQLite serialise on its single writer; use PostgreSQL",
                err=True,
            )
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        return
    if settings.embedded_worker:
        from gateway.memory import bound_native_memory

        bound_native_memory()  # the embedded workers: see gateway/memory.py
    runtime = Runtime.from_settings(settings)
    try:
        app = create_app(runtime)  # its lifespan starts/drains the embedded workers (embedded_worker=true)
        # log_config=None: uvicorn's loggers go through the JSON handler set up by configure_logging.
        # access_log=False: its access line prints the query string (filters name persons); the
        # gateway's own access line (gateway.api.access) logs the route template instead.
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10)
    finally:
        runtime.close()


def worker(
    health_port: Annotated[
        int, typer.Option(help="Serve /healthz, /readyz and /metrics on this port (0: off)", min=0, max=65535)
    ] = 0,
    health_host: Annotated[str, typer.Option(help="Interface for --health-port")] = "127.0.0.1",
) -> None:
    """Run delivery workers only, until SIGTERM/SIGINT (they finish the attempt in progress)."""
    from gateway.memory import bound_native_memory
    from gateway.runtime import Runtime
    from gateway.worker import run_worker_process

    settings = _settings()
    bound_native_memory()  # before the worker threads start: see gateway/memory.py
    runtime = Runtime.from_settings(settings)
    health = None
    try:
        if health_port:
            from gateway.worker_health import start_health_server

            health = start_health_server(runtime, health_host, health_port)
        run_worker_process(runtime)
    finally:
        if health is not None:
            health.shutdown()
            health.server_close()
        runtime.close()


def sources() -> None:
    """Run only the routing file's inbound sources (listeners, pollers) until SIGTERM/SIGINT.

    For a listener that binds a port (MLLP): run it in one process, and the workers with
    DUI_GATEWAY_RUN_SOURCES=false. What the sources store is interpreted by the workers.
    """
    import threading

    from gateway.inbound import SourceRunner
    from gateway.logging import get_logger
    from gateway.runtime import Runtime

    settings = _settings()
    runtime = Runtime.from_settings(settings)
    log = get_logger("gateway.commands")
    if not runtime.sources:
        typer.echo("no inbound source in the routing file", err=True)
        runtime.close()
        raise typer.Exit(1)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    runner = SourceRunner(runtime)
    try:
        runner.start()
        log.info("sources_started", sources=sorted(runtime.sources))
        while not stop.wait(1.0):
            pass
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runtime.close()


def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on (keep it on loopback)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed at start)")] = 8787,
    db: Annotated[Path, typer.Option(help="SQLite file recording what was received")] = Path("var/sandbox.db"),
    verbose: Annotated[bool, typer.Option(help="Log one line per request (method, path, status)")] = True,
    webhook_secret: Annotated[
        list[str] | None,
        typer.Option(
            help="Verify webhook signatures with this whsec_ secret, given as env:NAME or file:PATH "
            "(repeatable, newest first; default: $DUI_GATEWAY_SANDBOX_WEBHOOK_SECRETS)"
        ),
    ] = None,
    receipt_url: Annotated[
        str | None, typer.Option(help="Where 'receipt later' receipts are POSTed (the gateway's inbound URL)")
    ] = None,
) -> None:
    """Run the sandbox HTTP receiver: records deliveries, dedups by Idempotency-Key, injects faults."""
    import json

    from connectors.sandbox import SandboxReceiver, sandbox_secrets

    try:
        secrets = sandbox_secrets(webhook_secret or ())
        receiver = SandboxReceiver(
            db_path=db, host=host, port=port, quiet=not verbose, webhook_secrets=secrets, receipt_url=receipt_url
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    listening = {"event": "sandbox_listening", "url": receiver.url, "db": str(db), "verifies_signatures": bool(secrets)}
    print(json.dumps(listening), flush=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


sandbox_app = typer.Typer(help="Local simulators of external systems (real servers on loopback).")


def _sandbox_default(ctx: typer.Context, **options: Any) -> None:
    """Without a sub-command: the sandbox HTTP receiver (webhook peer), as before."""
    if ctx.invoked_subcommand is None:
        sandbox(**options)


# the group's own options are exactly ``sandbox``'s, whatever it grows: same signature, plus ctx
_receiver_signature = inspect.signature(sandbox)
_sandbox_default.__signature__ = _receiver_signature.replace(  # type: ignore[attr-defined]
    parameters=[
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="typer.Context"),
        *_receiver_signature.parameters.values(),
    ]
)
_sandbox_default.__annotations__ = {"ctx": "typer.Context", **sandbox.__annotations__}
sandbox_app.callback(invoke_without_command=True)(_sandbox_default)


@sandbox_app.command("dmp")
def sandbox_dmp(
    host: Annotated[str, typer.Option(help="Interface to listen on (keep it on loopback)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed at start)")] = 8443,
    db: Annotated[Path, typer.Option(help="SQLite file holding the simulated DMPs")] = Path("var/dmp-sandbox.db"),
    ca: Annotated[Path | None, typer.Option(help="CA certificate(s) client certificates must chain to")] = None,
    cert: Annotated[Path | None, typer.Option(help="The simulator's TLS server certificate (PEM)")] = None,
    key: Annotated[Path | None, typer.Option(help="Its private key (PEM)")] = None,
    pki_dir: Annotated[Path, typer.Option(help="Without --ca/--cert/--key: dev PKI folder (created)")] = Path(
        "var/dmp-pki"
    ),
    finess: Annotated[str, typer.Option(help="FINESS of the dev ESSMS certificate")] = "750803447",
    auto_open: Annotated[bool, typer.Option(help="Open a DMP for an unknown INS on first use")] = True,
    accept_test_ins: Annotated[bool, typer.Option(help="Accept test INS OIDs (…4.10 / …4.11)")] = True,
    verbose: Annotated[bool, typer.Option(help="Log one line per request")] = True,
) -> None:
    """Run the DMP simulator (ITI-41, ITI-18, ITI-65 over mutual TLS) until SIGTERM/SIGINT."""
    from connectors.sandbox.dmp.run import serve

    serve(
        host=host,
        port=port,
        db=db,
        ca=ca,
        cert=cert,
        key=key,
        pki_dir=pki_dir,
        finess=finess,
        auto_open=auto_open,
        accept_test_ins=accept_test_ins,
        verbose=verbose,
    )


@sandbox_app.command("mail")
def sandbox_mail(
    folder: Annotated[Path, typer.Option("--dir", help="PKI, dovecot configuration and mailboxes")] = Path("var/mail"),
    smtp_port: Annotated[int, typer.Option(help="SMTP relay port, STARTTLS + client certificate (0: free)")] = 2587,
    imaps_port: Annotated[int, typer.Option(help="IMAPS port (0: free)")] = 2993,
    essms: Annotated[
        str, typer.Option(help="The ESSMS's mailbox: its client certificate's CN and IMAP login")
    ] = "ehpad-tilleuls@ehpad-tilleuls.mssante.fr",
    mailbox: Annotated[
        list[str] | None, typer.Option(help="Another mailbox (repeatable; default: the demo's emergency dept. and DAC)")
    ] = None,
    mdn_from: Annotated[
        list[str] | None, typer.Option(help="A mailbox whose software answers with an MDN 'processed' (repeatable)")
    ] = None,
) -> None:
    """Run the MSSanté mail sandbox: dev PKI, SMTP relay (client-certificate TLS, DSN), dovecot (IMAPS)."""
    import json

    from connectors.sandbox.mail import MailSandbox, MailSandboxUnavailable
    from gateway.demo import DEMO_MAILBOXES

    boxes = mailbox or list(DEMO_MAILBOXES.values())
    server = MailSandbox(
        folder, boxes, essms=essms, smtp_port=smtp_port, imaps_port=imaps_port, mdn_from=mdn_from or []
    )
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # before dovecot starts: never orphan it
    try:
        server.start()
        print(json.dumps({"event": "mail_sandbox_listening", **server.info()}), flush=True)
        signal.pause()
    except MailSandboxUnavailable as exc:
        typer.echo(f"mail sandbox unavailable: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        # a second signal (``timeout`` signals the child, then its group) must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()


@sandbox_app.command("dmp-pki")
def sandbox_dmp_pki(
    folder: Annotated[Path, typer.Option("--dir", help="Folder to write the dev PKI into")] = Path("var/dmp-pki"),
    finess: Annotated[str, typer.Option(help="FINESS of the ESSMS client certificate")] = "750803447",
) -> None:
    """Create a dev CA, the DMP simulator's server certificate and an ESSMS certificate (not IGC-Santé)."""
    import json

    from connectors.sandbox.dmp import create_dev_pki

    pki = create_dev_pki(folder, finess=finess)
    typer.echo(
        json.dumps(
            {
                "ca": str(pki.ca),
                "server_cert": str(pki.server_cert),
                "server_key": str(pki.server_key),
                "client_cert": str(pki.client_cert),
                "client_key": str(pki.client_key),
            }
        )
    )


@sandbox_app.command("sdo")
def sandbox_sdo(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port, printed at start)")] = 8443,
    essms: Annotated[list[str] | None, typer.Option(help="FINESS of an ESSMS to enrol (repeatable)")] = None,
    state_dir: Annotated[
        Path, typer.Option(help="Where the CA, the ESSMS certificates, keys and OAuth secrets are written")
    ] = Path("var/sdo-sandbox"),
    auth: Annotated[str, typer.Option(help="oauth, mtls or either")] = "either",
    decision: Annotated[
        list[str] | None, typer.Option(help="Publish a decision at start: FINESS:idDecision (repeatable)")
    ] = None,
) -> None:
    """Run the SI-SdO (ViaTrajectoire PH) simulator: HTTPS FHIR on loopback, OAuth2 and client certificates."""
    import json
    import threading

    from connectors.sandbox.sdo import start_sdo_sandbox

    try:
        box = start_sdo_sandbox(essms or ["759900004"], port=port, auth=auth, state_dir=state_dir, quiet=False)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    published = []
    for item in decision or []:
        finess, _, id_decision = item.partition(":")
        published.append(box.simulator.publish_decision(finess=finess, id_decision=id_decision or "DEMO-1"))
    listening = {
        "event": "sdo_sandbox_listening",
        "base_url": box.base_url,
        "token_url": box.token_url,
        "ca_file": str(box.ca_file),
        "control": f"{box.simulator.url}/_control",
        "essms": box.write_credentials(state_dir),
        "published": published,
    }
    print(json.dumps(listening), flush=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        box.stop()


@sandbox_app.command("mllp")
def sandbox_mllp(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port, printed at start)")] = 2576,
    answer: Annotated[str, typer.Option(help="AA (delivered) or CA (accepted, application ACK later)")] = "AA",
    ack_to: Annotated[
        str | None, typer.Option(help="HOST:PORT of the gateway's mllp source, for the application ACKs (CA)")
    ] = None,
) -> None:
    """Run an MLLP peer (a PFI receiving MDM documents): it acknowledges, and with CA sends application ACKs later."""
    import json
    import threading

    from connectors.sandbox.mllp import MllpPeer

    if answer not in ("AA", "CA"):
        raise typer.BadParameter("--answer is AA or CA")
    target = None
    if ack_to:
        host, _, ack_port = ack_to.rpartition(":")
        target = (host or "127.0.0.1", int(ack_port))
    peer = MllpPeer(port=port, ack_to=target, default_answer=answer)
    peer.start()
    print(json.dumps({"event": "mllp_sandbox_listening", "port": peer.address[1], "answer": answer}), flush=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()


def replay(
    entity_id: Annotated[str, typer.Argument(help="The submission to send again (or a delivery with --delivery)")],
    delivery: Annotated[
        bool, typer.Option("--delivery", help="ENTITY_ID is a dead-lettered delivery to retry")
    ] = False,
    actor: Annotated[str, typer.Option(help="Who asks (recorded in the audit trail)")] = "cli",
) -> None:
    """Send a submission again to its destinations, or retry one dead-lettered delivery; audited."""
    from gateway.errors import GatewayError
    from gateway.runtime import Runtime
    from gateway.services.operations import replay_submission, retry_delivery
    from gateway.storage.db import session_scope

    settings = _settings()
    runtime = Runtime.from_settings(settings)
    try:
        with session_scope(runtime.session_factory) as session:
            if delivery:
                retry_delivery(session, delivery_id=entity_id, actor=f"user:{actor}", tenant_id=None)
            else:
                replay_submission(session, submission_id=entity_id, actor=f"user:{actor}", tenant_id=None)
    except GatewayError as exc:
        typer.echo(f"replay refused: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        runtime.close()
    typer.echo(f"{'delivery' if delivery else 'submission'} {entity_id} scheduled to be sent again")


def demo(
    host: Annotated[str, typer.Option(help="Interface the API listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port (0: a free port)")] = 8000,
    sandbox_port: Annotated[int, typer.Option(help="Sandbox receiver port (0: a free port)")] = 8787,
    var_dir: Annotated[Path, typer.Option(help="Where the SQLite databases and routing file go")] = Path("var"),
    exit_after_demo: Annotated[
        bool,
        typer.Option("--exit-after-demo", "--no-block", help="Stop once the demo documents are delivered"),
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --exit-after-demo: seconds to wait for deliveries")] = 120.0,
    mail: Annotated[
        bool, typer.Option("--mail/--no-mail", help="Run the MSSanté part (mail sandbox: relay + dovecot)")
    ] = True,
) -> None:
    """Run the whole gateway on SQLite with sandbox destinations and post demo documents."""
    from gateway.demo import run_demo

    code = run_demo(
        host=host,
        port=port,
        sandbox_port=sandbox_port,
        var_dir=var_dir,
        exit_after_demo=exit_after_demo,
        timeout=timeout,
        mail=mail,
    )
    if code:
        sys.exit(code)
