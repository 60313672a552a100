"""The command line: --help everywhere, one-line errors, status, db upgrade, local cloud, and
SIGTERM draining a running process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import FAST_WORKERS, Cloud, eventually

CLI = str(Path(sys.executable).with_name("cloudmirror"))
COMMANDS = [[], ["run"], ["worker"], ["api"], ["status"], ["db"], ["db", "upgrade"], ["local"], ["local", "up"],
            ["local", "down"], ["local", "env"], ["demo"], ["reconcile"], ["keys"], ["keys", "create"],
            ["report"], ["report", "verify"]]


def cli(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(cmd):
    """In-process through typer's CliRunner (the installed script runs the same `app`)."""
    from typer.testing import CliRunner

    from cloudmirror.cli import app

    r = CliRunner().invoke(app, [*cmd, "--help"], prog_name="cloudmirror", env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.stderr
    assert "Usage:" in r.stdout


@pytest.mark.parametrize("content,reason", [
    (None, "cannot read config"),
    ("mirrors: [", "is not valid YAML"),
    ("mirrors:\n  - name: m\n    source: ftp://x\n    targets: [s3://abc]\n",
     "mirrors[0].source: unknown scheme 'ftp'"),
])
def test_bad_config_exits_non_zero_with_one_line(tmp_path, content, reason):
    cfg = tmp_path / "c.yaml"
    if content is not None:
        cfg.write_text(content)
    for cmd in (["status"], ["run"], ["worker"], ["db", "upgrade"]):
        r = cli(*cmd, "-c", str(cfg))
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], r.stderr


def test_unknown_option_is_rejected():
    r = cli("status", "--colour")
    assert r.returncode != 0 and "No such option" in r.stderr


def test_db_upgrade_and_status(tmp_path, moto_endpoint):
    cloud = Cloud(moto_endpoint)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ledger": f"sqlite:///{tmp_path / 'l.db'}", "mirrors": [
        {"name": "m", "source": cloud.url(cloud.bucket()),
         "targets": [cloud.url(cloud.bucket("eu-west-1"), "eu-west-1")]}]}))
    r = cli("status", "-c", str(cfg))
    assert r.returncode == 2 and "db upgrade" in r.stderr
    assert cli("db", "upgrade", "-c", str(cfg)).returncode == 0
    assert cli("db", "upgrade", "-c", str(cfg)).returncode == 0  # idempotent
    r = cli("status", "-c", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    expected = {"mirror": "m", "pending": 0, "failed": 0, "rpo_seconds": 0.0}
    assert {k: row[k] for k in expected} == expected
    table = cli("status", "-c", str(cfg)).stdout
    assert "eu-west-1" in table and "endpoint" not in table


def test_local_up_env_down(tmp_path):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import EndpointConnectionError

    from cloudmirror.local.procs import free_port, http_ok, port_open

    env = {"CLOUDMIRROR_STATE_DIR": str(tmp_path / "state")}
    r = cli("local", "up", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "local cloud up: moto" in r.stdout
    out = cli("local", "env", env=env, cwd=tmp_path).stdout
    endpoint = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("export AWS_ENDPOINT_URL="))
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(connect_timeout=1, retries={"max_attempts": 0}))
    assert s3.list_buckets()["Buckets"] == []  # it answers
    exports = dict(line[len("export "):].split("=", 1) for line in out.splitlines() if line.startswith("export "))
    gcs, pubsub = exports["STORAGE_EMULATOR_HOST"], exports["PUBSUB_EMULATOR_HOST"]
    conn = exports["CLOUDMIRROR_AZURITE_CONN_DEVSTOREACCOUNT1"]
    blob_port = int(re.search(r"BlobEndpoint=http://127.0.0.1:(\d+)/", conn)[1])
    assert "CLOUDMIRROR_AZURITE_CONN_CMDRSTORE" in exports  # the second Azure account
    assert http_ok(gcs + "/storage/v1/b") and http_ok(f"http://{pubsub}/") and port_open(blob_port)
    assert endpoint in cli("local", "up", env=env, cwd=tmp_path).stdout  # idempotent: the same cloud
    assert "stopped" in cli("local", "down", env=env, cwd=tmp_path).stdout
    assert cli("local", "env", env=env, cwd=tmp_path).returncode == 2
    with pytest.raises(EndpointConnectionError):
        s3.list_buckets()
    assert not http_ok(gcs + "/storage/v1/b") and not port_open(blob_port)


