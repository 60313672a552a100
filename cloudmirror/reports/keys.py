"""Report keys: the deployment's Ed25519 signing key, public keys to verify with, and the old
HMAC key that v1 reports were signed with (kept only to verify those).

The signing key (one for the whole deployment; every worker and API replica uses it):
- env CLOUDMIRROR_REPORT_SIGNING_KEY: the PEM text itself (PKCS#8, unencrypted; `\\n`
  escapes are accepted where an environment cannot hold newlines), else
- the file named by env CLOUDMIRROR_REPORT_SIGNING_KEY_FILE, else
  `cloudmirror-report-signing.pem` next to a SQLite ledger, else
  ~/.config/cloudmirror/report-signing.pem.
A key file must not be accessible by group or others (mode & 0o077 == 0): it is refused
with a one-line reason naming the file and `chmod 600`. A missing key file is created
(mode 0600, O_EXCL) when a report is signed or the public key is asked for, **only with a
SQLite ledger** (one host, as the demo); with PostgreSQL (workers on several hosts) a
missing key is an error naming `cloudmirror report keygen -o FILE`, so that hosts never sign
with keys of their own. Verification never creates a key.

The key id is a fingerprint of the public key: the first 16 hex digits of SHA-256 of the raw
32-byte Ed25519 public key (`openssl pkey -pubin -in pub.pem -outform DER | tail -c 32 |
sha256sum | cut -c1-16`).

The old HMAC key (v1 reports): env CLOUDMIRROR_REPORT_KEY (the secret), else the file named
by CLOUDMIRROR_REPORT_KEY_FILE, else `cloudmirror-report.key` next to a SQLite ledger, else
~/.config/cloudmirror/report.key. Never created any more.

No message here ever contains key material.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloudmirror.redact import register_secret

KEY_ENV = "CLOUDMIRROR_REPORT_SIGNING_KEY"
KEY_FILE_ENV = "CLOUDMIRROR_REPORT_SIGNING_KEY_FILE"
HMAC_KEY_ENV = "CLOUDMIRROR_REPORT_KEY"
HMAC_KEY_FILE_ENV = "CLOUDMIRROR_REPORT_KEY_FILE"
KEYGEN_HINT = "cloudmirror report keygen -o FILE"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)


class ReportKeyError(RuntimeError):
    """A report key is missing, unreadable, refused (file mode) or not a key. The message is
    one line and never holds key material."""


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey = field(repr=False)
    id: str  # fingerprint: 16 hex digits of sha256(raw public key)
    source: str

    @classmethod
    def of(cls, key: Ed25519PublicKey, source: str) -> PublicKey:
        return cls(key, key_id(key), source)

    def pem(self) -> str:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey = field(repr=False)
    public: PublicKey
    source: str  # where it came from (env or a file path): never the key itself

    @property
    def id(self) -> str:
        return self.public.id

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


@dataclass(frozen=True)
class HmacKey:
    """The old shared secret of v1 (HMAC-SHA256) reports."""

    secret: bytes = field(repr=False)
    id: str
    source: str


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def hmac_key_id(secret: bytes) -> str:
    return hashlib.sha256(b"cloudmirror report key id\0" + secret).hexdigest()[:16]


def _sqlite_dir(ledger_url: str | None) -> Path | None:
    if ledger_url and ledger_url.startswith("sqlite") and ":///" in ledger_url:
        db = ledger_url.split(":///", 1)[1].split("?", 1)[0]
        if db and db != ":memory:":
            return Path(db).expanduser().resolve().parent
    return None


def _config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "cloudmirror"


def default_key_path(ledger_url: str | None) -> Path:
    """Where the signing key file is when env CLOUDMIRROR_REPORT_SIGNING_KEY does not hold it."""
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    d = _sqlite_dir(ledger_url)
    return d / "cloudmirror-report-signing.pem" if d else _config_dir() / "report-signing.pem"


def default_hmac_key_path(ledger_url: str | None) -> Path:
    if os.environ.get(HMAC_KEY_FILE_ENV):
        return Path(os.environ[HMAC_KEY_FILE_ENV])
    d = _sqlite_dir(ledger_url)
    return d / "cloudmirror-report.key" if d else _config_dir() / "report.key"


def read_secret_file(path: Path, what: str) -> bytes:
    """The bytes of a key file that only its owner may access. Raises ReportKeyError (one
    line naming the file: missing, unreadable, or mode & 0o077 with the chmod that fixes it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ReportKeyError(f"cannot read the {what} file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if os.name == "posix" and mode & 0o077:
            raise ReportKeyError(f"refusing the {what} file {path}: mode {mode:04o} lets group or others access "
                                 f"it; run: chmod 600 {path}")
        try:
            return f.read()
        except OSError as e:
            raise ReportKeyError(f"cannot read the {what} file {path}: {e.strerror}") from None


def _private_from_pem(pem: bytes, source: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None  # the library's message is not echoed: it is about the key's bytes
    if not isinstance(key, Ed25519PrivateKey):
        raise ReportKeyError(f"{source} does not hold an unencrypted PEM Ed25519 private key (make one with "
                             f"`{KEYGEN_HINT}`)")
    return SigningKey(key, PublicKey.of(key.public_key(), source), source)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_key_file(path: Path) -> SigningKey:
    """Write a new Ed25519 private key to `path` (PEM, mode 0600). Refuses to overwrite: raises
    FileExistsError; ReportKeyError for other failures."""
    key = Ed25519PrivateKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise
    except OSError as e:
        raise ReportKeyError(f"cannot create the report signing key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        if os.name == "posix":
            os.fchmod(f.fileno(), 0o600)
        f.write(private_pem(key))
    return SigningKey(key, PublicKey.of(key.public_key(), str(path)), str(path))


def load_signing_key(ledger_url: str | None = None, *, create: bool = True) -> SigningKey:
    """The deployment's signing key (see the module docstring). With `create` a missing key
    file is created when the ledger is SQLite. Raises ReportKeyError."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return _private_from_pem(env.replace("\\n", "\n").encode(), f"env {KEY_ENV}")
    path = default_key_path(ledger_url)
    try:
        pem = read_secret_file(path, "report signing key")
    except FileNotFoundError:
        if not (create and _sqlite_dir(ledger_url)):
            why = " (it is created automatically only with a SQLite ledger; with PostgreSQL every host must " \
                  "sign with the same key)" if create else ""
            raise ReportKeyError(f"no report signing key: set {KEY_ENV} or {KEY_FILE_ENV}, or create {path} "
                                 f"with `cloudmirror report keygen -o {path}`{why}") from None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return generate_key_file(path)
        except FileExistsError:  # another process created it first
            return load_signing_key(ledger_url, create=False)
        except OSError as e:
            raise ReportKeyError(f"cannot create the report signing key file {path}: {e.strerror}") from None
    return _private_from_pem(pem, str(path))


def load_public_keys(path: Path) -> list[PublicKey]:
    """Every Ed25519 public key in a PEM file (one, or several concatenated: old keys kept
    for old reports). Raises ReportKeyError: unreadable, no public key, a private key (never
    needed to verify), or a key of another type."""
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ReportKeyError(f"cannot read the public key file {path}: {e.strerror}") from None
    blocks = list(_PEM_BLOCK.finditer(blob))
    if any(b"PRIVATE" in m.group(1) for m in blocks):
        raise ReportKeyError(f"{path} holds a private key: verifying needs only the public key "
                             "(`cloudmirror report public-key -o FILE`)")
    keys = []
    for m in blocks:
        try:
            k = serialization.load_pem_public_key(m.group(0))
        except (ValueError, UnsupportedAlgorithm):
            k = None
        if not isinstance(k, Ed25519PublicKey):
            raise ReportKeyError(f"{path} holds a PEM block that is not an Ed25519 public key")
        keys.append(PublicKey.of(k, str(path)))
    if not keys:
        raise ReportKeyError(f"{path} holds no PEM public key (`-----BEGIN PUBLIC KEY-----`)")
    return keys


def load_hmac_key(ledger_url: str | None = None) -> HmacKey:
    """The old HMAC key, to verify v1 reports only (never created). Raises ReportKeyError."""
    env = os.environ.get(HMAC_KEY_ENV, "").strip()
    if env:
        return HmacKey(env.encode(), hmac_key_id(env.encode()), f"env {HMAC_KEY_ENV}")
    path = default_hmac_key_path(ledger_url)
    try:
        secret = read_secret_file(path, "old HMAC report key").strip()
    except FileNotFoundError:
        raise ReportKeyError(f"no old HMAC report key to check this v1 report with: set {HMAC_KEY_ENV} or "
                             f"{HMAC_KEY_FILE_ENV} (looked for {path})") from None
    if not secret:
        raise ReportKeyError(f"the old HMAC report key file {path} is empty")
    register_secret(secret.decode("utf-8", "replace"))  # read from a file: redact() would not know it
    return HmacKey(secret, hmac_key_id(secret), str(path))
