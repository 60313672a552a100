"""The S3 fence statement: who is exempted (aws:PrincipalArn of the caller) and where."""

from __future__ import annotations

from cloudmirror.stores.s3.fence import FENCE_SID, fence_statement, principal_arn


def test_an_assumed_role_is_exempted_by_its_role_arn():
    assert principal_arn("arn:aws:sts::123456789012:assumed-role/dr-runner/i-0abc") == \
        "arn:aws:iam::123456789012:role/dr-runner"
    assert principal_arn("arn:aws:iam::123456789012:user/cm") == "arn:aws:iam::123456789012:user/cm"


def test_the_statement_follows_the_callers_partition_and_the_prefix():
    st = fence_statement("photos", "2026/", "arn:aws-cn:iam::123456789012:user/cm")
    assert st["Sid"] == FENCE_SID and st["Effect"] == "Deny" and st["Principal"] == "*"
    assert st["Resource"] == "arn:aws-cn:s3:::photos/2026/*"
    assert st["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": "arn:aws-cn:iam::123456789012:user/cm"}}
    assert "s3:PutObject" in st["Action"] and "s3:DeleteObjectVersion" in st["Action"]
