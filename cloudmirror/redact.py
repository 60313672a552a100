"""Secrets out of text: every error, log line and API answer passes through `redact` before it
is stored, written or sent (DESIGN.md invariant 8). A leaf: it imports nothing of cloudmirror.

What is replaced by ``[redacted]`` (the name of a field is kept, its value is not):

- the values of environment variables that hold secrets: a name containing KEY, SECRET,
  TOKEN, PASSWORD, PASSWD, CREDENTIAL, CONNECTION_STRING, CONN, SAS or SIGNATURE (any case;
  names ending _FILE, _PATH, _DIR or _HOME and GOOGLE_APPLICATION_CREDENTIALS name files, not
  secrets); any variable whose value carries a credential (a connection string with a key or
  SAS, a URL with a password, a PEM private key); and every CLOUDMIRROR_* variable (the only
  ones connection_string_env may name; `register_env_prefix` adds another prefix) except
  cloudmirror's own settings (CONFIG, LEDGER, STATE_DIR, ALLOW_*, ...) and values that are
  paths, password-free URLs, numbers or switches. Values shorter than 8 characters or all
  digits are left alone (they would shred ordinary text). Also caught: the value URL- or JSON-escaped, each
  credential field inside it, each line of a multi-line value, and anything that starts
  with the value's first 12 characters (a message cut in the middle of a secret);
- connection-string fields: AccountKey=, SharedAccessSignature=, SharedAccessKey=, Password=;
- SAS and presigned-URL parameters: sig=, signature=, X-Amz-Signature=, X-Amz-Credential=,
  X-Amz-Security-Token=, X-Goog-Signature=, X-Goog-Credential=, token= (and access_token= ...),
  code= after ? or &;
- Authorization / Proxy-Authorization header values, ``Bearer <token>``, cloudmirror API keys
  (``cm_`` + 43 characters; the 10-character display prefix is kept);
- quoted secret fields of JSON or dict reprs ("private_key": "...", 'accountkey': '...');
- the password of a URL (``scheme://user:[redacted]@host``), a long bare userinfo;
- PEM private key blocks (also one cut short).

Cost: the patterns are compiled once; the environment's secrets are collected again only when
os.environ changes (another mapping, another size, or a secret-bearing variable's value).
About 10 us for a 200-character message (bench figure in docs/security.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any, overload
from urllib.parse import quote

MARK = "[redacted]"
MIN_SECRET_LEN = 8  # shorter values ("true", "testing") would shred ordinary text
PREFIX_LEN = 12  # a text holding a secret's first 12 characters holds (part of) the secret

SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|CONNECTION_STRING|CONN|SAS|SIGNATURE", re.I)
_FILE_NAME = re.compile(r"(_FILE|_PATH|_DIR|_HOME)$|^GOOGLE_APPLICATION_CREDENTIALS$", re.I)

# ---------------------------------------------------------------- fixed patterns
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(?:.*?-----END \1PRIVATE KEY-----|.*)", re.S)
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|x-ms-copy-source-authorization)"
                          r"([\"']?\s*[:=]\s*[\"']?)([^\"'\r\n]+)")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_API_KEY = re.compile(r"(?<![A-Za-z0-9])(cm_[A-Za-z0-9_-]{7})[A-Za-z0-9_-]{13,}")
_CONN_FIELD = re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd|ClientSecret)"
                         r"(\s*=\s*)[^;\s'\"]+")
_QUERY = re.compile(r"(?i)(?<![\w./-])"
                    r"(sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
                    r"x-goog-credential|token|access_token|refresh_token|id_token|sas_token|api_key|apikey|"
                    r"password|passwd|client_secret|secret)(=)(?!(?:None|null|true|false)\b)[^&\s'\"#;,:)]{3,}")
_QUERY_CODE = re.compile(r"(?i)(?<=[?&])(code)(=)[^&\s'\"#;,)]+")
_QUOTED_FIELD = re.compile(
    r"(?i)(?<![\w-])([\"']?)(private_key|private_key_id|client_secret|password|passwd|secret|secret_access_key|"
    r"aws_secret_access_key|session_token|aws_session_token|access_token|refresh_token|id_token|account_key|"
    r"accountkey|sas_token|sharedaccesssignature|sharedaccesskey|connection_string|token|authorization)\1"
    r"(\s*[:=]\s*)([\"'])(?:\\.|(?!\4).)*\4")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@'\"]*):([^/\s@'\"]+)@")
_BARE_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@'\"]{16,}@")

# credential fields inside an environment value (their values are secrets of their own)
_VALUE_FIELDS = re.compile(
    r"(?i)(?:\b(?:AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd|ClientSecret)\s*=\s*([^;\s]+))"
    r"|(?:(?<=[?&;])(?:sig|signature|x-amz-signature|x-amz-security-token|token)=([^&\s;]+))"
    r"|(?:[a-z][a-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@)")
_STRUCTURED = re.compile(r"[\s;=&:%\\]")  # in a value: it has parts (a secret of its own each)
_LOOKS_SECRET = re.compile(r"(?i)AccountKey=|SharedAccessSignature=|SharedAccessKey=|[?&;]sig=|PRIVATE KEY-----"
                           r"|://[^/\s:@]*:[^/\s@]+@")


# cheap tests that say when a pattern may match (a case-insensitive scan costs 5-25 us each)
_CONN_HINTS = ("accountkey", "sharedaccess", "password", "pwd", "clientsecret")
_QUERY_HINTS = tuple(f"{n}=" for n in (
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "token", "access_token", "refresh_token", "id_token", "sas_token", "api_key", "apikey",
    "password", "passwd", "client_secret", "secret"))
_FIELD_HINT = re.compile(r"(?:key|secret|passw\w*|token|string|signature|authorization)[\"']?\s*[:=]\s*[\"']")


def _sub_all(text: str) -> str:
    """The fixed patterns, each only when a substring test says it may match: most messages
    hold none of the words."""
    low = text.lower()
    if "private key-----" in low:
        text = _PEM.sub(f"-----BEGIN PRIVATE KEY-----{MARK}", text)
    if "authorization" in low:
        text = _AUTH_HEADER.sub(rf"\1\2{MARK}", text)
    if "bearer" in low:
        text = _BEARER.sub(rf"\1\2{MARK}", text)
    if "cm_" in text:
        text = _API_KEY.sub(rf"\1{MARK}", text)
    if "=" in text:
        if any(w in low for w in _CONN_HINTS):
            text = _CONN_FIELD.sub(rf"\1\2{MARK}", text)
        if any(w in low for w in _QUERY_HINTS):
            text = _QUERY.sub(rf"\1\2{MARK}", text)
        if "code=" in low:
            text = _QUERY_CODE.sub(rf"\1\2{MARK}", text)
    if ("'" in text or '"' in text) and _FIELD_HINT.search(low):
        text = _QUOTED_FIELD.sub(rf"\1\2\1\3\4{MARK}\4", text)
    if "@" in text and "://" in text:
        text = _USERINFO.sub(rf"\1\2:{MARK}@", text)
        text = _BARE_USERINFO.sub(rf"\1{MARK}@", text)
    return text


# ---------------------------------------------------------------- the environment's secrets
def _usable(value: str) -> bool:
    v = value.strip()
    return len(v) >= MIN_SECRET_LEN and not v.isdigit() and v != MARK


# Variables under these prefixes hold credentials (the security policy's env_prefix: the only
# ones connection_string_env may name), whatever their names say; see register_env_prefix.
_CREDENTIAL_PREFIXES: set[str] = {"CLOUDMIRROR_"}
# ... except cloudmirror's own settings, which are paths, URLs or switches
_OWN_SETTINGS = re.compile(r"^CLOUDMIRROR_(CONFIG|LEDGER|STATE_DIR|ALLOW_\w*|TEST_ARTIFACTS|TEST_PG|CHROMIUM)$")
_PLAIN_VALUE = re.compile(r"^(?:[/.~]\S*|[a-z][a-z0-9+.-]*://[^\s:@/]+(?:[:/]\S*)?|\d+|true|false|yes|no|on|off)$",
                          re.I)


def register_env_prefix(prefix: str) -> None:
    """Treat every variable starting with `prefix` as a credential (cloudmirror's own settings
    apart); call it with the security policy's env_prefix when it is not CLOUDMIRROR_."""
    if prefix:
        _CREDENTIAL_PREFIXES.add(prefix)
        _ENV.add(())


