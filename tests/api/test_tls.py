"""`api: {tls_cert, tls_key}`: `cloudmirror api` serves HTTPS (uvicorn), with a certificate made
here; a certificate or key it cannot use is a one-line error at start."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from cloudmirror.local.procs import free_port

CLI = str(Path(sys.executable).with_name("cloudmirror"))


def self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudmirror test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def write_config(path: Path, ledger_url: str, port: int, cert: Path | str, key: Path | str) -> Path:
    path.write_text(yaml.safe_dump({"ledger": ledger_url, "mirrors": [],
                                    "api": {"listen": f"127.0.0.1:{port}", "tls_cert": str(cert),
                                            "tls_key": str(key)}}))
    return path


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)  # TLS does not depend on the ledger
def test_the_api_serves_https_with_the_configured_certificate(tmp_path, ledger_url):
    cert, key = self_signed(tmp_path)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", ledger_url, port, cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    proc = subprocess.Popen([CLI, "api", "-c", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 60
        while True:  # poll with a deadline: the socket listens before the server answers
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusting, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not answer over HTTPS"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.headers["x-content-type-options"] == "nosniff"
        assert httpx.get(f"https://localhost:{port}/healthz", verify=trusting, timeout=5).status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client that does not trust it
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ssl.create_default_context(), timeout=5)
        assert proc.poll() is None  # none of it stopped the server
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _start(args: list[str]):
    from cloudmirror.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_a_certificate_or_key_it_cannot_use_is_a_one_line_error_at_start(tmp_path, sqlite_url):
    cert, key = self_signed(tmp_path)
    other_cert, other_key = self_signed(tmp_path, "other")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    missing = tmp_path / "missing.pem"
    port = free_port()
    cases = [
        (missing, key, f"cannot read api.tls_cert {missing}: No such file or directory"),
        (cert, missing, f"cannot read api.tls_key {missing}: No such file or directory"),
        (cert, tmp_path, f"cannot read api.tls_key {tmp_path}: Is a directory"),
        (key, key, f"api.tls_cert {key} holds no PEM certificate"),
        (cert, other_key, f"api.tls_key {other_key} is not the private key of api.tls_cert {cert}"),
        (cert, encrypted, f"api.tls_key {encrypted} is not an unencrypted PEM private key for api.tls_cert {cert}"),
        (cert, other_cert, f"api.tls_key {other_cert} is not an unencrypted PEM private key for api.tls_cert {cert}"),
    ]
    for command in (["api"], ["run"]):
        for cert_path, key_path, message in cases:
            cfg = write_config(tmp_path / "c.yaml", sqlite_url, port, cert_path, key_path)
            r = _start([*command, "-c", str(cfg)])
            assert r.exit_code == 2, (command, message, r.output)
            assert r.stderr.strip().splitlines() == [f"error: {message}"], r.stderr
    # it said so before listening: the port is still free
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