@pytest.mark.timeout(120)
async def test_sigterm_drains_in_flight_copies_then_exits(tmp_path, moto_endpoint, moto_endpoint_b, sqlite_url):
    """A big streamed copy is in flight when SIGTERM arrives: it finishes, then the process exits 0."""
    from cloudmirror.ledger.repo import Ledger

    a, b = Cloud(moto_endpoint), Cloud(moto_endpoint_b)
    src, dst = a.bucket(), b.bucket("eu-west-1")
    q = a.queue_for(src)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ledger": sqlite_url, "mirrors": [
        {"name": "m", "source": a.url(src), "targets": [b.url(dst, "eu-west-1")],
         "events": [{"sqs": q, "region": "us-east-1", "wait_time_s": 1}]}],
        "workers": {**FAST_WORKERS, "max_buffers": 1}}))
    proc = subprocess.Popen([CLI, "run", "--no-api", "-c", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ledger = Ledger(sqlite_url)
    try:
        a.s3().put_object(Bucket=src, Key="big", Body=os.urandom(60 * 1024 * 1024))
        await eventually(lambda: ledger.count(status="in_progress") == 1, timeout=30, interval=0.01,
                         message="the copy started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stdout.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ledger.count(status="completed") == 1 and ledger.backlog() == 0
    got = b.s3("eu-west-1").head_object(Bucket=dst, Key="big")
    assert got["ContentLength"] == 60 * 1024 * 1024
    ledger.close()


@pytest.mark.timeout(240)
def test_demo_runs_end_to_end_and_stops_what_it_started():
    r = cli("demo", timeout=200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "s3://cloudmirror-demo-euw1 (eu-west-1) holds exactly the 45 objects of s3://cloudmirror-demo-use1" in out
    assert "gs://cloudmirror-demo-dr holds exactly the 45 objects of s3://cloudmirror-demo-use1" in out
    assert "az://devstoreaccount1/cloudmirror-demo-dr holds exactly the 45 objects of s3://" in out
    assert ("az://cmdrstore/cloudmirror-demo-from-gcs holds exactly the 10 objects of "
            "gs://cloudmirror-demo-gcs-src") in out
    assert "local cloud stopped" in out
    line = next(line for line in out.splitlines() if line.startswith("local cloud at "))
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)] + [int(re.search(r"blob port (\d+)", line)[1])]
    from cloudmirror.local.procs import port_open

    assert len(ports) == 3 and not any(port_open(p) for p in ports)


def _memory_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ledger": f"sqlite:///{tmp_path / 'l.db'}", "api": {"listen": f"127.0.0.1:{port}"},
                                   "mirrors": [{"name": "m", "source": "memory://a", "targets": ["memory://b"]}]}))
    return cfg


def test_run_serves_the_api_and_a_taken_port_is_a_one_line_error(tmp_path):
    import urllib.error
    import urllib.request

    from cloudmirror.local.procs import free_port, port_open

    port = free_port()
    cfg = _memory_config(tmp_path, port)
    assert cli("db", "upgrade", "-c", str(cfg)).returncode == 0
    made = cli("keys", "create", "--name", "t", "--role", "viewer", "-c", str(cfg))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1].strip()
    proc = subprocess.Popen([CLI, "run", "-c", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):  # poll with a deadline
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the API did not come up"
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:  # noqa: S310
            assert json.loads(r.read()) == {"status": "ok"}
        status = f"http://127.0.0.1:{port}/v1/status"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(status, timeout=5)  # noqa: S310
        assert denied.value.code == 401
        req = urllib.request.Request(status, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            assert json.loads(r.read())["targets"][0]["mirror"] == "m"
        # a second process on the same address says why, in one line, and starts nothing
        r = cli("run", "-c", str(cfg))
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port} (api.listen): "
                                                 "Address already in use"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()



def test_an_unreachable_ledger_is_a_one_line_error(tmp_path):
    from cloudmirror.local.procs import free_port

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ledger": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nope",
                                   "mirrors": [{"name": "m", "source": "memory://a", "targets": ["memory://b"]}]}))
    for cmd in (["status"], ["db", "upgrade"], ["worker"]):
        r = cli(*cmd, "-c", str(cfg))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (cmd, r.stderr)
        assert "Connection refused" in lines[0] and "run `cloudmirror db upgrade`" not in lines[0]
