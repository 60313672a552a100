"""Azure Storage Queue feed (azure-storage-queue, aio) carrying Event Grid blob events.

Queue address: ``az://ACCOUNT/QUEUE[?connection_string_env=VAR | ?endpoint=URL][&credential=...]``
(the same form and credentials as the Azure blob locations):

- ``connection_string_env=VAR``: the connection string in $VAR (Azurite, or key-based);
- else the queue endpoint (``endpoint=``, default ``https://ACCOUNT.queue.core.windows.net``;
  an emulator host without a path gets /ACCOUNT appended) and ``credential=``: ``key`` (the
  account key in $AZURE_STORAGE_KEY), ``sas`` ($AZURE_STORAGE_SAS_TOKEN) or ``default``
  (also when absent: DefaultAzureCredential).

Storage Queues have no long poll: `receive()` polls, backing off from 50 ms to 1 s, until a
message arrives or ``wait_time_s`` passes. Each message is received with
``visibility_timeout_s``; `ack` deletes it with its pop receipt; `extend` updates its
visibility, which returns a NEW pop receipt, stored back into ``FeedMessage.receipt`` (the
old one no longer deletes the message).

Message text: base64 of the event JSON (Event Grid's storage-queue handler) or the JSON
itself; see cloudmirror.events.eventgrid (the parser; this module imports nothing else of
the Event Grid code). A message that cannot be parsed gets ``error``
(dead-lettered by the intake, with the reason and how often it was dequeued). With
``max_dequeue_count`` set, a message dequeued more often than that is dead-lettered even
when it parses (a poison message that keeps failing to be recorded) -- off by default,
since a long ledger outage would otherwise dead-letter good events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from cloudmirror import metrics
from cloudmirror.events.base import FeedError, FeedMessage, MalformedEvent
from cloudmirror.events.eventgrid import decode_queue_text, parse_document
from cloudmirror.location import is_path_style_host
from cloudmirror.redact import redact
from cloudmirror.stores.azure.auth import CREDENTIALS, credential_auth, make_credential, parse_connection_string
from cloudmirror.stores.base import StoreError

log = logging.getLogger("cloudmirror.events.azure_queue")

_KIND = "azure_queue"
_MAX_BATCH = 32  # Get Messages returns at most 32
_MAX_VISIBILITY_S = 7 * 24 * 3600
_PARAMS = {"connection_string_env", "endpoint", "credential"}


@dataclass(frozen=True)
class QueueAddress:
    account: str
    queue: str
    connection_string_env: str | None = None
    endpoint: str | None = None
    credential: str | None = None  # None (= "default") | "default" | "key" | "sas"

    @property
    def queue_endpoint(self) -> str:
        """The account's queue endpoint; an emulator host without a path (an IP address or
        localhost, e.g. http://127.0.0.1:10001) gets /ACCOUNT appended (path-style)."""
        if not self.endpoint:
            return f"https://{self.account}.queue.core.windows.net"
        parts = urlsplit(self.endpoint)
        url = self.endpoint.rstrip("/")
        if not parts.path.strip("/") and is_path_style_host(parts.hostname or ""):
            url += f"/{self.account}"
        return url


def parse_queue_url(url: str) -> QueueAddress:
    """Parse ``az://ACCOUNT/QUEUE?...``. Raises ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "az" or not parts.netloc:
        raise ValueError(f"an Azure queue is az://ACCOUNT/QUEUE[?connection_string_env=VAR|endpoint=URL], got {url!r}")
    path = parts.path.strip("/")
    if not path or "/" in path:
        raise ValueError(f"an Azure queue URL names one queue after the account: az://ACCOUNT/QUEUE, got {url!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _PARAMS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} in {url!r} "
                         f"(allowed: {', '.join(sorted(_PARAMS))})")
    cred = query.get("credential") or None
    if cred is not None and cred not in CREDENTIALS:
        raise ValueError(f"credential must be one of {', '.join(sorted(CREDENTIALS))}, got {cred!r}")
    if query.get("connection_string_env") and (query.get("endpoint") or cred):
        raise ValueError("connection_string_env says everything; do not combine it with endpoint or credential")
    return QueueAddress(parts.netloc, path, query.get("connection_string_env") or None, query.get("endpoint") or None,
                        cred)


def _credential(addr: QueueAddress, *, aio: bool):
    """The SDK credential for the address (resolved like an Azure blob location's, see
    cloudmirror.stores.azure.auth). Raises ValueError naming the unset variable."""
    try:
        auth = credential_auth(addr.account, addr.queue_endpoint, addr.credential, f"az://{addr.account}/{addr.queue}")
    except StoreError as e:
        raise ValueError(str(e)) from None
    return make_credential(auth, aio=aio)


def _connection_string(addr: QueueAddress) -> str:
    """The connection string in the named variable. Raises ValueError saying what is wrong
    with it, never echoing any of it (it may hold a secret)."""
    conn = os.environ.get(addr.connection_string_env or "")
    if not conn:
        raise ValueError(f"az://{addr.account}/{addr.queue}: ${addr.connection_string_env} is not set "
                         "(it should hold the storage account's connection string)")
    try:
        parse_connection_string(conn)
    except ValueError as e:
        raise ValueError(f"az://{addr.account}/{addr.queue}: ${addr.connection_string_env}: {e}") from None
    return conn


def open_queue_client(url: str, *, aio: bool = True):
    """(QueueClient, credential to close or None) for an az:// queue URL, aio or sync."""
    addr = parse_queue_url(url)
    if aio:
        from azure.storage.queue.aio import QueueClient
    else:
        from azure.storage.queue import QueueClient
    if addr.connection_string_env:
        conn = _connection_string(addr)
        try:
            return QueueClient.from_connection_string(conn, addr.queue), None
        except ValueError as e:  # the SDK's own parser: its message is redacted, never the value
            raise ValueError(redact(f"az://{addr.account}/{addr.queue}: ${addr.connection_string_env}: {e}")) from None
    cred = _credential(addr, aio=aio)
    return QueueClient(addr.queue_endpoint, addr.queue, credential=cred), (cred if hasattr(cred, "close") else None)


