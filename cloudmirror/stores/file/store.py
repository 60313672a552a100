"""A local disk or NAS mount as a store: file:///abs/root[?mode=0640].

Object `key` is the file `root/key`; its metadata (content headers, user metadata, tags,
MD5/etag) is a JSON sidecar `root/.cloudmirror-meta/<key>.json`, which listings skip.
Writes are atomic (temp file in the same directory fd, fsync, rename within it), reads and
writes stream in chunks, and blocking I/O runs in worker threads. A sidecar records the
inode, size and mtime of the file it describes; one that no longer matches (a crash between
the two renames, or a file changed behind our back) is ignored, so the etag is then unknown.

Symbolic links are never followed (safepath.py): a root whose path holds a link is refused
(FatalError SymlinkRoot), listings skip links, a get/head through or of a link is NotFound,
a put/delete through or of one is refused (FatalError SymlinkRefused). Files (and sidecars)
are written with the location's `mode` (default 0640) and the directories the store makes
with rwx for the owner and r-x for whom the mode gives any access (0750 by default), both
set with fchmod whatever the umask; existing directories and the root keep their modes.

Keys must be relative paths of non-empty segments other than '.'/'..', each at most 250
UTF-8 bytes, not starting with '.cloudmirror-'; other keys raise FatalError.
No versioning: version_id is always None. No server-side copy.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import cloudmirror.stores.file.safepath as safepath
from cloudmirror import metrics
from cloudmirror.location import Location
from cloudmirror.stores.base import (
    AccessDenied,
    BucketNotFound,
    DeleteOptions,
    FatalError,
    GetOptions,
    GetResult,
    HeadOptions,
    ListOptions,
    NotFound,
    ObjectMeta,
    PreconditionFailed,
    PutOptions,
    PutResult,
    RetryableError,
    StoreError,
    verify_written,
)
from cloudmirror.stores.file.handles import Listing, Upload, temp_in
from cloudmirror.stores.file.listing import META_DIR, RESERVED, read_sidecar
from cloudmirror.stores.file.safepath import SymlinkFound

DEFAULT_MODE = 0o640
MAX_SEGMENT_BYTES = 250  # NAME_MAX 255 minus the sidecar's ".json"
_HEADERS = ("content_type", "content_encoding", "content_disposition", "content_language", "cache_control")
_RETRYABLE_ERRNO = {errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EBUSY}


class FileStore:
    """Store over a directory tree. Every call is safe to run concurrently."""

    def __init__(self, location: Location):
        self.location = location
        self.root = location.bucket
        mode = location.param("mode")
        self.mode = DEFAULT_MODE if mode is None else int(mode, 8)

    # ------------------------------------------------------------ paths and errors
    def _where(self, key: str | None) -> str:
        return f"file://{self.root}/{key}" if key else f"file://{self.root}"

    def _segments(self, key: str) -> list[str]:
        """The key's path segments. Raises FatalError for keys that cannot be files under root
        (empty, absolute, '..', too long a segment, reserved names)."""
        segments = key.split("/")
        bad = (not key or "\x00" in key or key.startswith("/") or key.endswith("/")
               or any(s in ("", ".", "..") or s.startswith(RESERVED) for s in segments))
        if bad:
            raise FatalError(f"{self._where(key)}: InvalidKey: key cannot be stored as a file under the root "
                             "(empty, absolute, '.'/'..'/empty segments, trailing '/', or a reserved name)",
                             code="InvalidKey")
        if any(len(s.encode()) > MAX_SEGMENT_BYTES for s in segments):
            raise FatalError(f"{self._where(key)}: KeyTooLong: a path segment is longer than "
                             f"{MAX_SEGMENT_BYTES} bytes", code="KeyTooLong")
        return segments

    def _open_root(self) -> int:
        """The root's fd, opened once per operation without following any link."""
        try:
            return safepath.open_root(self.root)
        except SymlinkFound as e:
            raise FatalError(f"{self._where(None)}: SymlinkRoot: {e.filename} is a symbolic link, which is never "
                             f"followed; configure the real path ({os.path.realpath(self.root)})",
                             code="SymlinkRoot") from None
        except (FileNotFoundError, NotADirectoryError) as e:
            raise BucketNotFound(f"{self._where(None)}: NoSuchBucket: root directory does not exist",
                                 code="NoSuchBucket") from e

    @contextmanager
    def _root(self) -> Iterator[int]:
        fd = self._open_root()
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _translate(self, key: str | None, *, write: bool = False) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SymlinkFound as e:
            if write:
                raise FatalError(f"{self._where(key)}: SymlinkRefused: {e.filename} is a symbolic link, which is "
                                 "never followed or replaced", code="SymlinkRefused") from None
            raise NotFound(f"{self._where(key)}: NoSuchKey ({e.filename} is a symbolic link, never followed)",
                           code="NoSuchKey") from None
        except FileNotFoundError as e:
            raise NotFound(f"{self._where(key)}: NoSuchKey", code="NoSuchKey") from e
        except PermissionError as e:
            raise AccessDenied(f"{self._where(key)}: AccessDenied: {e.strerror}", code="AccessDenied") from e
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as e:
            raise FatalError(f"{self._where(key)}: KeyConflict: the key collides with an existing object or "
                             f"prefix ({e.strerror})", code="KeyConflict") from e
        except OSError as e:
            cls = RetryableError if e.errno in _RETRYABLE_ERRNO else FatalError
            code = errno.errorcode.get(e.errno or 0, "OSError")
            raise cls(f"{self._where(key)}: {code}: {e.strerror or e}", code=code) from e

    # ------------------------------------------------------------ metadata
    def _sidecar(self, root_fd: int, segs: list[str], st: os.stat_result) -> dict[str, Any]:
        try:
            chain = safepath.walk(root_fd, [META_DIR, *segs[:-1]])
        except OSError:
            return {}
        with chain:
            return read_sidecar(chain.fd, segs[-1] + ".json", st)

    def _meta(self, key: str, st: os.stat_result, side: dict[str, Any], *, full: bool,
              include_tags: bool = False) -> ObjectMeta:
        tags = side.get("tags") or {}
        m = ObjectMeta(key=key, size=st.st_size, etag=side.get("etag"), md5=side.get("md5"),
                       last_modified=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc),
                       storage_class=side.get("storage_class"), tag_count=len(tags))
        if full:
            for h in _HEADERS:
                setattr(m, h, side.get(h))
            m.metadata = dict(side.get("metadata") or {})
            m.tags = dict(tags) if include_tags else None
        return m

    # ------------------------------------------------------------ reads
    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's tags (from the sidecar). Raises NotFound."""
        return dict((await self.head(key, HeadOptions(include_tags=True))).tags or {})

    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Raises NotFound (also for a link or a path through one), BucketNotFound,
        AccessDenied, FatalError (invalid key, a root path through a link)."""
        opts = opts or HeadOptions()
        metrics.storage_request("file", "head")
        segs = self._segments(key)

        def run() -> ObjectMeta:
            with self._root() as root_fd, safepath.walk(root_fd, segs[:-1]) as chain:
                st = safepath.lstat_file(chain.fd, segs[-1], key)
                side = self._sidecar(root_fd, segs, st)
            return self._meta(key, st, side, full=True, include_tags=opts.include_tags)

        with self._translate(key):
            try:
                return await asyncio.to_thread(run)
            except IsADirectoryError:
                raise NotFound(f"{self._where(key)}: NoSuchKey (not a regular file)", code="NoSuchKey") from None

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Streams the file in chunks of opts.chunk_size. Raises NotFound (also for a link or a
        path through one), PreconditionFailed (if_match differs from the etag, or it is unknown)."""
        opts = opts or GetOptions()
        metrics.storage_request("file", "get")
        segs = self._segments(key)

        def run() -> tuple[Any, ObjectMeta]:
            with self._root() as root_fd, safepath.walk(root_fd, segs[:-1]) as chain:
                f = os.fdopen(safepath.open_file(chain.fd, segs[-1], key), "rb")
                try:
                    st = os.fstat(f.fileno())
                    meta = self._meta(key, st, self._sidecar(root_fd, segs, st), full=True)
                    if opts.if_match and opts.if_match.strip('"') != meta.etag:
                        raise PreconditionFailed(f"{self._where(key)}: PreconditionFailed: etag is {meta.etag}, "
                                                 f"not {opts.if_match}", code="PreconditionFailed")
                    return f, meta
                except BaseException:
                    f.close()
                    raise

        with self._translate(key):
            try:
                f, meta = await asyncio.to_thread(run)
            except IsADirectoryError:
                raise NotFound(f"{self._where(key)}: NoSuchKey (not a regular file)", code="NoSuchKey") from None
        return GetResult(meta=meta, body=self._read(f, key, max(1, opts.chunk_size)), release=f.close)

    async def _read(self, f: Any, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            while True:
                with self._translate(key):
                    chunk = await asyncio.to_thread(f.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    async def list(self, opts: ListOptions | None = None) -> AsyncIterator[ObjectMeta]:
        """Yields regular files under opts.prefix in key order (no user metadata; links and
        other special files are skipped), a page of opts.page_size at a time. The tree is
        walked lazily, one directory level at a time, from one opening of the root."""
        opts = opts or ListOptions()
        with self._translate(None):
            root_fd = await asyncio.to_thread(self._open_root)
        listing = Listing(root_fd, opts.prefix, opts.start_after)
        size = max(1, opts.page_size)
        try:
            while True:
                metrics.storage_request("file", "list")
                with self._translate(None):
                    batch = await asyncio.to_thread(listing.page, size)
                for key, st, side in batch:
                    yield self._meta(key, st, side, full=False)
                if len(batch) < size:
                    return
        finally:
            await asyncio.shield(asyncio.to_thread(listing.close))

    # ------------------------------------------------------------ writes
    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """Atomic write: nothing is visible until the whole body is on disk and verified.
        Raises ChecksumMismatch (nothing written) when opts.md5 / opts.size disagree,
        BucketNotFound when the root is missing, FatalError for invalid/conflicting keys and
        for a path that is or passes through a symbolic link (nothing written)."""
        opts = opts or PutOptions()
        metrics.storage_request("file", "put")
        segs = self._segments(key)
        h = hashlib.md5(usedforsecurity=False)  # a checksum, not security
        with self._translate(key, write=True):
            up = await asyncio.to_thread(self._open_temp, segs)
        try:
            size = 0
            with self._translate(key, write=True):
                if isinstance(body, (bytes, bytearray, memoryview)):
                    size = await asyncio.to_thread(up.write, h, bytes(body))
                else:
                    async for chunk in body:
                        size += await asyncio.to_thread(up.write, h, chunk)
                md5 = h.hexdigest()
                verify_written(self._where(key), opts, md5, size)
                side = {h_: getattr(opts, h_) for h_ in _HEADERS}
                side.update(etag=md5, md5=md5, metadata={k.lower(): v for k, v in opts.metadata.items()},
                            tags=dict(opts.tags), storage_class=opts.storage_class)
                await asyncio.to_thread(self._commit, up, segs, key, side)
        finally:
            await asyncio.shield(asyncio.to_thread(up.close))
        return PutResult(etag=md5, version_id=None, size=size, md5=md5)

    def _open_temp(self, segs: list[str]) -> Upload:
        root_fd = self._open_root()
        try:
            fd, chain, tmp = temp_in(root_fd, segs[:-1], self.mode, "")
            return Upload(root_fd, chain, fd, tmp)
        except BaseException:
            os.close(root_fd)
            raise

    def _commit(self, up: Upload, segs: list[str], key: str, side: dict[str, Any]) -> None:
        with up.lock:
            if up.closed:  # cancelled, and cleaned up, before this thread started
                raise RetryableError(f"{self._where(key)}: Cancelled: the put was abandoned", code="Cancelled")
            self._commit_locked(up, segs, key, side)

    def _commit_locked(self, up: Upload, segs: list[str], key: str, side: dict[str, Any]) -> None:
        up.file.flush()
        os.fsync(up.file.fileno())
        st = os.fstat(up.file.fileno())
        up.file.close()
        side.update(ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)
        safepath.replace(up.chain.fd, up.tmp, segs[-1], key)
        up.tmp = None  # renamed: nothing to discard
        self._write_sidecar(up.root_fd, segs, json.dumps(side, ensure_ascii=False).encode())
        safepath.fsync_dir(up.chain.fd)

    def _write_sidecar(self, root_fd: int, segs: list[str], data: bytes) -> None:
        fd, chain, tmp = temp_in(root_fd, [META_DIR, *segs[:-1]], self.mode, "")
        with chain:
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                safepath.replace(chain.fd, tmp, segs[-1] + ".json", "/".join([META_DIR, *segs]) + ".json")
            except BaseException:
                safepath.discard(chain.fd, tmp)
                raise

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """Removes the file and its sidecar, then empty parent directories. Idempotent.
        Raises FatalError (nothing removed) when the path is or passes through a link."""
        metrics.storage_request("file", "delete")
        segs = self._segments(key)

        def run() -> None:
            with self._root() as root_fd:
                for path, keep in ((segs, 0), ([META_DIR, *segs[:-1], segs[-1] + ".json"], 1)):
                    try:
                        chain = safepath.walk(root_fd, path[:-1])
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    with chain:
                        safepath.unlink_file(chain.fd, path[-1], "/".join(path))
                        chain.prune(keep)

        with self._translate(key, write=True):
            await asyncio.to_thread(run)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """No multipart uploads here: a no-op (idempotent)."""

    async def close(self) -> None:
        """Nothing to release."""
