"""Failover and failback end to end on the local cloud: two S3 buckets on moto in different
regions, S3 -> SQS events for the source, cloudmirror running in-process.

- planned: drains, records RPO 0; writes to the new primary flow back to the old one while
  failed over; the failback switches back and source writes flow to the target again;
- forced with data at risk: the record lists exactly the versions not replicated; writes
  made to the new primary during the failover reach the old primary after the failback; a
  key written on both sides is reported as a conflict and resolved by each policy;
- fence (moto enforces a bucket policy's Principal "*" statements but ignores conditions,
  so the exemption of cloudmirror's identity cannot be exercised: the policy document is
  asserted, and nothing is written to a fenced bucket): a fenced planned failover adds the
  CloudmirrorFence statement, an aborted one and the failback remove it, and an unrelated
  statement survives both.
"""

from __future__ import annotations

import contextlib
import json

import boto3
import pytest

from cloudmirror.dr import failover
from cloudmirror.dr.failback import conflict_key
from cloudmirror.errors import ConflictError
from cloudmirror.ledger.failovers import Failovers
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.location import parse_location
from cloudmirror.services import mirrors
from cloudmirror.stores.base import Fencer
from cloudmirror.stores.s3 import S3Store
from cloudmirror.stores.s3.fence import FENCE_ACTIONS, FENCE_SID
from tests.integration.harness import Cloud, config, eventually, mirror, running

SRC_REGION, DST_REGION = "us-east-1", "eu-west-1"
POLL_NEW_PRIMARY = [{"poll": 0.2}]


@contextlib.asynccontextmanager
async def dr_pair(moto_endpoint, ledger_url):
    """A mirror `dr` from a us-east-1 bucket (with its event queue) to a eu-west-1 one, running."""
    cloud = Cloud(moto_endpoint)
    src, dst = cloud.bucket(SRC_REGION), cloud.bucket(DST_REGION)
    cfg = config(ledger_url, [mirror("dr", cloud, src, [dst], cloud.queue_for(src, SRC_REGION))])
    async with running(cfg) as r:
        await eventually(lambda: [s.name for s in MirrorSpecs(r.ledger).all()] == ["dr"], message="seeded")
        yield r, cfg, cloud, src, dst


def body(cloud: Cloud, bucket: str, region: str, key: str) -> bytes | None:
    s3 = cloud.s3(region)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def holds(cloud, bucket, region, key, data):
    return lambda: body(cloud, bucket, region, key) == data


async def switched(r, source: str) -> None:
    await eventually(lambda: r.service.config.mirror("dr").source == source, message=f"running from {source}")


async def test_planned_failover_drains_reverses_and_fails_back(moto_endpoint, sqlite_url):
    async with dr_pair(moto_endpoint, sqlite_url) as (r, cfg, cloud, src, dst):
        old, new = cfg.mirror("dr").source, cfg.mirror("dr").targets[0].url
        for i in range(5):
            cloud.s3(SRC_REGION).put_object(Bucket=src, Key=f"before/{i}", Body=b"b" * i)
        await eventually(lambda: r.ledger.count(mirror="dr") == 5, message="writes recorded")

        # no fence here: moto 5 enforces Principal "*" statements but ignores their Condition, so
        # the fence would deny cloudmirror's own copies back to the old primary (AWS exempts them)
        fo = await failover.failover(r.service, "dr", to=new, mode="planned", drain_timeout_s=60,
                                     events=POLL_NEW_PRIMARY, requested_by="test")

        assert fo["status"] == "completed" and fo["drained"] is True and fo["rpo_seconds"] == 0
        assert fo["at_risk_objects"] == 0 and fo["fenced_at"] is None
        assert all(body(cloud, dst, DST_REGION, f"before/{i}") == b"b" * i for i in range(5))
        assert mirrors.get_mirror(r.ledger, "dr")["active"] == new
        await switched(r, new)
        cloud.s3(DST_REGION).put_object(Bucket=dst, Key="during.txt", Body=b"written to the new primary")
        await eventually(holds(cloud, src, SRC_REGION, "during.txt", b"written to the new primary"))

        fb = await failover.failback(r.service, "dr", requested_by="test")

        assert fb["status"] == "completed" and fb["conflicts"] == 0 and fb["of_failover"] == fo["id"]
        assert mirrors.get_mirror(r.ledger, "dr")["active"] == old
        await switched(r, old)
        cloud.s3(SRC_REGION).put_object(Bucket=src, Key="after.txt", Body=b"the normal direction again")
        await eventually(holds(cloud, dst, DST_REGION, "after.txt", b"the normal direction again"))


