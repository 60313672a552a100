"""Report signatures: a SHA-256 digest signed with Ed25519 by the deployment's key (v2), so
that anyone holding the public key can verify a report and nobody without the private key
can make one. Old v1 reports (HMAC-SHA256 with a shared secret) still verify with that
secret, and say so: HMAC is not third-party verifiable (whoever can check it can forge it).

How the signature travels (one byte changed anywhere in a file fails verification):
- JSON: the file is the envelope {"data", "digest", "key_id", "signature", "format",
  "schema"} written in one canonical form (sorted keys, 2-space indent, ASCII, trailing
  newline); `schema` is 2 (v1: 1). `digest` is sha256 of the canonical compact JSON of
  `data`. Verification re-renders the parsed envelope and requires the very same bytes, so
  an edit outside the data (even whitespace) fails as well as one inside it.
- CSV: the bytes of the rendered CSV, followed by four trailer lines
  `# cloudmirror-signature: v2`, `# digest: sha256:HEX`, `# key_id: ID`,
  `# signature: ed25519:HEX`; the digest covers every byte before the trailer.
- PDF: the bytes of the PDF, followed after `%%EOF` by one comment line
  `%cloudmirror-signature v2 digest=sha256:HEX key_id=ID signature=ed25519:HEX`
  (PDF readers ignore bytes after %%EOF); the digest covers every byte before that line.

v2 signature: Ed25519 (128 hex digits) over the bytes
"cloudmirror-report-v2\\n{format}\\n{key_id}\\n{digest hex}" (format: json, csv or pdf).
v1 signature: HMAC-SHA256(secret, "cloudmirror-report-v1\\n{format}\\n{key_id}\\n{digest hex}"),
`hmac-sha256:HEX` in the same places with `v1` marks and envelope schema 1.
Keys: reports.keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from cloudmirror.reports.keys import HmacKey, PublicKey, ReportKeyError, SigningKey

ENVELOPE_FORMAT = "cloudmirror-rpo-report"
FORMATS = ("json", "csv", "pdf")
ALGORITHMS = {1: "hmac-sha256", 2: "ed25519"}
_SIG_HEX = {1: 64, 2: 128}

CSV_MARK = b"# cloudmirror-signature: v"
_CSV_TRAILER = re.compile(rb"# cloudmirror-signature: v([12])\n# digest: sha256:([0-9a-f]{64})\n"
                          rb"# key_id: ([0-9a-f]{16})\n# signature: (hmac-sha256|ed25519):([0-9a-f]+)\n")
PDF_MARK = b"%cloudmirror-signature v"
_PDF_TRAILER = re.compile(rb"%cloudmirror-signature v([12]) digest=sha256:([0-9a-f]{64}) key_id=([0-9a-f]{16}) "
                          rb"signature=(hmac-sha256|ed25519):([0-9a-f]+)\n")


def canonical_data(data: dict) -> bytes:
    """The canonical bytes of the report data that the JSON digest covers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _message(version: int, fmt: str, key_id: str, digest_hex: str) -> bytes:
    return f"cloudmirror-report-v{version}\n{fmt}\n{key_id}\n{digest_hex}".encode()


def signature(key: SigningKey, fmt: str, digest_hex: str) -> str:
    """`ed25519:HEX` of a v2 report's digest."""
    return "ed25519:" + key.sign(_message(2, fmt, key.id, digest_hex)).hex()


def hmac_signature(key: HmacKey, fmt: str, digest_hex: str) -> str:
    """The v1 signature (HMAC-SHA256, hex) -- verification of old reports, and tests."""
    return hmac.new(key.secret, _message(1, fmt, key.id, digest_hex), hashlib.sha256).hexdigest()


