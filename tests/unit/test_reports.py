"""Compliance RPO reports from synthetic ledger rows (SQLite and PostgreSQL): the figures,
the three formats telling the same numbers, signatures that verify and that fail after any
one byte is changed, the signing key, and the `report` command line."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
import typer
from pypdf import PdfReader
from typer.testing import CliRunner

from cloudmirror.cli.report import register
from cloudmirror.config import validate_config
from cloudmirror.errors import NotFoundError
from cloudmirror.reports import ReportError, ReportKeyError
from cloudmirror.reports.data import iso
from cloudmirror.reports.keys import HMAC_KEY_ENV, HMAC_KEY_FILE_ENV, KEY_ENV, KEY_FILE_ENV, generate_key_file
from cloudmirror.reports.keys import load_signing_key as load_key
from cloudmirror.reports.pdf import SUMMARY_LABELS
from cloudmirror.reports.pdf import text as pdf_cell
from cloudmirror.reports.render import cell as csv_cell
from cloudmirror.reports.render import data_digest, flatten, read_csv_sections
from cloudmirror.services.rpo import build_report, report_data, verify_report
from tests.unit.test_rpo import T0, A, B, Writer, outage_workload

FORMATS = ("json", "csv", "pdf")


@pytest.fixture
def key(tmp_path, monkeypatch):
    """Every test signs with a key file of its own (no old HMAC key); nothing is written to
    ~/.config."""
    for var in (KEY_ENV, HMAC_KEY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "report-signing.pem"))
    monkeypatch.setenv(HMAC_KEY_FILE_ENV, str(tmp_path / "absent-hmac.key"))
    return generate_key_file(tmp_path / "report-signing.pem")


@pytest.fixture
def cfg(ledger_url):
    return validate_config({"ledger": ledger_url, "mirrors": [
        {"name": "m", "source": "memory://rpo-src", "targets": [A, B], "rpo_objective": "10s"},
        {"name": "n", "source": "memory://rpo-src2", "targets": ["memory://rpo-c"], "rpo_objective": "1m"}],
        "groups": [{"name": "g", "mirrors": ["m", "n"]}]})


@pytest.fixture
def outage(ledger):
    """A down from T0+30 to T0+90.2 (writes every 5 s), B always on time."""
    outage_workload(Writer(ledger))
    return ledger


def report(cfg, ledger, fmt, **kw):
    kw = {"mirror": "m", "since": T0, "until": T0 + 120, "now": T0 + 200, **kw}
    return build_report(cfg, ledger, fmt=fmt, **kw)


# ------------------------------------------------------------------ reading the formats back
def pdf_lines(blob: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(blob))
    return [ln.strip() for page in reader.pages for ln in page.extract_text().splitlines() if ln.strip()]


def value_after(lines: list[str], label: str, start: int = 0) -> str:
    """The value cell printed after a label cell in a two-column PDF table."""
    i = lines.index(label, start)
    return lines[i + 1]


def assert_pdf_shows(data: dict, blob: bytes) -> None:
    lines = pdf_lines(blob)
    at = lines.index("Summary")
    for k, v in flatten(data["summary"]).items():
        assert value_after(lines, SUMMARY_LABELS[k], at) == pdf_cell(v), k
    assert f"RPO objective: {data['objective_seconds']} s" in lines
    assert any(data_digest(data) in ln for ln in lines)
    for b in data["breaches"]:
        at = lines.index(f"Breach {b['number']}")
        for label, field in (("Start (UTC)", "start"), ("End (UTC)", "end"), ("Duration (s)", "duration_seconds"),
                             ("Peak RPO (s)", "peak_rpo_seconds"), ("Objects affected", "objects_affected")):
            assert value_after(lines, label, at) == pdf_cell(b[field]), field
        for o in b["objects"]:
            i = lines.index(o["key"], at)
            assert lines[i + 1:i + 6] == [o["target"], o["source_time"], pdf_cell(o["replicated_at"]),
                                          pdf_cell(o["pending_seconds"]), o["status"]]
    if not data["breaches"]:
        assert "No breach of the objective in the period." in lines
    assert "No failovers in the period." in lines and "No drills in the period." in lines


def assert_csv_shows(data: dict, blob: bytes) -> None:
    s = read_csv_sections(blob)
    report = {r["field"]: r["value"] for r in s["report"]}
    assert report["data_digest"] == data_digest(data)
    assert (report["since"], report["until"], report["objective_seconds"]) == (
        data["period"]["since"], data["period"]["until"], str(data["objective_seconds"]))
    assert ({r["field"]: r["value"] for r in s["summary"]}
            == {k: csv_cell(v) for k, v in flatten(data["summary"]).items()})
    assert s["targets"] == [{k: csv_cell(v) for k, v in flatten(t).items()} for t in data["targets"]]
    assert s["breaches"] == [{k: csv_cell(v) for k, v in b.items() if k != "objects"} for b in data["breaches"]]
    objects = [dict(breach=str(b["number"]), **{k: csv_cell(v) for k, v in o.items()})
               for b in data["breaches"] for o in b["objects"]]
    assert s["breach_objects"] == objects
    assert s["failovers"] == [] and s["drills"] == []
    assert [[float(r["t_epoch"]), float(r["rpo_seconds"])] for r in s["rpo_series"]] == data["rpo_series"]


def assert_has_chart(blob: bytes) -> None:
    reader = PdfReader(io.BytesIO(blob))
    images = [img for page in reader.pages for img in page.images]
    assert images, "no image in the PDF"
    xobjects = reader.pages[0]["/Resources"]["/XObject"]
    assert any(x.get_object()["/Subtype"] == "/Image" for x in xobjects.values())
    assert images[0].image.size[0] > 500  # a real chart, not a placeholder


# ------------------------------------------------------------------ figures
def test_report_data_of_an_outage(cfg, outage, key):
    data = report_data(cfg, outage, mirror="m", since=T0, until=T0 + 120, now=T0 + 200)
    assert data["period"] == dict(since=iso(T0), until=iso(T0 + 120), seconds=120.0)
    assert data["scope"]["kind"] == "mirror" and data["scope"]["mirrors"][0]["targets"] == [A, B]
    s = data["summary"]
    assert (s["replications"], s["within_objective"], s["late"], s["in_flight"]) == (40, 29, 11, 0)
    assert s["percent_within_objective"] == 72.5
    assert (s["worst_rpo_seconds"], s["worst_rpo_at"]) == (60.3, iso(T0 + 90.2))
    assert (s["breaches"], s["breach_seconds"]) == (1, 50.3)
    [b] = data["breaches"]
    assert (b["start"], b["end"], b["duration_seconds"], b["peak_rpo_seconds"], b["open_at_end"]) == (
        iso(T0 + 39.9), iso(T0 + 90.2), 50.3, 60.3, False)
    # k06..k17 waited for A; k17 (written 5.3 s before A came back) was never older than 10 s
    assert [o["key"] for o in b["objects"]] == [f"k{i:02}" for i in range(6, 17)]
    assert b["objects_affected"] == 11 and b["targets"] == [A]
    assert b["objects"][0] == dict(mirror="m", target=A, key="k06", op="put", status="completed",
                                   source_time=iso(T0 + 29.9), seen_at=iso(T0 + 30), replicated_at=iso(T0 + 90.2),
                                   pending_seconds=60.3)
    per = {t["target"]: t for t in data["targets"]}
    assert (per[A]["breaches"], per[A]["percent_within_objective"]) == (1, 45.0)
    assert (per[B]["breaches"], per[B]["percent_within_objective"], per[B]["worst_rpo_seconds"]) == (0, 100.0, 0.6)
    assert data["failovers"] == [] and data["drills"] == []
    assert max(v for _, v in data["rpo_series"]) == 60.3


def test_pending_work_is_late_or_in_flight_and_a_breach_open_at_the_end(cfg, ledger, key):
    w = Writer(ledger)
    w.put("stuck", T0 + 10, {A: None})
    w.put("fresh", T0 + 55, {A: None})
    w.flush()
    w.fail("m", A, "stuck", T0 + 20)
    data = report_data(cfg, ledger, mirror="m", since=T0, until=T0 + 60, now=T0 + 60)
    s = data["summary"]
    assert (s["replications"], s["late"], s["in_flight"], s["percent_within_objective"]) == (2, 1, 1, 0.0)
    [b] = data["breaches"]
    assert b["open_at_end"] is True and b["end"] == iso(T0 + 60)
    assert [(o["key"], o["status"], o["replicated_at"]) for o in b["objects"]] == [("stuck", "failed", None)]
    assert s["rpo_at_end_seconds"] == 50.1


def test_group_report_uses_the_strictest_objective_and_all_mirrors(cfg, ledger, key):
    w = Writer(ledger)
    w.put("slow", T0 + 10, {"memory://rpo-c": T0 + 40}, mirror="n")  # 30 s: fine for n (1m), not for g (10s)
    w.put("ok", T0 + 10, {A: T0 + 11, B: T0 + 11})
    w.flush()
    g = report_data(cfg, ledger, group="g", since=T0, until=T0 + 60, now=T0 + 60)
    assert g["objective_seconds"] == 10.0 and [m["name"] for m in g["scope"]["mirrors"]] == ["m", "n"]
    assert g["summary"]["breaches"] == 1 and g["breaches"][0]["targets"] == ["memory://rpo-c"]
    n = report_data(cfg, ledger, mirror="n", since=T0, until=T0 + 60, now=T0 + 60)
    assert n["summary"]["breaches"] == 0 and n["summary"]["percent_within_objective"] == 100.0


def test_bad_parameters_are_refused(cfg, ledger, key):
    with pytest.raises(ReportError, match="exactly one"):
        report(cfg, ledger, "json", mirror="m", group="g")
    with pytest.raises(ReportError, match="exactly one"):
        report(cfg, ledger, "json", mirror=None)
    with pytest.raises(ReportError, match="after"):
        report(cfg, ledger, "json", since=T0, until=T0)
    with pytest.raises(ReportError, match="format"):
        report(cfg, ledger, "xml")
    with pytest.raises(NotFoundError, match="no mirror named 'nope'"):
        report(cfg, ledger, "json", mirror="nope")
    with pytest.raises(NotFoundError, match="no group named 'nope'"):
        report(cfg, ledger, "json", mirror=None, group="nope")


# ------------------------------------------------------------------ formats and signatures
def test_json_csv_and_pdf_show_the_same_numbers(cfg, outage, key):
    files = {fmt: report(cfg, outage, fmt) for fmt in FORMATS}
    data = json.loads(files["json"])["data"]
    assert data == report_data(cfg, outage, mirror="m", since=T0, until=T0 + 120, now=T0 + 200)
    assert json.loads(files["json"])["digest"] == data_digest(data)
    assert_csv_shows(data, files["csv"])
    assert_pdf_shows(data, files["pdf"])
    assert_has_chart(files["pdf"])
    meta = PdfReader(io.BytesIO(files["pdf"])).metadata
    assert f"data_digest={data_digest(data)}" in meta["/Keywords"] and key.id in meta["/Keywords"]


def test_a_report_without_breaches_renders_in_every_format(cfg, ledger, key):
    w = Writer(ledger)
    w.put("k", T0 + 1, {A: T0 + 2, B: T0 + 2})
    w.flush()
    files = {fmt: report(cfg, ledger, fmt) for fmt in FORMATS}
    data = json.loads(files["json"])["data"]
    assert data["breaches"] == [] and data["summary"]["percent_within_objective"] == 100.0
    assert_csv_shows(data, files["csv"])
    assert_pdf_shows(data, files["pdf"])
    assert all(verify_report(b, cfg)[0] for b in files.values())


def flips(blob: bytes, fmt: str) -> list[int]:
    """Positions to corrupt: spread over the file, plus the data's numbers and the trailer."""
    n = len(blob)
    spots = {0, n // 2, n - 1, n - 10, *range(1, n, max(1, n // 40))}
    if fmt == "json":
        spots.add(blob.index(b'"worst_rpo_seconds": ') + len(b'"worst_rpo_seconds": '))
        spots.add(blob.index(b'"key_id"') + 12)
    if fmt == "csv":
        spots.add(blob.index(b"worst_rpo_seconds,") + len(b"worst_rpo_seconds,"))
        spots.add(blob.index(b"# digest") - 1)
    if fmt == "pdf":
        spots.add(blob.index(b"%%EOF"))
        spots.add(blob.rindex(b"%cloudmirror-signature") + 30)
    return sorted(spots)


@pytest.mark.parametrize("fmt", FORMATS)
def test_signature_verifies_with_the_public_key_alone_and_any_changed_byte_fails(cfg, outage, key, fmt, monkeypatch):
    blob = report(cfg, outage, fmt)
    monkeypatch.setenv(KEY_FILE_ENV, "/nonexistent/no-private-key-here.pem")  # the auditor has the public key only
    public = [key.public]
    ok, reason = verify_report(blob, cfg, public_keys=public)
    assert ok, reason
    assert reason.startswith(f"valid {fmt} report, Ed25519 signature by key {key.id}")
    for at in flips(blob, fmt):
        bad = bytearray(blob)
        bad[at] ^= 0x01
        ok, reason = verify_report(bytes(bad), cfg, public_keys=public)
        assert not ok, f"byte {at} of {len(blob)} changed and the {fmt} report still verified"
        assert "\n" not in reason and reason
    assert verify_report(blob[:-1], cfg, public_keys=public)[0] is False  # truncated
    assert verify_report(blob + b"\n", cfg, public_keys=public)[0] is False  # extended


def test_a_report_signed_by_another_key_is_refused(cfg, outage, key, tmp_path):
    other = generate_key_file(tmp_path / "other.pem")
    for fmt in FORMATS:
        blob = build_report(cfg, outage, mirror="m", since=T0, until=T0 + 120, fmt=fmt, key=other)
        for public in (None, [key.public]):  # the deployment's key, or its public key alone
            ok, reason = verify_report(blob, cfg, public_keys=public)
            assert not ok and reason == f"signed by key {other.id}, not by the given public key ({key.id})"
        assert verify_report(blob, cfg, public_keys=[other.public])[0]
        assert verify_report(blob, cfg, public_keys=[key.public, other.public])[0]  # a keyring of old and new
        # a signature copied from another report, with this key's id put in: still refused
        mine = build_report(cfg, outage, mirror="m", since=T0, until=T0 + 120, fmt=fmt)
        forged = blob.replace(other.id.encode(), key.id.encode())
        assert forged != blob and forged != mine and not verify_report(forged, cfg)[0]


def test_json_reports_must_stay_in_their_signed_form(cfg, outage, key):
    blob = report(cfg, outage, "json")
    env = json.loads(blob)
    env["data"]["summary"]["breaches"] = 0
    ok, reason = verify_report((json.dumps(env, sort_keys=True, indent=2) + "\n").encode(), cfg)
    assert not ok and "does not match its digest" in reason
    ok, reason = verify_report(json.dumps(json.loads(blob)).encode(), cfg)  # same data, other layout
    assert not ok and "edited" in reason
    assert verify_report(b"not a report", cfg) == (False, "no cloudmirror signature found at the end of the csv file")


# ------------------------------------------------------------------ the key
def test_key_file_is_created_next_to_a_sqlite_ledger_once_and_private(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with pytest.raises(ReportKeyError, match="no report signing key"):
        load_key(url, create=False)
    k = load_key(url)
    path = tmp_path / "cloudmirror-report-signing.pem"
    assert k.source == str(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_key(url).id == k.id == load_key(url, create=False).id
    other = generate_key_file(tmp_path / "other.pem")
    monkeypatch.setenv(KEY_ENV, (tmp_path / "other.pem").read_text().replace("\n", "\\n"))  # one-line env form
    assert load_key(url).id == other.id != k.id


def test_no_key_is_created_for_a_postgresql_ledger(tmp_path, monkeypatch):
    """Workers on several hosts must share one key: none makes its own."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "k.pem"))
    with pytest.raises(ReportKeyError, match="keygen -o .*only with a SQLite ledger"):
        load_key("postgresql+psycopg://u:p@db/cm")
    assert not (tmp_path / "k.pem").exists()


def test_verifying_never_creates_a_key(cfg, outage, key, tmp_path, monkeypatch):
    blob = report(cfg, outage, "csv")
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "absent.pem"))
    ok, reason = verify_report(blob, cfg)
    assert not ok and "no report signing key" in reason and "--public-key" in reason
    assert not (tmp_path / "absent.pem").exists()


# ------------------------------------------------------------------ command line
@pytest.fixture
def cli(tmp_path, cfg, key):
    """The main app as the lead wires it: a typer app with `register(app)` applied."""
    import yaml

    app = typer.Typer()

    @app.command()
    def status() -> None:  # a second command, so `report` is a sub-command as in cloudmirror
        pass

    register(app)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [*args, "-c", str(path)])


def test_cli_writes_each_format_and_verifies_it(cli, outage, tmp_path, key, monkeypatch):
    since, until = iso(T0), iso(T0 + 120)
    pem = tmp_path / "public.pem"
    assert cli("report", "public-key", "-o", str(pem)).exit_code == 0
    files = {}
    for fmt in FORMATS:
        out = files[fmt] = tmp_path / f"r.{fmt}"
        res = cli("report", "m", "--since", since, "--until", until, "-o", str(out))
        assert res.exit_code == 0, res.output
        assert out.read_bytes()[:5] == {"json": b"{\n  \"", "csv": b"[repo", "pdf": b"%PDF-"}[fmt]
        res = cli("report", "verify", str(out))  # with the deployment's key
        assert res.exit_code == 0 and res.output.startswith(f"valid {fmt} report, Ed25519"), res.output
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "gone.pem"))  # the auditor's machine: no private key
    for fmt, out in files.items():
        res = cli("report", "verify", str(out), "--public-key", str(pem))
        assert res.exit_code == 0 and res.output.startswith(f"valid {fmt} report, Ed25519"), res.output
        bad = bytearray(out.read_bytes())
        bad[len(bad) // 3] ^= 0x20
        out.write_bytes(bytes(bad))
        res = cli("report", "verify", str(out), "--public-key", str(pem))
        assert res.exit_code == 1 and res.output.startswith("error: invalid: ") and res.output.count("\n") == 1
    assert not (tmp_path / "gone.pem").exists()


def test_cli_group_reports_and_bad_input(cli, outage, tmp_path):
    out = tmp_path / "g.csv"
    res = cli("report", "--group", "g", "--since", "1h", "-o", str(out))
    assert res.exit_code == 0, res.output
    fields = {r["field"]: r["value"] for r in read_csv_sections(out.read_bytes())["report"]}
    assert (fields["scope_kind"], fields["scope_name"]) == ("group", "g")
    res = cli("report", "create", "m", "--since", iso(T0), "--until", iso(T0 + 60), "--format", "csv")
    assert res.exit_code == 0 and "[summary]" in res.output
    for args, reason in ((("report", "nope"), "no mirror named 'nope'"),
                         (("report", "m", "--since", "yesterday-ish"), "not a time"),
                         (("report", "m", "--format", "xml"), "unknown format 'xml'"),
                         (("report", "m", "--group", "g"), "exactly one"),
                         (("report", "m", "--since", "1h", "--until", "2h"), "after")):
        res = cli(*args)
        assert res.exit_code == 2 and reason in res.output and res.output.count("\n") == 1, (args, res.output)
    res = cli("report", "verify", str(tmp_path / "missing.json"))
    assert res.exit_code == 2 and "cannot read" in res.output
