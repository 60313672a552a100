"""`cloudmirror dead-letters list|show|redrive|discard` and the dead letters in
`cloudmirror status`, on both ledgers (the same service functions as the REST API)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cloudmirror.cli import app
from cloudmirror.ledger.repo import DeadLetter
from cloudmirror.services import access
from tests.api.conftest import mirror_config_data
from tests.api.test_dead_letters import SQS, s3_body
from tests.conftest import unique_name


@pytest.fixture
def setup(ledger_url, ledger, tmp_path):
    bucket = unique_name("photos-src")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mirror_config_data(ledger_url, source=f"s3://{bucket}")))
    ledger.record([], [DeadLetter(feed=SQS, body=s3_body(bucket, "a.jpg"), reason="no mirror reads from it"),
                       DeadLetter(feed=SQS, body="{not json", reason="body is not JSON", message_id="m-2")])
    good, broken = sorted(d["id"] for d in ledger.dead_letters())
    return path, good, broken


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_dead_letters_from_the_command_line(setup, ledger):
    path, good, broken = setup
    c = ("-c", str(path))

    r = cli("status", *c)
    assert r.exit_code == 0 and "dead letters: 2 pending" in r.stdout, r.output
    r = cli("status", "--json", *c)
    assert json.loads(r.stdout)["dead_letters"]["pending"] == 2  # the object form when there are some

    r = cli("dead-letters", "list", "--json", *c)
    assert r.exit_code == 0, r.output
    assert [d["id"] for d in json.loads(r.stdout)] == [broken, good]
    r = cli("dead-letters", "list", *c)
    assert "body is not JSON" in r.stdout and str(good) in r.stdout
    r = cli("dead-letters", "show", str(broken), *c)
    assert r.exit_code == 0 and "{not json" in r.stdout and "m-2" in r.stdout

    r = cli("dead-letters", "redrive", str(broken), *c)  # still unparseable: refused, kept
    assert r.exit_code == 1 and "still cannot be parsed" in r.stderr, r.output
    r = cli("dead-letters", "redrive", "--json", str(good), *c)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["status"] == "redriven" and got["recorded"] == 1 and got["resolved_by"].startswith("cli")
    assert ledger.count(mirror="photos", status="pending") == 2
    assert cli("dead-letters", "redrive", str(good), *c).exit_code == 1  # not pending any more

    r = cli("dead-letters", "discard", str(broken), *c)
    assert r.exit_code == 0 and "discarded" in r.stdout
    assert json.loads(cli("dead-letters", "list", "--json", *c).stdout) == []
    r = cli("dead-letters", "list", "--json", "--status", "all", *c)
    assert {d["id"]: d["status"] for d in json.loads(r.stdout)} == {good: "redriven", broken: "discarded"}
    assert isinstance(json.loads(cli("status", "--json", *c).stdout), list)  # none pending: the plain list again

    r = cli("dead-letters", "show", "987654", *c)
    assert r.exit_code == 2 and "no dead letter" in r.stderr
    r = cli("dead-letters", "list", "--status", "bogus", *c)
    assert r.exit_code == 2 and "status" in r.stderr

    entries = access.list_audit(ledger, actor="cli", limit=20).items
    assert {(e["action"], e["status"]) for e in entries} >= {("dead-letters redrive", 200),
                                                            ("dead-letters redrive", 409),
                                                            ("dead-letters discard", 200)}
