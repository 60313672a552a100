"""Failover, failback and drills through the REST API, on SQLite and PostgreSQL: roles,
errors (404 unknown mirror, 422 naming the field, 409 in the wrong state), the records and
their objects, the active location, pagination and the audit log."""

from __future__ import annotations

from tests.api.conftest import assert_error, record_versions


async def test_roles_and_bad_requests(api):
    target = api.config.mirror("photos").targets[0].url
    for path in ("failover", "failback", "drills"):
        body = {"to": target} if path == "failover" else {}
        assert_error(await api.anonymous.post(f"/v1/mirrors/photos/{path}", json=body), 401, "unauthorized")
        assert_error(await api.viewer.post(f"/v1/mirrors/photos/{path}", json=body), 403, "forbidden")
    op = api.operator
    assert_error(await op.post("/v1/mirrors/nope/failover", json={"to": target}), 404, "not_found")
    assert_error(await op.post("/v1/mirrors/nope/drills"), 404, "not_found")
    err = assert_error(await op.post("/v1/mirrors/photos/failover", json={"to": "memory://elsewhere"}), 422,
                       "validation_error", field="to")
    assert "not a target" in err["message"]
    assert_error(await op.post("/v1/mirrors/photos/failover", json={"to": target, "mode": "sideways"}), 422,
                 "validation_error", field="body.mode")
    assert_error(await op.post("/v1/mirrors/photos/failover", json={"to": target, "drain_timeout_s": -1}), 422,
                 "validation_error", field="body.drain_timeout_s")
    assert_error(await op.post("/v1/mirrors/photos/failover", json={}), 422, "validation_error", field="body.to")
    assert_error(await op.post("/v1/mirrors/photos/failback", json={"policy": "coin"}), 422, "validation_error",
                 field="body.policy")
    assert_error(await op.post("/v1/mirrors/photos/drills", json={"sample": 5000}), 422, "validation_error",
                 field="body.sample")
    assert_error(await op.post("/v1/mirrors/photos/failback"), 409, "conflict")
    assert_error(await api.viewer.get("/v1/failovers/12345"), 404, "not_found")
    assert_error(await api.viewer.get("/v1/drills/12345"), 404, "not_found")
    assert_error(await api.viewer.get("/v1/failovers?kind=sideways"), 422, "validation_error", field="query.kind")
    assert (await api.viewer.get("/v1/failovers")).json() == {"items": [], "next_cursor": None}


async def test_forced_failover_reports_data_at_risk_and_fails_back(api):
    m = api.config.mirror("photos")
    target, other = m.targets[0].url, m.targets[1].url
    record_versions(api.ledger, "photos", "2026/a.jpg", [target], ["t1"])  # seen, not replicated yet

    r = await api.operator.post("/v1/mirrors/photos/failover", json={"to": target, "mode": "forced"})
    assert r.status_code == 200, r.text
    fo = r.json()["failover"]
    assert fo["kind"] == "forced" and fo["status"] == "completed" and fo["to_location"] == target
    assert fo["at_risk_objects"] == 1 and fo["at_risk_bytes"] == 10 and fo["old_is_target"] is False
    assert fo["requested_by"] == "test-operator" and fo["switched_at"] is not None
    objs = (await api.viewer.get(f"/v1/failovers/{fo['id']}/objects?kind=at_risk")).json()
    assert [(o["key"], o["op"], o["size"], o["source_time"], o["target"]) for o in objs["items"]] == [
        ("2026/a.jpg", "put", 10, "1970-01-01T00:16:40Z", target)]
    # applications learn where to write from the mirror
    assert (await api.viewer.get("/v1/mirrors/photos")).json()["active"] == target
    assert_error(await api.operator.post("/v1/mirrors/photos/failover", json={"to": other, "mode": "forced"}),
                 409, "conflict")

    r = await api.operator.post("/v1/mirrors/photos/failback", json={"policy": "primary_wins"})
    assert r.status_code == 200, r.text
    fb = r.json()["failover"]
    assert fb["kind"] == "failback" and fb["status"] == "completed" and fb["of_failover"] == fo["id"]
    assert fb["policy"] == "primary_wins" and fb["to_location"] == m.source
    assert (await api.viewer.get("/v1/mirrors/photos")).json()["active"] == m.source

    page = (await api.viewer.get("/v1/failovers?limit=1")).json()
    assert [f["id"] for f in page["items"]] == [fb["id"]] and page["next_cursor"]
    rest = (await api.viewer.get(f"/v1/failovers?limit=1&cursor={page['next_cursor']}")).json()
    assert [f["id"] for f in rest["items"]] == [fo["id"]] and rest["next_cursor"] is None
    assert [f["id"] for f in (await api.viewer.get("/v1/failovers?kind=failback")).json()["items"]] == [fb["id"]]
    assert (await api.viewer.get(f"/v1/failovers/{fo['id']}")).json()["failover"]["id"] == fo["id"]
    audit = (await api.operator.get("/v1/audit?action=POST /v1/mirrors/{name}/fail")).json()["items"]
    assert {(a["action"], a["status"]) for a in audit} >= {("POST /v1/mirrors/{name}/failover", 200),
                                                           ("POST /v1/mirrors/{name}/failback", 200)}
    assert any(f"failover #{fo['id']}" in (a["detail"] or "") for a in audit)


async def test_planned_failover_and_drill(api):
    m = api.config.mirror("docs")
    r = await api.operator.post("/v1/mirrors/docs/drills", json={"sample": 3})
    assert r.status_code == 201, r.text
    d = r.json()["drill"]
    assert d["outcome"] == "passed" and d["rpo_seconds"] == 0 and len(d["results"]) == 1
    assert (await api.viewer.get("/v1/drills?mirror=docs")).json()["items"][0]["id"] == d["id"]
    assert (await api.viewer.get(f"/v1/drills/{d['id']}")).json()["drill"]["outcome"] == "passed"

    r = await api.operator.post("/v1/mirrors/docs/failover",
                                json={"to": m.targets[0].url, "drain_timeout_s": 5, "fence": True})
    assert r.status_code == 200, r.text
    fo = r.json()["failover"]
    assert fo["kind"] == "planned" and fo["drained"] is True and fo["rpo_seconds"] == 0 and fo["fence"] is True
