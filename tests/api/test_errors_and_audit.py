"""Every error is `{"error": {"code", "message"}}` with the right 4xx; every mutating call,
failed ones included, is in the audit log."""

from __future__ import annotations

from tests.api.conftest import assert_error

LISTS = ["/v1/failures", "/v1/audit", "/v1/jobs", "/v1/mirrors", "/v1/keys", "/v1/mirrors/photos/objects/k"]


async def test_limits_out_of_bounds_and_foreign_cursors_are_422_naming_the_field(api):
    for path in LISTS:
        for limit in ("0", "1001", "-5", "ten", "1e3"):
            assert_error(await api.admin.get(path, params={"limit": limit}), 422, "validation_error",
                         field="query.limit")
        assert (await api.admin.get(path, params={"limit": 1000})).status_code in (200, 404)  # 404: no such key
    # garbage, a JSON object, an audit cursor with a string position, an empty list, another list's cursor
    audit_cursor = "WyJhdWRpdCIsIDVd"
    for cursor in ("garbage", "eyJhIjoxfQ", "WyJhdWRpdCIsICJ4Il0", "W10", audit_cursor):
        assert_error(await api.admin.get("/v1/failures", params={"cursor": cursor}), 422, "validation_error",
                     field="query.cursor")
    assert (await api.admin.get("/v1/audit", params={"cursor": audit_cursor})).status_code == 200


async def test_bad_bodies_are_422_naming_the_field(api):
    url = "/v1/mirrors/photos/reconcile"
    r = await api.operator.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 422, "validation_error", field="body.1")
    assert_error(await api.operator.post(url, json={"dry_run": "maybe"}), 422, "validation_error",
                 field="body.dry_run")
    assert_error(await api.operator.post(url, json={"dry_run": True, "bogus": 1}), 422, "validation_error",
                 field="body.bogus")
    assert_error(await api.operator.post(url, json=[1, 2]), 422, "validation_error", field="body")
    assert_error(await api.operator.post(url, json={"target": "s3://not-a-target"}), 422, "validation_error",
                 field="target")
    assert_error(await api.admin.post("/v1/keys", json={"name": "x", "role": "root"}), 422, "validation_error",
                 field="body.role")
    assert_error(await api.admin.post("/v1/keys", json={"name": "a\x00b", "role": "viewer"}), 422,
                 "validation_error", field="body.name")
    r = await api.admin.post("/v1/keys", content=b'{"name": "a\\ud800", "role": "viewer"}',
                             headers={"content-type": "application/json"})  # a lone surrogate: no encoding takes it
    assert_error(r, 422, "validation_error", field="body.name")
    assert_error(await api.admin.post("/v1/keys", json={"name": "a\u200eb", "role": "viewer"}), 422,
                 "validation_error", field="name")  # a format character (left-to-right mark)
    r = await api.admin.post("/v1/keys", content=b'{"name": "\xff\xfe", "role": "viewer"}',
                             headers={"content-type": "application/json"})  # not UTF-8
    assert_error(r, 400, "bad_request")


async def test_not_found_and_method_not_allowed_have_the_same_shape(api):
    assert_error(await api.viewer.get("/v1/jobs/424242"), 404, "not_found")
    assert_error(await api.viewer.get("/v1/jobs/99999999999999999999999"), 422, "validation_error",
                 field="path.job_id")
    assert_error(await api.operator.post("/v1/mirrors/nope/reconcile", json={}), 404, "not_found")
    assert_error(await api.viewer.get("/v1/no-such-thing"), 404, "not_found")
    assert_error(await api.viewer.delete("/v1/status"), 405, "method_not_allowed")


async def test_mutating_calls_are_audited_whatever_their_outcome(api):
    await api.operator.post("/v1/mirrors/photos/reconcile", json={"dry_run": True})  # 202
    await api.viewer.post("/v1/failures/5/retry")  # 403
    await api.operator.post("/v1/failures/5/retry")  # 404
    await api.operator.post("/v1/mirrors/photos/reconcile", json={"dry_run": "x"})  # 422
    await api.anonymous.post("/v1/failures/5/retry")  # 401: not audited (counted in /metrics: test_guard.py)
    await api.admin.get("/v1/status")  # reads are not audited

    r = await api.operator.get("/v1/audit")
    assert r.status_code == 200
    entries = r.json()["items"]
    got = [(e["actor"], e["action"], e["target"], e["status"]) for e in entries]
    assert got == [
        ("test-operator", "POST /v1/mirrors/{name}/reconcile", "/v1/mirrors/photos/reconcile", 422),
        ("test-operator", "POST /v1/failures/{replication_id}/retry", "/v1/failures/5/retry", 404),
        ("test-viewer", "POST /v1/failures/{replication_id}/retry", "/v1/failures/5/retry", 403),
        ("test-operator", "POST /v1/mirrors/{name}/reconcile", "/v1/mirrors/photos/reconcile", 202),
    ]
    assert all(e["key_id"] is not None for e in entries)
    assert entries[0]["detail"].startswith("validation_error: body.dry_run")
    assert entries[1]["detail"] == "not_found: no replication with id 5"
    assert entries[3]["detail"].startswith("job ") and "dry run" in entries[3]["detail"]
    assert all(e["at"] and e["client"] for e in entries)

    r = await api.operator.get("/v1/audit", params={"actor": "test-operator", "limit": 2})
    page = r.json()
    assert [e["status"] for e in page["items"]] == [422, 404]
    r = await api.operator.get("/v1/audit", params={"actor": "test-operator", "cursor": page["next_cursor"]})
    assert [e["status"] for e in r.json()["items"]] == [202] and r.json()["next_cursor"] is None
    r = await api.operator.get("/v1/audit", params={"action": "POST /v1/failures"})
    assert [e["status"] for e in r.json()["items"]] == [404, 403]


async def test_an_unexpected_error_is_a_json_500_and_audited(api, monkeypatch):
    from cloudmirror.services import failures as replications

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(replications, "retry_failure", boom)
    import httpx

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app, raise_app_exceptions=False),
                               base_url="http://t", headers={"Authorization": f"Bearer {api.tokens['operator']}"})
    async with client:
        r = await client.post("/v1/failures/1/retry")
    err = assert_error(r, 500, "internal")
    assert "disk on fire" not in err["message"]  # internals stay in the server log
    entry = (await api.operator.get("/v1/audit")).json()["items"][0]
    assert (entry["action"], entry["status"]) == ("POST /v1/failures/{replication_id}/retry", 500)