def _envelope_bytes(envelope: dict) -> bytes:
    return (json.dumps(envelope, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def sign_json(data: dict, key: SigningKey) -> bytes:
    digest = sha256_hex(canonical_data(data))
    return _envelope_bytes(dict(format=ENVELOPE_FORMAT, schema=2, data=data, digest=f"sha256:{digest}",
                                key_id=key.id, signature=signature(key, "json", digest)))


def sign_csv(body: bytes, key: SigningKey) -> bytes:
    if not body.endswith(b"\n"):
        body += b"\n"
    digest = sha256_hex(body)
    return body + (f"# cloudmirror-signature: v2\n# digest: sha256:{digest}\n# key_id: {key.id}\n"
                   f"# signature: {signature(key, 'csv', digest)}\n").encode()


def sign_pdf(body: bytes, key: SigningKey) -> bytes:
    if not body.endswith(b"\n"):
        body += b"\n"
    digest = sha256_hex(body)
    return body + (f"%cloudmirror-signature v2 digest=sha256:{digest} key_id={key.id} "
                   f"signature={signature(key, 'pdf', digest)}\n").encode()


def detect_format(blob: bytes) -> str:
    if blob.startswith(b"%PDF-"):
        return "pdf"
    if blob.lstrip()[:1] == b"{":
        return "json"
    return "csv"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # one line
    fmt: str | None = None
    key_id: str | None = None
    digest: str | None = None
    version: int | None = None  # 2: Ed25519, 1: HMAC


@dataclass(frozen=True)
class Keys:
    """What a verification may use: public keys (v2), and a way to get the old HMAC key (v1;
    called only for a v1 report, may raise ReportKeyError)."""

    public: tuple[PublicKey, ...] = ()
    hmac: Callable[[], HmacKey] | None = None

    @classmethod
    def of(cls, public: Iterable[PublicKey] = (), hmac: Callable[[], HmacKey] | None = None) -> Keys:
        return cls(tuple(public), hmac)


HMAC_NOTE = "HMAC is a shared secret, not third-party verifiable: whoever can check it could have made it"


def _check(keys: Keys, version: int, fmt: str, digest: str, key_id: str, sig_hex: str) -> Verdict:
    def bad(reason: str) -> Verdict:
        return Verdict(False, reason, fmt, key_id, digest, version)

    if version == 1:
        if keys.hmac is None:
            return bad("an old HMAC (v1) report: it can only be checked with the old HMAC report key")
        try:
            key = keys.hmac()
        except ReportKeyError as e:
            return bad(f"an old HMAC (v1) report: {e}")
        if key_id != key.id:
            return bad(f"an HMAC (v1) report signed by key {key_id}, not by the old HMAC key {key.id}")
        if not hmac.compare_digest(sig_hex, hmac_signature(key, fmt, digest)):
            return bad("the HMAC (v1) signature does not match (the digest or key id was changed)")
        return Verdict(True, f"valid {fmt} report, HMAC-SHA256 (v1) by key {key.id} (digest sha256:{digest}); "
                             f"{HMAC_NOTE}", fmt, key_id, digest, 1)
    match = [k for k in keys.public if k.id == key_id]
    if not match:
        known = ", ".join(k.id for k in keys.public) or "none given"
        return bad(f"signed by key {key_id}, not by the given public key ({known})")
    try:
        match[0].key.verify(bytes.fromhex(sig_hex), _message(2, fmt, key_id, digest))
    except (InvalidSignature, ValueError):
        return bad("the Ed25519 signature does not match (the report, its digest or its key id was changed)")
    return Verdict(True, f"valid {fmt} report, Ed25519 signature by key {key_id} (digest sha256:{digest})",
                   fmt, key_id, digest, 2)


def _verify_json(blob: bytes, keys: Keys) -> Verdict:
    try:
        env = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as e:
        return Verdict(False, f"not valid JSON: {e}".splitlines()[0], "json")
    fields = {"format", "schema", "data", "digest", "key_id", "signature"}
    if (not isinstance(env, dict) or set(env) != fields or env["format"] != ENVELOPE_FORMAT
            or type(env["schema"]) is not int or env["schema"] not in ALGORITHMS):
        return Verdict(False, "not a signed cloudmirror report (unexpected envelope)", "json")
    if not isinstance(env["data"], dict) or not all(isinstance(env[k], str) for k in ("digest", "key_id", "signature")):
        return Verdict(False, "not a signed cloudmirror report (unexpected envelope)", "json")
    try:
        canonical = _envelope_bytes(env)
    except ValueError as e:
        return Verdict(False, f"not a signed cloudmirror report: {e}", "json")
    if canonical != blob:
        return Verdict(False, "the file is not byte-for-byte the signed form (it was edited)", "json")
    version = env["schema"]
    m = re.fullmatch(r"sha256:([0-9a-f]{64})", env["digest"])
    s = re.fullmatch(rf"{ALGORITHMS[version]}:([0-9a-f]{{{_SIG_HEX[version]}}})", env["signature"])
    if not m or not s or not re.fullmatch(r"[0-9a-f]{16}", env["key_id"]):
        return Verdict(False, "malformed digest, key id or signature field", "json")
    digest = sha256_hex(canonical_data(env["data"]))
    if digest != m.group(1):
        return Verdict(False, "the data does not match its digest (the report was changed)", "json", env["key_id"])
    return _check(keys, version, "json", digest, env["key_id"], s.group(1))


def _verify_trailer(blob: bytes, keys: Keys, fmt: str, mark: bytes, pattern: re.Pattern) -> Verdict:
    at = blob.rfind(mark)
    if at < 0:
        return Verdict(False, f"no cloudmirror signature found at the end of the {fmt} file", fmt)
    m = pattern.fullmatch(blob, at)
    if not m:
        return Verdict(False, f"the signature trailer of the {fmt} file is malformed", fmt)
    version, algorithm, sig = int(m.group(1)), m.group(4).decode(), m.group(5).decode()
    if algorithm != ALGORITHMS[version] or len(sig) != _SIG_HEX[version]:
        return Verdict(False, f"the signature trailer of the {fmt} file is malformed", fmt)
    body, key_id = blob[:at], m.group(3).decode()
    digest = sha256_hex(body)
    if digest != m.group(2).decode():
        return Verdict(False, f"the {fmt} content does not match its digest (the report was changed)", fmt, key_id)
    return _check(keys, version, fmt, digest, key_id, sig)


def verify(blob: bytes, keys: Keys) -> Verdict:
    """Check a signed report of any format (v2 Ed25519 with `keys.public`, v1 HMAC with
    `keys.hmac`). Never raises for bad input: the verdict says why, in one line."""
    fmt = detect_format(blob)
    if fmt == "json":
        return _verify_json(blob, keys)
    if fmt == "csv":
        return _verify_trailer(blob, keys, "csv", CSV_MARK, _CSV_TRAILER)
    return _verify_trailer(blob, keys, "pdf", PDF_MARK, _PDF_TRAILER)