# ------------------------------------------------------------------ the feed
class AzureQueueFeed:
    """One Storage Queue. Not shared between event loops."""

    def __init__(self, queue_url: str, *, wait_time_s: int = 10, visibility_timeout_s: int = 60,
                 batch: int = _MAX_BATCH, max_dequeue_count: int | None = None,
                 min_poll_interval_s: float = 0.05, max_poll_interval_s: float = 1.0):
        self.address = queue_url
        self.addr = parse_queue_url(queue_url)
        self.wait_time_s = wait_time_s
        self.visibility_timeout_s = visibility_timeout_s
        self.batch = max(1, min(batch, _MAX_BATCH))
        self.max_dequeue_count = max_dequeue_count
        self.min_poll_interval_s = min_poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self._client = None
        self._credential = None

    def _queue(self):
        if self._client is None:
            self._client, self._credential = open_queue_client(self.address, aio=True)
        return self._client

    async def _call(self, op: str, fn, *args, tolerate: tuple[str, ...] = (), **kw):
        """One queue request; Azure errors become FeedError, except the error codes in
        `tolerate`, which return None."""
        from azure.core.exceptions import AzureError

        metrics.QUEUE_REQUESTS.labels(_KIND, op).inc()
        try:
            return await fn(*args, **kw)
        except AzureError as e:
            if getattr(e, "error_code", None) in tolerate:
                log.info("%s: %s: %s", self.address, op, _reason(e))
                return None
            raise FeedError(f"{self.addr.account}/{self.addr.queue}: {op}: {_reason(e)}") from None

    async def _get_page(self) -> list:
        async def get():
            pages = self._queue().receive_messages(messages_per_page=self.batch,
                                                   visibility_timeout=self.visibility_timeout_s).by_page()
            try:
                return [m async for m in await pages.__anext__()]
            except StopAsyncIteration:
                return []

        return await self._call("GetMessages", get)

    async def receive(self) -> list[FeedMessage]:
        deadline = time.monotonic() + self.wait_time_s
        delay = self.min_poll_interval_s
        while True:
            msgs = await self._get_page()
            if msgs:
                return [self._to_feed_message(m) for m in msgs]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self.max_poll_interval_s)

    def _to_feed_message(self, m) -> FeedMessage:
        raw = m.content if isinstance(m.content, str) else (m.content or b"").decode("utf-8", "replace")
        fm = FeedMessage(message_id=m.id, body=raw, receipt=m.pop_receipt,
                         extra={"dequeue_count": m.dequeue_count})
        try:
            doc, encoding = decode_queue_text(raw)
            fm.extra["encoding"] = encoding
            if encoding == "base64":  # keep the readable JSON with dead letters
                fm.body = _json_text(doc)
            fm.events = parse_document(doc)
        except MalformedEvent as e:
            fm.error = f"{e} (dequeued {m.dequeue_count} time(s))"
            fm.events = []
            return fm
        if self.max_dequeue_count is not None and (m.dequeue_count or 0) > self.max_dequeue_count:
            fm.error = (f"poison message: dequeued {m.dequeue_count} times (limit {self.max_dequeue_count}) "
                        "without being acknowledged")
            fm.events = []
        elif not fm.events:
            fm.extra["skipped"] = "no blob create/delete events in the message"
        return fm

    async def ack(self, messages: Sequence[FeedMessage]) -> None:
        # MessageNotFound: deleted already; PopReceiptMismatch: received again by someone else
        # after its visibility ran out -- it comes back and is recorded as a duplicate
        await _gather_raising(
            self._call("DeleteMessage", self._queue().delete_message, fm.message_id, fm.receipt,
                       tolerate=("MessageNotFound", "PopReceiptMismatch"))
            for fm in messages)

    async def extend(self, messages: Sequence[FeedMessage], seconds: int) -> None:
        seconds = max(0, min(int(seconds), _MAX_VISIBILITY_S))

        async def update(fm: FeedMessage):
            resp = await self._call("UpdateMessage", self._queue().update_message, fm.message_id, fm.receipt,
                                    visibility_timeout=seconds)
            fm.receipt = resp.pop_receipt  # the old pop receipt is void now

        await _gather_raising(update(fm) for fm in messages)

    async def close(self) -> None:
        client, self._client = self._client, None
        cred, self._credential = self._credential, None
        if client is not None:
            await client.close()
        if cred is not None:
            await cred.close()


async def _gather_raising(coros) -> None:
    """Run all (each message is its own request); raise the first failure after all ended."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


def _reason(e: Exception) -> str:
    """`Code: first line of the message`, redacted (SDK messages may quote a request URL)."""
    code = getattr(e, "error_code", None)
    msg = redact((str(getattr(e, "message", None) or e).splitlines() or [""])[0])
    return f"{code}: {msg}" if code else msg


def _json_text(doc) -> str:
    import json

    return json.dumps(doc, ensure_ascii=False)