def env_secret_names(environ: Any = None) -> list[str]:
    """The names of the variables whose values are treated as secrets."""
    env = os.environ if environ is None else environ
    out = []
    for name, value in env.items():
        if _FILE_NAME.search(name):
            continue
        if SECRET_NAME.search(name) or _LOOKS_SECRET.search(value):
            out.append(name)
        elif (any(name.startswith(p) for p in _CREDENTIAL_PREFIXES) and not _OWN_SETTINGS.match(name)
              and not _PLAIN_VALUE.match(value.strip())):
            out.append(name)
    return sorted(out)


def _secrets_of(value: str) -> set[str]:
    """A secret value, the credential fields and lines inside it, and their escaped forms."""
    found = {value.strip()}
    for m in _VALUE_FIELDS.finditer(value):
        found.add(next(g for g in m.groups() if g is not None))
    if "\n" in value.strip():
        found.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    out = set()
    for s in found:
        if not _usable(s):
            continue
        out.add(s)
        out.add(quote(s, safe=""))
        out.add(json.dumps(s)[1:-1])
        out.add(repr(s)[1:-1])
    return {s for s in out if _usable(s)}


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    values = sorted(set(secrets), key=len, reverse=True)
    if not values:
        return None
    exact = [re.escape(v) for v in values]
    # a secret cut short (a message truncated in its middle): anything that starts with an
    # opaque secret's first characters (not a structured value: `Name=...;...`, `https://`)
    prefixes = sorted({re.escape(v[:PREFIX_LEN]) for v in values
                       if len(v) > PREFIX_LEN and not _STRUCTURED.search(v.rstrip("="))})
    return re.compile("|".join(exact + [p + r"[^\s'\"]*" for p in prefixes]))


