"""Compliance RPO reports: one data dict (data.py) rendered as JSON, CSV or PDF and signed
with the deployment's Ed25519 key (signing.py, keys.py). `render_signed` builds a signed
file; `verify` checks one with public keys (and old v1 HMAC reports with the old key)."""

from __future__ import annotations

from cloudmirror.reports.data import ReportError
from cloudmirror.reports.keys import HmacKey, PublicKey, ReportKeyError, SigningKey
from cloudmirror.reports.signing import FORMATS, Keys, Verdict, detect_format, verify

__all__ = ["FORMATS", "HmacKey", "Keys", "PublicKey", "ReportError", "ReportKeyError", "SigningKey", "Verdict",
           "detect_format", "render_signed", "verify"]


def render_signed(data: dict, fmt: str, key: SigningKey) -> bytes:
    """The signed file bytes of report `data` in `fmt` (json, csv or pdf). Raises ReportError
    for an unknown format."""
    from cloudmirror.reports import signing

    if fmt == "json":
        return signing.sign_json(data, key)
    if fmt == "csv":
        from cloudmirror.reports.render import render_csv

        return signing.sign_csv(render_csv(data), key)
    if fmt == "pdf":
        from cloudmirror.reports.pdf import render_pdf

        return signing.sign_pdf(render_pdf(data, key_id=key.id), key)
    raise ReportError(f"unknown report format {fmt!r} (use json, csv or pdf)")
