"""The attacks of issue 11 through the public API: each gets a 4xx JSON error naming the rule
and changes nothing -- no mirror stored, no request to the refused endpoint (a loopback
listener counts connections), no file read or written outside the allowed roots. A mirror
stored before the policy was tightened is not run by the service either."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from cloudmirror.config import validate_config
from cloudmirror.dr import failover
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.policy import PolicyRefused
from cloudmirror.services.runtime import Service
from tests.api.conftest import assert_error, mirror_config_data, running_api
from tests.api.test_jobs import assert_job_ends
from tests.conftest import unique_name


class Listener:
    """A loopback TCP listener that counts the connections it gets (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    lis = Listener()
    yield lis
    lis.close()


def _spec(name: str, **kw) -> dict:
    return {"name": name, "source": f"memory://{unique_name('src')}", "targets": [f"memory://{unique_name('dst')}"],
            **kw}


async def test_admin_cannot_point_a_mirror_at_a_host_file_or_foreign_endpoint(api, listener, tmp_path):
    attacks = [
        ({"source": "file:///"}, "source", "security.locations"),
        ({"targets": ["file:///etc/cron.d"]}, "targets[0].url", "security.locations"),
        ({"targets": [f"file://{tmp_path}/out"]}, "targets[0].url", "security.locations"),
        ({"targets": ["s3://cm-bucket?endpoint=http://169.254.169.254/latest"]}, "targets[0].url",
         "security.endpoints"),
        ({"targets": [f"s3://cm-bucket?endpoint={listener.url}"]}, "targets[0].url", "security.endpoints"),
        ({"targets": [f"az://acct/c?credential=sas&endpoint={listener.url}"]}, "targets[0].url", "security.endpoints"),
        ({"targets": ["az://acct/c?connection_string_env=AWS_SECRET_ACCESS_KEY"]}, "targets[0].url",
         "security.env_prefix"),
        ({"targets": ["az://acct/c?connection_string_env=CLOUDMIRROR_REPORT_KEY"]}, "targets[0].url",
         "security.env_prefix"),
        ({"events": [{"sqs": f"{listener.url}/000000000000/q"}]}, "events[0].sqs", "security.endpoints"),
        ({"events": [{"azure_queue": f"az://acct/q?endpoint={listener.url}"}]}, "events[0].azure_queue",
         "security.endpoints"),
    ]
    for i, (change, field, rule) in enumerate(attacks):
        name = f"evil{i}"
        err = assert_error(await api.admin.post("/v1/mirrors", json=_spec(name, **change)), 422, "policy_refused")
        assert err["message"].startswith(f"{field}: refused by the security policy ({rule})"), err
        assert_error(await api.viewer.get(f"/v1/mirrors/{name}"), 404, "not_found")
        # the same through a change of an existing mirror
        err = assert_error(await api.admin.patch("/v1/mirrors/photos", json=change), 422, "policy_refused")
        assert rule in err["message"]
    assert (await api.viewer.get("/v1/mirrors/photos")).json()["revision"] == 1  # unchanged
    assert listener.connections == 0 and not (tmp_path / "out").exists()


async def test_a_policy_that_allows_a_root_lets_the_api_use_it_and_nothing_beside_it(ledger_url, ledger, tmp_path):
    data = mirror_config_data(ledger_url)
    data["security"] = {"locations": [f"file://{tmp_path}/replicas", "memory://*"], "endpoints": []}
    async with running_api(validate_config(data), ledger) as api:
        ok = await api.admin.post("/v1/mirrors", json=_spec("ok", targets=[f"file://{tmp_path}/replicas/a"]))
        assert ok.status_code == 201, ok.text
        for bad in (f"file://{tmp_path}/replicas-x", f"file://{tmp_path}", "s3://cm-bucket"):
            err = assert_error(await api.admin.post("/v1/mirrors", json=_spec("no", targets=[bad])), 422,
                               "policy_refused")
            assert "security.locations" in err["message"], bad


async def test_operator_failover_may_not_bring_new_feeds(api, listener):
    body = {"to": api.config.mirror("photos").targets[0].url, "mode": "forced",
            "events": [{"sqs": f"{listener.url}/000000000000/q"}]}
    err = assert_error(await api.operator.post("/v1/mirrors/photos/failover", json=body), 403, "forbidden")
    assert "admin" in err["message"]
    err = assert_error(await api.admin.post("/v1/mirrors/photos/failover", json=body), 422, "policy_refused")
    assert "events[0].sqs" in err["message"] and "security.endpoints" in err["message"]
    mirror = (await api.viewer.get("/v1/mirrors/photos")).json()
    assert mirror["active"] == mirror["source"]  # nothing switched
    assert listener.connections == 0


async def test_an_operator_may_name_a_feed_the_config_names(ledger_url, ledger):
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/photos-events"
    data = mirror_config_data(ledger_url)
    data["mirrors"][1]["events"] = [{"sqs": queue}]
    service = Service(validate_config(data), ledger=ledger)
    assert failover._events(service, [{"sqs": queue}, {"poll": "30s"}], may_configure=False)[0] == {"sqs": queue}
    with pytest.raises(failover.Forbidden):
        failover._events(service, [{"sqs": queue + "-other"}], may_configure=False)


async def test_a_stored_mirror_the_policy_refuses_is_never_opened(api, listener):
    bad = f"s3://cm-bucket?endpoint={listener.url}"
    MirrorSpecs(api.ledger).create("stored", _spec("stored", targets=[bad]))  # as if stored before the policy
    service = Service(api.config, ledger=api.ledger)
    await service._load_mirrors()
    assert [m.name for m in service.config.mirrors] == ["docs", "photos"]  # "stored" is not run
    with pytest.raises(PolicyRefused):
        service.endpoint(bad)
    job = (await api.operator.post("/v1/mirrors/stored/reconcile", json={})).json()["job"]
    job = await assert_job_ends(api.viewer, job["id"], status="failed")
    assert "security.endpoints" in job["error"]
    assert listener.connections == 0