@pytest.mark.parametrize("policy", ["newest_wins", "primary_wins", "keep_both"])
async def test_forced_failover_at_risk_and_failback_conflict_by_policy(moto_endpoint, sqlite_url, policy):
    async with dr_pair(moto_endpoint, sqlite_url) as (r, cfg, cloud, src, dst):
        old, new = cfg.mirror("dr").source, cfg.mirror("dr").targets[0].url
        s3_old, s3_new = cloud.s3(SRC_REGION), cloud.s3(DST_REGION)
        s3_old.put_object(Bucket=src, Key="k.txt", Body=b"v1")
        await eventually(holds(cloud, dst, DST_REGION, "k.txt", b"v1"))
        # the target stops taking copies (paused): the next writes are recorded but not replicated
        mirrors.set_paused(cfg, r.ledger, "dr", True)
        await eventually(lambda: r.service.config.mirror("dr").paused, message="paused")
        s3_old.put_object(Bucket=src, Key="k.txt", Body=b"v2 on the old primary")
        s3_old.put_object(Bucket=src, Key="unreplicated.txt", Body=b"only ever on the old primary")
        await eventually(lambda: Failovers(r.ledger).backlog_to("dr", new)["objects"] == 2, message="2 pending")

        fo = await failover.failover(r.service, "dr", to=new, mode="forced", events=POLL_NEW_PRIMARY)

        at_risk = failover.failover_objects(r.ledger, fo["id"], kind="at_risk").items
        pending = {k: v for k in ("k.txt", "unreplicated.txt") for v in r.ledger.replications_for("dr", k)
                   if v["status"] == "pending"}
        assert fo["at_risk_objects"] == 2 and fo["at_risk_bytes"] == 21 + 28 and fo["rpo_seconds"] > 0
        assert sorted((o["key"], o["op"], o["size"], o["source_time"]) for o in at_risk) == [
            ("k.txt", "put", 21, pending["k.txt"]["source_time"]),
            ("unreplicated.txt", "put", 28, pending["unreplicated.txt"]["source_time"])]
        mirrors.set_paused(cfg, r.ledger, "dr", False)
        await switched(r, new)
        s3_new.put_object(Bucket=dst, Key="k.txt", Body=b"v3 on the new primary")  # both sides: a conflict
        s3_new.put_object(Bucket=dst, Key="new.txt", Body=b"written during the failover")

        fb = await failover.failback(r.service, "dr", policy=policy, requested_by="test")

        assert fb["status"] == "completed" and fb["conflicts"] == 1 and fb["restored"] == 1
        [c] = failover.failover_objects(r.ledger, fb["id"], kind="conflict").items
        assert c["key"] == "k.txt" and c["size"] == 21
        assert c["resolution"] == ("kept_both" if policy == "keep_both" else "primary")
        # the new primary's writes reached the old primary; the old primary's unreplicated one survived
        assert body(cloud, src, SRC_REGION, "new.txt") == b"written during the failover"
        assert (body(cloud, src, SRC_REGION, "k.txt") == body(cloud, dst, DST_REGION, "k.txt")
                == b"v3 on the new primary")
        assert body(cloud, dst, DST_REGION, "unreplicated.txt") == b"only ever on the old primary"
        if policy == "keep_both":
            kept = conflict_key("k.txt", fb["detail"]["conflict_suffix"].removeprefix(".conflict-"))
            assert body(cloud, dst, DST_REGION, kept) == body(cloud, src, SRC_REGION, kept) == b"v2 on the old primary"
        await switched(r, old)
        s3_old.put_object(Bucket=src, Key="after.txt", Body=b"after")
        await eventually(holds(cloud, dst, DST_REGION, "after.txt", b"after"))


# ---------------------------------------------------------------- fence
KEEP = {"Sid": "KeepMe", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket"}


def policy_statements(cloud: Cloud, bucket: str, region: str) -> list[dict] | None:
    """The bucket policy's statements, None when the bucket has no policy."""
    s3 = cloud.s3(region)
    try:
        return json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    except s3.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchBucketPolicy"
        return None


def keep_statement(cloud: Cloud, bucket: str, region: str) -> dict:
    """Put an unrelated statement in the bucket's policy; return it."""
    keep = {**KEEP, "Resource": f"arn:aws:s3:::{bucket}"}
    cloud.s3(region).put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17",
                                                                          "Statement": [keep]}))
    return keep


