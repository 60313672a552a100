"""Failed replications (list, filter, paginate, retry) and a key's history on each target."""

from __future__ import annotations

from tests.api.conftest import assert_error, fail_pending, record_versions


async def test_failures_are_listed_filtered_paginated_and_retried_once(api):
    photos = api.config.mirror("photos")
    t1, t2 = (t.name for t in photos.targets)
    for i in range(3):
        record_versions(api.ledger, "photos", f"k{i}", [t1, t2], [f"v{i}"])
    failed_t1 = fail_pending(api.ledger, "photos", t1)
    failed_t2 = fail_pending(api.ledger, "photos", t2, "Timeout")
    assert len(failed_t1) == len(failed_t2) == 3

    r = await api.viewer.get("/v1/failures")
    assert r.status_code == 200
    body = r.json()
    assert [f["id"] for f in body["items"]] == sorted(failed_t1 + failed_t2, reverse=True)
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert first["status"] == "failed" and first["last_error"] == "Timeout" and first["attempts"] == 1
    assert first["mirror"] == "photos" and first["key"] == "k2" and first["failed_at"]

    r = await api.viewer.get("/v1/failures", params={"target": t1})
    assert sorted(f["id"] for f in r.json()["items"]) == failed_t1
    assert (await api.viewer.get("/v1/failures", params={"mirror": "docs"})).json()["items"] == []

    seen, cursor = [], None  # two at a time
    while True:
        r = await api.viewer.get("/v1/failures", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        page = r.json()
        assert len(page["items"]) <= 2
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(failed_t1 + failed_t2, reverse=True)

    target_id = failed_t1[0]
    r = await api.operator.post(f"/v1/failures/{target_id}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert target_id not in [f["id"] for f in (await api.viewer.get("/v1/failures")).json()["items"]]
    [job] = api.ledger.claim("photos", t1, "w", 10, lease=60)  # the workers can take it again
    assert job.id == target_id and job.attempts == 1
    assert_error(await api.operator.post(f"/v1/failures/{target_id}/retry"), 409, "conflict")
    assert_error(await api.operator.post("/v1/failures/987654/retry"), 404, "not_found")
    assert_error(await api.operator.post("/v1/failures/0/retry"), 422, "validation_error", field="path.replication_id")
    assert_error(await api.viewer.post(f"/v1/failures/{failed_t2[0]}/retry"), 403, "forbidden")


async def test_object_history_shows_every_version_on_every_target(api):
    photos = api.config.mirror("photos")
    t1, t2 = (t.name for t in photos.targets)
    record_versions(api.ledger, "photos", "dir/a b.txt", [t1, t2], ["v1", "v2", "v3"])
    fail_pending(api.ledger, "photos", t2)  # only the newest is pending; the older ones were superseded

    r = await api.viewer.get("/v1/mirrors/photos/objects/dir/a b.txt")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mirror"] == "photos" and body["key"] == "dir/a b.txt" and body["next_cursor"] is None
    assert [v["etag"] for v in body["items"]] == ["etag-v1", "etag-v2", "etag-v3"]
    states = [{rep["target"]: rep["status"] for rep in v["replications"]} for v in body["items"]]
    assert states == [{t1: "superseded", t2: "superseded"}, {t1: "superseded", t2: "superseded"},
                      {t1: "pending", t2: "failed"}]

    r = await api.viewer.get("/v1/mirrors/photos/objects/dir/a b.txt", params={"limit": 2})
    assert [v["etag"] for v in r.json()["items"]] == ["etag-v1", "etag-v2"]
    r = await api.viewer.get("/v1/mirrors/photos/objects/dir/a b.txt", params={"cursor": r.json()["next_cursor"]})
    assert [v["etag"] for v in r.json()["items"]] == ["etag-v3"] and r.json()["next_cursor"] is None

    assert_error(await api.viewer.get("/v1/mirrors/photos/objects/never-seen"), 404, "not_found")
    assert_error(await api.viewer.get("/v1/mirrors/nope/objects/dir/a b.txt"), 404, "not_found")
    assert_error(await api.viewer.get("/v1/mirrors/photos/objects/a%00b"), 422, "validation_error", field="path.key")


async def test_mirrors_are_listed_by_name_and_paginated(api):
    r = await api.viewer.get("/v1/mirrors")
    assert [m["name"] for m in r.json()["items"]] == ["docs", "photos"]
    r = await api.viewer.get("/v1/mirrors", params={"limit": 1})
    assert [m["name"] for m in r.json()["items"]] == ["docs"]
    r = await api.viewer.get("/v1/mirrors", params={"limit": 1, "cursor": r.json()["next_cursor"]})
    assert [m["name"] for m in r.json()["items"]] == ["photos"] and r.json()["next_cursor"] is None
    photos = (await api.viewer.get("/v1/mirrors/photos")).json()
    assert photos["source"] == api.config.mirror("photos").source
    assert [t["url"] for t in photos["targets"]] == [t.url for t in api.config.mirror("photos").targets]
    assert_error(await api.viewer.get("/v1/mirrors/nope"), 404, "not_found")
