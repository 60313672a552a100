"""Fencing for the S3 store (the Fencer capability): an S3Fencer that S3Store holds and
delegates to.

`fence` merges one statement, Sid `CloudmirrorFence`, into the bucket policy (other
statements are kept): Deny s3:PutObject, s3:DeleteObject, s3:DeleteObjectVersion,
s3:PutObjectTagging and s3:RestoreObject on `arn:PARTITION:s3:::BUCKET/PREFIX*` to every
principal whose `aws:PrincipalArn` is not cloudmirror's own (from STS GetCallerIdentity,
through the same session and endpoint). `unfence` removes only that statement and deletes
the policy when nothing else is left.

Limits: an assumed-role caller is exempted by its role ARN
(`arn:aws:iam::ACCOUNT:role/NAME`), which misses a role created with a path; the account's
root and principals with s3:PutBucketPolicy can still remove the fence. moto 5.2 enforces a
Deny for Principal "*" but ignores its Condition, so there the fence also stops cloudmirror's
own writes (AWS lets them through); LocalStack does not enforce bucket policies by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from cloudmirror.location import Location
from cloudmirror.stores.base import AccessDenied, FatalError, NotFound, StoreError
from cloudmirror.stores.s3.common import ClientFactory
from cloudmirror.stores.s3.errors import translate

FENCE_SID = "CloudmirrorFence"
FENCE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging",
                 "s3:RestoreObject"]
_POLICY_POWERS = "s3:GetBucketPolicy, s3:PutBucketPolicy and s3:DeleteBucketPolicy"


def principal_arn(caller_arn: str) -> str:
    """The aws:PrincipalArn of a GetCallerIdentity ARN: an assumed-role session
    (arn:aws:sts::1:assumed-role/R/s) is matched by its role (arn:aws:iam::1:role/R)."""
    parts = caller_arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}"
    return caller_arn


def fence_statement(bucket: str, prefix: str, caller_arn: str) -> dict[str, Any]:
    partition = caller_arn.split(":")[1] if caller_arn.startswith("arn:") else "aws"
    return {"Sid": FENCE_SID, "Effect": "Deny", "Principal": "*", "Action": list(FENCE_ACTIONS),
            "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}*",
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": principal_arn(caller_arn)}}}


class S3Fencer:
    """Fences `location` with the client `client()` gives (S3Store.client); `open_sts()`
    opens an STS client on the same session and endpoint (S3Store.sts_client), valid once
    `client()` has been awaited."""

    def __init__(self, location: Location, client: ClientFactory,
                 open_sts: Callable[[], AbstractAsyncContextManager[Any]]):
        self.location = location
        self.bucket = location.bucket
        self.client = client
        self.open_sts = open_sts

    async def fence(self, reason: str) -> str:
        """Deny object writes and deletes on this location to everyone but cloudmirror's own
        identity (see the module doc). Idempotent (the statement is replaced). Returns what
        was done. Raises FatalError when STS cannot name our identity, AccessDenied without
        the bucket-policy powers, BucketNotFound, RetryableError."""
        arn = await self._caller_arn()
        c = await self.client()
        statements = [s for s in await self._statements(c) if s.get("Sid") != FENCE_SID]
        statement = fence_statement(self.bucket, self.location.prefix, arn)
        await self._write_policy(c, statements + [statement], f"fence ({reason})")
        return (f"bucket policy of s3://{self.bucket}: statement {FENCE_SID} denies {', '.join(FENCE_ACTIONS)} "
                f"on {statement['Resource']} to every principal but "
                f"{statement['Condition']['StringNotEquals']['aws:PrincipalArn']}")

    async def unfence(self) -> bool:
        """Remove the CloudmirrorFence statement (the whole policy when it was the only one).
        Idempotent: False when there was no fence. Raises AccessDenied, BucketNotFound,
        RetryableError."""
        c = await self.client()
        statements = await self._statements(c)
        kept = [s for s in statements if s.get("Sid") != FENCE_SID]
        if len(kept) == len(statements):
            return False
        await self._write_policy(c, kept, "unfence")
        return True

    # ------------------------------------------------------------ helpers
    async def _statements(self, c: Any) -> list[dict[str, Any]]:
        """The bucket policy's statements ([] when the bucket has no policy)."""
        try:
            with translate(self.bucket):
                r = await c.get_bucket_policy(Bucket=self.bucket)
        except NotFound as e:
            if e.code == "NoSuchBucketPolicy":
                return []
            raise
        except AccessDenied as e:
            raise AccessDenied(f"{e} (fencing needs {_POLICY_POWERS})", code=e.code) from e
        statements = json.loads(r["Policy"]).get("Statement") or []
        return [statements] if isinstance(statements, dict) else list(statements)

    async def _write_policy(self, c: Any, statements: list[dict[str, Any]], what: str) -> None:
        try:
            with translate(self.bucket):
                if statements:
                    await c.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(
                        {"Version": "2012-10-17", "Statement": statements}))
                else:
                    await c.delete_bucket_policy(Bucket=self.bucket)
        except AccessDenied as e:
            raise AccessDenied(f"{e} ({what} needs {_POLICY_POWERS})", code=e.code) from e

    async def _caller_arn(self) -> str:
        """cloudmirror's identity from STS GetCallerIdentity (same session and endpoint)."""
        await self.client()  # makes the session (a bad profile is a StoreError)
        try:
            async with self.open_sts() as sts:
                with translate(self.bucket):
                    arn = (await sts.get_caller_identity()).get("Arn")
        except StoreError as e:
            raise FatalError(f"s3://{self.bucket}: cannot fence: STS GetCallerIdentity failed, so cloudmirror "
                             f"cannot exempt its own identity: {e}", code="StsUnavailable") from e
        if not arn:
            raise FatalError(f"s3://{self.bucket}: cannot fence: STS GetCallerIdentity returned no ARN",
                             code="StsUnavailable")
        return arn
