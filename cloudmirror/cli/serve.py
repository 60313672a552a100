"""`cloudmirror run | worker | api`: the composition root. It builds the service (intake,
workers, reconcile loops) and, for the API role, checks the TLS certificate and key (when
`api.tls_cert`/`api.tls_key` are set), binds the socket first and serves the FastAPI app
beside the service (HTTPS with them, plain HTTP without), sharing its stores and ledger. The
app comes in through the `cloudmirror.api` entry point (api/serve.py), not an import."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys
from typing import Annotated

import typer

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, config_or_exit, exit_on_errors, fail
from cloudmirror.config import ApiSettings, Config

VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v")]


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(worker)
    app.command()(api)


def _logging(verbose: bool) -> None:
    from cloudmirror.redact import install_log_redaction

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}')
    install_log_redaction()  # every record redacted, and a RedactingFilter on the handler set up here


def bind_api(listen: str) -> socket.socket:
    """Bind the API's listening socket before anything else starts; exits 2 when it cannot."""
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as e:
        sock.close()
        raise fail(f"cannot listen on {listen} (api.listen): {e.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def tls_options(settings: ApiSettings) -> dict[str, str]:
    """uvicorn's TLS options for api.tls_cert/api.tls_key ({} without them: plain HTTP). Exits 2
    with one line when a file cannot be read, the certificate is not PEM, or the key is not the
    certificate's unencrypted PEM private key -- at start, before anything listens."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert or not key:
        return {}
    for field, path in (("api.tls_cert", cert), ("api.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise fail(f"cannot read {field} {path}: {e.strerror}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise fail(f"api.tls_cert {cert} holds no PEM certificate") from None
    try:  # an encrypted key would make OpenSSL prompt for its password: refuse it instead
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise fail(f"api.tls_key {key} is not the private key of api.tls_cert {cert}") from None
        raise fail(f"api.tls_key {key} is not an unencrypted PEM private key for api.tls_cert {cert}") from None
    return {"ssl_certfile": cert, "ssl_keyfile": key}


def api_frontend():
    """`api_beside(sock, tls)` of the REST API, found through the `cloudmirror.api` entry point
    (api/serve.py): the API plugs into the service; the library does not import it."""
    from importlib.metadata import entry_points

    found = entry_points(group="cloudmirror.api", name="beside")
    if not found:
        raise fail("the REST API is not installed here (pip install cloudmirror, or run with --no-api)")
    return next(iter(found)).load()


def serve(config: Config, *, intake: bool, workers: bool, api: bool) -> None:
    """Run the chosen roles in this process until SIGTERM/SIGINT (in-flight copies drain)."""
    from cloudmirror.services.runtime import Service, upgrade_db

    tls = tls_options(config.api) if api else {}
    api_beside = api_frontend() if api else None
    sock = bind_api(config.api.listen) if api else None

    async def main() -> None:
        svc = Service(config)
        svc.install_signal_handlers()
        try:
            await svc.run(intake=intake, workers=workers, beside=api_beside(sock, tls) if api_beside else None)
        finally:
            await svc.close()

    with exit_on_errors():
        upgrade_db(config)
        asyncio.run(main())


def run(config: ConfigOpt = DEFAULT_CONFIG,
        no_api: Annotated[bool, typer.Option(help="Do not serve the REST API.")] = False,
        verbose: VerboseOpt = False) -> None:
    """Intake + workers + API in one process (SIGTERM drains in-flight copies, then exits)."""
    _logging(verbose)
    serve(config_or_exit(config), intake=True, workers=True, api=not no_api)


def worker(config: ConfigOpt = DEFAULT_CONFIG,
           no_intake: Annotated[bool, typer.Option(help="Only copy; do not read event feeds.")] = False,
           verbose: VerboseOpt = False) -> None:
    """Intake and workers without the API; start several on PostgreSQL to share the work."""
    _logging(verbose)
    serve(config_or_exit(config), intake=not no_intake, workers=True, api=False)


def api(config: ConfigOpt = DEFAULT_CONFIG, verbose: VerboseOpt = False) -> None:
    """Serve only the REST API."""
    _logging(verbose)
    serve(config_or_exit(config), intake=False, workers=False, api=True)
