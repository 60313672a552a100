"""On a FIPS-mode host OpenSSL refuses MD5 for security use: `hashlib.md5()` raises unless it
says `usedforsecurity=False`. cloudmirror uses MD5 only as a checksum, so every call says so
(a copy would otherwise fail on such a host), and copies work where plain MD5 is refused."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _md5_calls_without_the_flag() -> list[str]:
    out = []
    for top in ("cloudmirror", "api", "bench"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                named_md5 = name == "new" and node.args and getattr(node.args[0], "value", None) == "md5"
                if name != "md5" and not named_md5:
                    continue
                flag = [k for k in node.keywords if k.arg == "usedforsecurity"]
                if not flag or getattr(flag[0].value, "value", True) is not False:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def test_every_md5_says_it_is_not_for_security():
    assert _md5_calls_without_the_flag() == []


async def test_a_streamed_copy_works_where_md5_for_security_is_refused(fips_md5, tmp_path):
    from cloudmirror.config import Target, WorkerSettings
    from cloudmirror.location import parse_location
    from cloudmirror.replication.transfer import Endpoint, copy_object
    from cloudmirror.stores import open_store

    with pytest.raises(ValueError, match="FIPS"):
        hashlib.md5(b"x")
    (tmp_path / "dst").mkdir()
    src, dst = (Endpoint(loc, open_store(loc)) for loc in (parse_location("memory://fips-src"),
                                                          parse_location(f"file://{tmp_path}/dst")))
    data = b"0123456789" * 100_000
    await src.store.put("k", data)
    meta = await src.store.head("k")
    await copy_object(src, dst, "k", meta, mirror="m", target=Target(url=str(dst.location)),
                      settings=WorkerSettings())  # the stream is checked by MD5 as it goes
    assert (tmp_path / "dst" / "k").read_bytes() == data
    assert (await dst.store.head("k")).md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
