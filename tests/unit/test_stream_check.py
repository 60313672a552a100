"""Invariant 6 for streamed copies of a source whose only checksum is a CRC32C (a composite
GCS object): the size and the CRC32C of the bytes that went through are checked."""

from __future__ import annotations

import base64

import google_crc32c
import pytest

from cloudmirror.replication.transfer import StreamCheck
from cloudmirror.stores.base import ChecksumMismatch, ObjectMeta

DATA = b"composite object " * 1000


def _meta(data: bytes) -> ObjectMeta:
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    return ObjectMeta(key="k", size=len(data), md5=None, checksums={"crc32c": crc})


def _stream(check: StreamCheck, data: bytes) -> None:
    for i in range(0, len(data), 4096):
        check.update(data[i:i + 4096])


def test_the_crc32c_of_the_bytes_read_must_match_the_source():
    ok = StreamCheck(_meta(DATA))
    _stream(ok, DATA)
    ok.verify("gs://a/k -> az://b/c/k")
    bad = StreamCheck(_meta(DATA))
    _stream(bad, DATA[:-1] + b"!")
    with pytest.raises(ChecksumMismatch, match="CRC32C of bytes read") as e:
        bad.verify("gs://a/k -> az://b/c/k")
    assert e.value.code == "BadDigest"


def test_a_short_read_is_a_size_mismatch():
    check = StreamCheck(_meta(DATA))
    _stream(check, DATA[:100])
    with pytest.raises(ChecksumMismatch, match="read 100 bytes") as e:
        check.verify("where")
    assert e.value.code == "SizeMismatch"


def test_an_md5_source_computes_no_crc():
    assert StreamCheck(ObjectMeta(key="k", size=1, md5="0" * 32, checksums={"crc32c": "AAAAAA=="})).crc is None