class _EnvSecrets:
    """The environment's secrets as one compiled pattern, rebuilt when the environment changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._env_id = -1
        self._env_len = -1
        self._keys: tuple[Any, ...] = ()  # the secret variables' keys in os.environ's own dict
        self._values: tuple[Any, ...] = ()
        self._extra: frozenset[str] = frozenset()
        self.pattern: re.Pattern[str] | None = None

    def current(self) -> re.Pattern[str] | None:
        env = os.environ
        # os.environ's own dict (bytes on POSIX) answers the freshness test in ~0.5 us
        raw = getattr(env, "_data", env)
        if (id(env) == self._env_id and len(raw) == self._env_len
                and tuple(map(raw.get, self._keys)) == self._values):
            return self.pattern
        with self._lock:
            names = tuple(env_secret_names(env))
            encode = getattr(env, "encodekey", None)
            keys = tuple(map(encode, names)) if raw is not env and encode else names
            values = tuple(map(raw.get, keys))
            secrets = set(self._extra)
            for name in names:
                v = env.get(name)
                if v:
                    secrets |= _secrets_of(v)
            self.pattern = _pattern(secrets)
            self._keys, self._values = keys, values
            self._env_id, self._env_len = id(env), len(raw)
            return self.pattern

    def add(self, secrets: Iterable[str]) -> None:
        """Secrets that do not live in the environment (a key read from a file)."""
        with self._lock:
            self._extra = self._extra | {s for v in secrets if v for s in _secrets_of(v)}
            self._env_id = -1


_ENV = _EnvSecrets()


def register_secret(*values: str) -> None:
    """Redact these values too from now on (a secret read from a file, a generated key)."""
    _ENV.add(values)


# ---------------------------------------------------------------- the API
@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...


def redact(text: str | None) -> str | None:
    """`text` with every secret replaced by [redacted]; None stays None. Never raises."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    pattern = _ENV.current()
    if pattern is not None:
        text = pattern.sub(MARK, text)
    return _sub_all(text)


def redact_obj(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists, tuples) redacted; a copy."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_obj(v) for v in value)
    return value


def error_text(e: BaseException, limit: int = 2000) -> str:
    """How a failure is stored: ``TypeName: message``, redacted, then cut to `limit`."""
    return redact(f"{type(e).__name__}: {e}")[:limit]


# ---------------------------------------------------------------- logging
def scrub_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its message (msg % args), exception and stack text. A
    record whose text changed keeps only the redacted text (args cleared; exc_info dropped so
    no handler can render the original exception again)."""
    if getattr(record, "_cm_redacted", False):
        return
    record._cm_redacted = True  # type: ignore[attr-defined]
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: redact the parts the handler prints
        record.msg = redact(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(redact(str(a)) for a in record.args)
        elif record.args:
            record.args = (redact(str(record.args)),)
    else:
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        clean = redact(record.exc_text)
        if clean != record.exc_text:
            record.exc_text, record.exc_info = clean, None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter (for handlers) that redacts every record it passes; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


_FACTORY_LOCK = threading.Lock()


def _wrap_factory() -> None:
    with _FACTORY_LOCK:
        old = logging.getLogRecordFactory()
        if getattr(old, "_cm_redacting", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old(*args, **kwargs)
            scrub_record(record)
            return record

        factory._cm_redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Redact every log record of this process: records are redacted when they are made
    (whatever logger, whatever handler, propagated or not), and a RedactingFilter is put on
    `handlers` (default: the root logger's) for records made elsewhere. Idempotent."""
    _wrap_factory()
    for h in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