def caller_arn(cloud: Cloud) -> str:
    return boto3.client("sts", endpoint_url=cloud.endpoint, region_name=SRC_REGION).get_caller_identity()["Arn"]


def assert_fenced(cloud: Cloud, bucket: str, region: str, resource: str, *others: dict) -> None:
    """The policy holds exactly `others` and the fence statement, which exempts our caller."""
    statements = policy_statements(cloud, bucket, region)
    assert statements is not None
    fence = [s for s in statements if s.get("Sid") == FENCE_SID]
    assert [s for s in statements if s.get("Sid") != FENCE_SID] == list(others)
    assert fence == [{"Sid": FENCE_SID, "Effect": "Deny", "Principal": "*", "Action": FENCE_ACTIONS,
                      "Resource": resource,
                      "Condition": {"StringNotEquals": {"aws:PrincipalArn": caller_arn(cloud)}}}]


async def test_fenced_planned_failover_sets_the_bucket_policy_and_failback_removes_it(moto_endpoint, sqlite_url):
    async with dr_pair(moto_endpoint, sqlite_url) as (r, cfg, cloud, src, dst):
        new = cfg.mirror("dr").targets[0].url
        keep = keep_statement(cloud, src, SRC_REGION)
        cloud.s3(SRC_REGION).put_object(Bucket=src, Key="a.txt", Body=b"a")
        await eventually(lambda: r.ledger.count(mirror="dr") == 1, message="write recorded")

        fo = await failover.failover(r.service, "dr", to=new, fence=True, drain_timeout_s=60,
                                     events=POLL_NEW_PRIMARY, requested_by="test")

        assert fo["status"] == "completed" and fo["fence"] is True and fo["detail"]["fence"]["applied"] is True
        assert FENCE_SID in fo["detail"]["fence"]["what"]
        assert_fenced(cloud, src, SRC_REGION, f"arn:aws:s3:::{src}/*", keep)
        assert policy_statements(cloud, dst, DST_REGION) is None  # the new primary is not fenced
        await switched(r, new)

        fb = await failover.failback(r.service, "dr", requested_by="test")

        assert fb["status"] == "completed" and fb["detail"]["unfenced"] is True
        assert policy_statements(cloud, src, SRC_REGION) == [keep]


async def test_aborted_fenced_failover_unfences_the_source(moto_endpoint, sqlite_url):
    async with dr_pair(moto_endpoint, sqlite_url) as (r, cfg, cloud, src, _dst):
        new = cfg.mirror("dr").targets[0].url
        keep = keep_statement(cloud, src, SRC_REGION)
        mirrors.set_paused(cfg, r.ledger, "dr", True)
        await eventually(lambda: r.service.config.mirror("dr").paused, message="paused")
        cloud.s3(SRC_REGION).put_object(Bucket=src, Key="stuck.txt", Body=b"stuck")
        await eventually(lambda: Failovers(r.ledger).backlog_to("dr", new)["objects"] == 1, message="1 pending")

        with pytest.raises(ConflictError, match="aborted"):
            await failover.failover(r.service, "dr", to=new, fence=True, drain_timeout_s=0.3)

        [rec] = failover.list_failovers(r.ledger, mirror="dr").items
        assert rec["status"] == "aborted" and rec["detail"]["fence"]["applied"] is True
        assert rec["detail"]["fence"]["removed"] is True
        assert policy_statements(cloud, src, SRC_REGION) == [keep]


async def test_s3_store_fence_on_a_prefix_and_unfence_deletes_a_policy_left_empty(moto_endpoint):
    cloud = Cloud(moto_endpoint)
    bucket = cloud.bucket(SRC_REGION)
    s = S3Store(parse_location(cloud.url(bucket).replace(f"s3://{bucket}", f"s3://{bucket}/logs")))
    try:
        assert isinstance(s, Fencer)
        assert await s.unfence() is False  # no policy at all
        what = await s.fence("test")
        assert await s.fence("test again") == what  # idempotent: one statement, replaced
        assert_fenced(cloud, bucket, SRC_REGION, f"arn:aws:s3:::{bucket}/logs/*")
        assert await s.unfence() is True
        assert policy_statements(cloud, bucket, SRC_REGION) is None
        assert await s.unfence() is False
    finally:
        await s.close()
