"""Report keys and signatures beyond the happy path (issue 11): key files only their owner may
read, `report keygen` / `report public-key`, no key material in any message, old v1 HMAC
reports that still verify and say HMAC, CSV cells that a spreadsheet cannot run, and the cap
on a report's period."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import stat

import pytest

from cloudmirror.errors import Unavailable
from cloudmirror.reports import ReportError, ReportKeyError
from cloudmirror.reports.keys import (
    HMAC_KEY_ENV,
    HMAC_KEY_FILE_ENV,
    KEY_ENV,
    KEY_FILE_ENV,
    generate_key_file,
    load_public_keys,
    load_signing_key,
)
from cloudmirror.reports.render import FORMULA_STARTS, read_csv_sections
from cloudmirror.reports.signing import _envelope_bytes, canonical_data, sha256_hex
from cloudmirror.services.rpo import build_report, report_data, verify_report
from tests.unit import test_reports
from tests.unit.test_reports import report
from tests.unit.test_rpo import T0, A, B, Writer

cfg, key, cli = test_reports.cfg, test_reports.key, test_reports.cli  # the same fixtures as test_reports

SECRET = "v1-hmac-secret-of-the-old-days"


# ------------------------------------------------------------------ key files
def test_a_key_file_readable_by_group_or_others_is_refused_in_one_line(cfg, ledger, key, tmp_path):
    path = tmp_path / "report-signing.pem"
    pem = path.read_text()
    body = pem.splitlines()[1]  # the base64 of the private key
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(path, mode)
        with pytest.raises(ReportKeyError) as e:
            load_signing_key(cfg.ledger)
        msg = str(e.value)
        assert msg == (f"refusing the report signing key file {path}: mode {mode:04o} lets group or others access "
                       f"it; run: chmod 600 {path}")
        with pytest.raises(Unavailable) as u:  # signing a report says the same, as a 503 / CLI error
            build_report(cfg, ledger, mirror="m", since=T0, until=T0 + 60, fmt="json", now=T0 + 60)
        assert "chmod 600" in u.value.message and body not in u.value.message
    os.chmod(path, 0o600)
    assert load_signing_key(cfg.ledger).id == key.id


def test_no_key_material_in_any_message(cfg, tmp_path, monkeypatch):
    real = generate_key_file(tmp_path / "real.pem")
    pem = (tmp_path / "real.pem").read_text()
    garbled = pem.replace(pem.splitlines()[1][:8], "AAAAAAAA")
    for bad in (garbled, pem[:-40], "not a pem at all " + pem.splitlines()[1]):
        monkeypatch.setenv(KEY_ENV, bad)
        with pytest.raises(ReportKeyError) as e:
            load_signing_key()
        msg = str(e.value)
        assert msg.startswith(f"env {KEY_ENV} does not hold an unencrypted PEM Ed25519 private key")
        assert pem.splitlines()[1][10:30] not in msg and "\n" not in msg
    monkeypatch.setenv(KEY_ENV, pem)
    k = load_signing_key()
    assert k.id == real.id and pem.splitlines()[1] not in repr(k) and "private" not in repr(k).lower()
    # a private key given as the public key is refused without echoing it
    with pytest.raises(ReportKeyError, match="holds a private key: verifying needs only the public key") as e:
        load_public_keys(tmp_path / "real.pem")
    assert pem.splitlines()[1] not in str(e.value)


def test_keygen_writes_a_private_file_and_never_overwrites(cli, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cloudmirror.cli import app

    def keygen(path):
        return CliRunner().invoke(app, ["report", "keygen", "-o", str(path)])

    path = tmp_path / "deploy.pem"
    res = keygen(path)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    k = load_signing_key()
    assert f"key id {k.id}" in res.output
    before = path.read_bytes()
    res = keygen(path)
    assert res.exit_code == 2 and "refusing to overwrite" in res.output and res.output.count("\n") == 1
    assert path.read_bytes() == before
    res = cli("report", "public-key")  # stdout: the PEM, and nothing private
    assert res.exit_code == 0 and res.output == k.public.pem() and "PRIVATE" not in res.output
    assert [p.id for p in load_public_keys(_write(tmp_path / "p.pem", res.output))] == [k.id]


def _write(path, text):
    path.write_text(text)
    return path


def test_rotation_old_public_keys_verify_old_reports(cfg, ledger, key, tmp_path, cli, monkeypatch):
    w = Writer(ledger)
    w.put("k", T0 + 1, {A: T0 + 2, B: T0 + 2})
    w.flush()
    old_report = tmp_path / "old.csv"
    old_report.write_bytes(report(cfg, ledger, "csv"))
    keyring = _write(tmp_path / "keys.pem", key.public.pem())
    new = generate_key_file(tmp_path / "new.pem")  # rotate: the deployment now signs with `new`
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "new.pem"))
    new_report = tmp_path / "new.csv"
    new_report.write_bytes(report(cfg, ledger, "csv"))
    res = cli("report", "verify", str(old_report))
    assert res.exit_code == 1 and f"signed by key {key.id}, not by the given public key ({new.id})" in res.output
    _write(keyring, key.public.pem() + new.public.pem())  # old and new public keys, concatenated
    for f in (old_report, new_report):
        res = cli("report", "verify", str(f), "--public-key", str(keyring))
        assert res.exit_code == 0 and "Ed25519" in res.output, res.output


# ------------------------------------------------------------------ old v1 (HMAC) reports
def v1_files(data: dict, secret: bytes, csv_body: bytes, pdf_body: bytes) -> dict[str, bytes]:
    """Reports exactly as cloudmirror wrote them before Ed25519 (schema 1, hmac-sha256)."""
    kid = hashlib.sha256(b"cloudmirror report key id\0" + secret).hexdigest()[:16]

    def sig(fmt: str, digest: str) -> str:
        return hmac.new(secret, f"cloudmirror-report-v1\n{fmt}\n{kid}\n{digest}".encode(), hashlib.sha256).hexdigest()

    d = sha256_hex(canonical_data(data))
    out = {"json": _envelope_bytes(dict(format="cloudmirror-rpo-report", schema=1, data=data, digest=f"sha256:{d}",
                                        key_id=kid, signature=f"hmac-sha256:{sig('json', d)}"))}
    d = sha256_hex(csv_body)
    out["csv"] = csv_body + (f"# cloudmirror-signature: v1\n# digest: sha256:{d}\n# key_id: {kid}\n"
                             f"# signature: hmac-sha256:{sig('csv', d)}\n").encode()
    d = sha256_hex(pdf_body)
    out["pdf"] = pdf_body + (f"%cloudmirror-signature v1 digest=sha256:{d} key_id={kid} "
                             f"signature=hmac-sha256:{sig('pdf', d)}\n").encode()
    return out


def test_old_hmac_reports_still_verify_with_the_old_key_and_say_hmac(cfg, ledger, key, tmp_path, cli, monkeypatch):
    from cloudmirror.reports.pdf import render_pdf
    from cloudmirror.reports.render import render_csv

    w = Writer(ledger)
    w.put("k", T0 + 1, {A: T0 + 2, B: T0 + 2})
    w.flush()
    data = report_data(cfg, ledger, mirror="m", since=T0, until=T0 + 60, now=T0 + 60)
    files = v1_files(data, SECRET.encode(), render_csv(data), render_pdf(data, key_id="0" * 16))
    for blob in files.values():  # no old key anywhere: refused, and the reason says what is missing
        ok, reason = verify_report(blob, cfg, public_keys=[key.public])
        assert not ok and reason.startswith("an old HMAC (v1) report: no old HMAC report key"), reason
    old_key = _write(tmp_path / "old-hmac.key", SECRET + "\n")
    os.chmod(old_key, 0o600)
    monkeypatch.setenv(HMAC_KEY_FILE_ENV, str(old_key))
    for fmt, blob in files.items():
        ok, reason = verify_report(blob, cfg, public_keys=[key.public])
        assert ok and reason.startswith(f"valid {fmt} report, HMAC-SHA256 (v1)"), reason
        assert "not third-party verifiable" in reason
        bad = bytearray(blob)
        bad[len(bad) // 2] ^= 0x01
        assert not verify_report(bytes(bad), cfg, public_keys=[key.public])[0]
        path = _write(tmp_path / f"v1.{fmt}", "")
        path.write_bytes(blob)
        res = cli("report", "verify", str(path), "--public-key", str(_write(tmp_path / "p.pem", key.public.pem())))
        assert res.exit_code == 0 and "HMAC-SHA256 (v1)" in res.output, res.output
    os.chmod(old_key, 0o644)  # the old secret is a secret too
    ok, reason = verify_report(files["json"], cfg)
    assert not ok and "chmod 600" in reason
    monkeypatch.setenv(HMAC_KEY_ENV, "another secret")  # the env var wins, and it is not the one that signed
    ok, reason = verify_report(files["csv"], cfg)
    assert not ok and "an HMAC (v1) report signed by key" in reason
    # a v2 mark on a v1 signature (or the reverse) is malformed, not a weaker check
    assert not verify_report(files["csv"].replace(b"signature: v1", b"signature: v2"), cfg)[0]


# ------------------------------------------------------------------ CSV cells a spreadsheet would run
def test_csv_cells_that_start_a_formula_are_escaped(cfg, ledger, key):
    keys = ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)", "\tTAB", "\rCR", "plain",
            "a\r=HYPERLINK(1)"]  # a CR inside a cell is quoted: no new row that starts with a formula
    w = Writer(ledger)
    for i, k in enumerate(keys):
        w.put(k, T0 + 1 + i, {A: T0 + 40, B: T0 + 2 + i})  # 30+ s late on A: every key is a breach object
    w.flush()
    blob = build_report(cfg, ledger, mirror="m", since=T0, until=T0 + 60, fmt="csv", now=T0 + 60)
    assert verify_report(blob, cfg)[0]
    cells = [c for row in csv.reader(io.StringIO(blob.decode(), newline="")) for c in row]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    shown = sorted(r["key"] for r in read_csv_sections(blob)["breach_objects"])
    assert shown == sorted(k if k[0] in "pa" else "'" + k for k in keys)
    assert b'"a\r=HYPERLINK(1)"' in blob
    assert "'=HYPERLINK(\"http://x\",\"y\")" in shown
    data = json.loads(build_report(cfg, ledger, mirror="m", since=T0, until=T0 + 60, fmt="json", now=T0 + 60))
    assert sorted(o["key"] for o in data["data"]["breaches"][0]["objects"]) == sorted(keys)  # JSON: the data as is


# ------------------------------------------------------------------ the period cap
def test_a_period_longer_than_the_cap_is_refused(cfg, ledger, key, cli):
    with pytest.raises(ReportError, match=r"the period \(401d\) is longer than the limit "
                                          r"api.max_report_period \(400d\)"):
        build_report(cfg, ledger, mirror="m", since=T0, until=T0 + 401 * 86400, fmt="json")
    assert build_report(cfg, ledger, mirror="m", since=T0, until=T0 + 400 * 86400, fmt="json", now=T0)
    res = cli("report", "m", "--since", "2020-01-01", "--until", "2024-01-01")
    assert res.exit_code == 2 and "api.max_report_period (400d)" in res.output and res.output.count("\n") == 1
    res = cli("report", "m", "-f", "json")  # no --since: the last 24 hours, within the cap
    assert res.exit_code == 0 and json.loads(res.output)["data"]["period"]["seconds"] == 86400.0
