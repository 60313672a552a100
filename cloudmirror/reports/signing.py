"""Report signatures: a SHA-256 digest and an HMAC-SHA256 signature by the server's key.

How the signature travels (one byte changed anywhere in a file fails verification):
- JSON: the file is the envelope {"data", "digest", "key_id", "signature", "format",
  "schema"} written in one canonical form (sorted keys, 2-space indent, ASCII, trailing
  newline). `digest` is sha256 of the canonical compact JSON of `data`. Verification
  re-renders the parsed envelope and requires the very same bytes, so an edit outside the
  data (even whitespace) fails as well as one inside it.
- CSV: the bytes of the rendered CSV, followed by four trailer lines
  `# cloudmirror-signature: v1`, `# digest: sha256:HEX`, `# key_id: ID`,
  `# signature: hmac-sha256:HEX`; the digest covers every byte before the trailer.
- PDF: the bytes of the PDF, followed after `%%EOF` by one comment line
  `%cloudmirror-signature v1 digest=sha256:HEX key_id=ID signature=hmac-sha256:HEX`
  (PDF readers ignore bytes after %%EOF); the digest covers every byte before that line.

The signature is HMAC-SHA256(key, "cloudmirror-report-v1\\n{format}\\n{key_id}\\n{digest}").

The key: env CLOUDMIRROR_REPORT_KEY (the secret itself), else the file named by env
CLOUDMIRROR_REPORT_KEY_FILE, else `cloudmirror-report.key` next to a SQLite ledger, else
~/.config/cloudmirror/report.key; a missing file is created (32 random bytes, hex, mode
0600) when a report is signed, never when one is verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_ENV = "CLOUDMIRROR_REPORT_KEY"
KEY_FILE_ENV = "CLOUDMIRROR_REPORT_KEY_FILE"
ENVELOPE_FORMAT = "cloudmirror-rpo-report"
FORMATS = ("json", "csv", "pdf")

CSV_MARK = b"# cloudmirror-signature: v1\n"
_CSV_TRAILER = re.compile(rb"# cloudmirror-signature: v1\n# digest: sha256:([0-9a-f]{64})\n"
                          rb"# key_id: ([0-9a-f]{16})\n# signature: hmac-sha256:([0-9a-f]{64})\n")
PDF_MARK = b"%cloudmirror-signature v1 "
_PDF_TRAILER = re.compile(rb"%cloudmirror-signature v1 digest=sha256:([0-9a-f]{64}) key_id=([0-9a-f]{16}) "
                          rb"signature=hmac-sha256:([0-9a-f]{64})\n")


class ReportKeyError(RuntimeError):
    """No report key is available (verification never creates one)."""


@dataclass(frozen=True)
class ReportKey:
    secret: bytes
    id: str  # 16 hex digits derived from the secret; safe to publish
    source: str  # where it came from (env or a file path)


def _key_id(secret: bytes) -> str:
    return hashlib.sha256(b"cloudmirror report key id\0" + secret).hexdigest()[:16]


def default_key_path(ledger_url: str | None) -> Path:
    """Where the key file lives when no env var names the key."""
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    if ledger_url and ledger_url.startswith("sqlite") and ":///" in ledger_url:
        db = ledger_url.split(":///", 1)[1].split("?", 1)[0]
        if db and db != ":memory:":
            return Path(db).expanduser().resolve().parent / "cloudmirror-report.key"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "cloudmirror" / "report.key"


def load_key(ledger_url: str | None = None, *, create: bool = True) -> ReportKey:
    """The server's report key (see the module docstring). Raises ReportKeyError when there is
    none and `create` is False, or when the key file cannot be read or created."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        secret = env.encode()
        return ReportKey(secret, _key_id(secret), f"env {KEY_ENV}")
    path = default_key_path(ledger_url)
    try:
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
        secret = path.read_text().strip().encode()
    except FileNotFoundError:
        raise ReportKeyError(f"no report key: set {KEY_ENV} or create {path}") from None
    except OSError as e:
        raise ReportKeyError(f"cannot use the report key file {path}: {e.strerror}") from None
    if not secret:
        raise ReportKeyError(f"the report key file {path} is empty")
    return ReportKey(secret, _key_id(secret), str(path))


def canonical_data(data: dict) -> bytes:
    """The canonical bytes of the report data that the JSON digest covers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def signature(key: ReportKey, fmt: str, digest_hex: str) -> str:
    msg = f"cloudmirror-report-v1\n{fmt}\n{key.id}\n{digest_hex}".encode()
    return hmac.new(key.secret, msg, hashlib.sha256).hexdigest()


def _envelope_bytes(envelope: dict) -> bytes:
    return (json.dumps(envelope, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def sign_json(data: dict, key: ReportKey) -> bytes:
    digest = sha256_hex(canonical_data(data))
    return _envelope_bytes(dict(format=ENVELOPE_FORMAT, schema=1, data=data, digest=f"sha256:{digest}",
                                key_id=key.id, signature=f"hmac-sha256:{signature(key, 'json', digest)}"))


def sign_csv(body: bytes, key: ReportKey) -> bytes:
    if not body.endswith(b"\n"):
        body += b"\n"
    digest = sha256_hex(body)
    return body + CSV_MARK + (f"# digest: sha256:{digest}\n# key_id: {key.id}\n"
                              f"# signature: hmac-sha256:{signature(key, 'csv', digest)}\n").encode()


def sign_pdf(body: bytes, key: ReportKey) -> bytes:
    if not body.endswith(b"\n"):
        body += b"\n"
    digest = sha256_hex(body)
    return body + PDF_MARK + (f"digest=sha256:{digest} key_id={key.id} "
                              f"signature=hmac-sha256:{signature(key, 'pdf', digest)}\n").encode()


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


def _check(key: ReportKey, fmt: str, digest: str, key_id: str, sig: str) -> Verdict:
    if key_id != key.id:
        return Verdict(False, f"signed by key {key_id}, not by this server's key {key.id}", fmt, key_id, digest)
    if not hmac.compare_digest(sig, signature(key, fmt, digest)):
        return Verdict(False, "the signature does not match (the digest or key id was changed)", fmt, key_id, digest)
    return Verdict(True, f"valid {fmt} report signed by key {key.id} (digest sha256:{digest})", fmt, key_id, digest)


def _verify_json(blob: bytes, key: ReportKey) -> Verdict:
    try:
        env = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as e:
        return Verdict(False, f"not valid JSON: {e}", "json")
    fields = {"format", "schema", "data", "digest", "key_id", "signature"}
    if not isinstance(env, dict) or set(env) != fields or env["format"] != ENVELOPE_FORMAT or env["schema"] != 1:
        return Verdict(False, "not a signed cloudmirror report (unexpected envelope)", "json")
    if not isinstance(env["data"], dict) or not all(isinstance(env[k], str) for k in ("digest", "key_id", "signature")):
        return Verdict(False, "not a signed cloudmirror report (unexpected envelope)", "json")
    try:
        canonical = _envelope_bytes(env)
    except ValueError as e:
        return Verdict(False, f"not a signed cloudmirror report: {e}", "json")
    if canonical != blob:
        return Verdict(False, "the file is not byte-for-byte the signed form (it was edited)", "json")
    m = re.fullmatch(r"sha256:([0-9a-f]{64})", env["digest"])
    s = re.fullmatch(r"hmac-sha256:([0-9a-f]{64})", env["signature"])
    if not m or not s:
        return Verdict(False, "malformed digest or signature field", "json")
    digest = sha256_hex(canonical_data(env["data"]))
    if digest != m.group(1):
        return Verdict(False, "the data does not match its digest (the report was changed)", "json", env["key_id"])
    return _check(key, "json", digest, env["key_id"], s.group(1))


def _verify_trailer(blob: bytes, key: ReportKey, fmt: str, mark: bytes, pattern: re.Pattern) -> Verdict:
    at = blob.rfind(mark)
    if at < 0:
        return Verdict(False, f"no cloudmirror signature found at the end of the {fmt} file", fmt)
    m = pattern.fullmatch(blob, at)
    if not m:
        return Verdict(False, f"the signature trailer of the {fmt} file is malformed", fmt)
    body = blob[:at]
    digest = sha256_hex(body)
    if digest != m.group(1).decode():
        return Verdict(False, f"the {fmt} content does not match its digest (the report was changed)", fmt,
                       m.group(2).decode())
    return _check(key, fmt, digest, m.group(2).decode(), m.group(3).decode())


def verify(blob: bytes, key: ReportKey) -> Verdict:
    """Check a signed report of any format. Never raises for bad input: the verdict says why."""
    fmt = detect_format(blob)
    if fmt == "json":
        return _verify_json(blob, key)
    if fmt == "csv":
        return _verify_trailer(blob, key, "csv", CSV_MARK, _CSV_TRAILER)
    return _verify_trailer(blob, key, "pdf", PDF_MARK, _PDF_TRAILER)
