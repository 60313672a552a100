"""A local disk or NAS mount as a store: file:///abs/root.

Object `key` is the file `root/key`; its metadata (content headers, user metadata, tags,
MD5/etag) is a JSON sidecar `root/.cloudmirror-meta/<key>.json`, which listings skip.
Writes are atomic (temp file in the same directory, fsync, os.replace), reads and writes
stream in chunks, and blocking I/O runs in worker threads. A sidecar records the inode,
size and mtime of the file it describes; one that no longer matches (a crash between the
two renames, or a file changed behind our back) is ignored, so the etag is then unknown.

Keys must be relative paths of non-empty segments other than '.'/'..', each at most 250
UTF-8 bytes, not starting with '.cloudmirror-'; other keys raise FatalError.
No versioning: version_id is always None. No server-side copy.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

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

RESERVED = ".cloudmirror-"
META_DIR = RESERVED + "meta"
TMP_PREFIX = RESERVED + "tmp-"
MAX_SEGMENT_BYTES = 250  # NAME_MAX 255 minus the sidecar's ".json"
_HEADERS = ("content_type", "content_encoding", "content_disposition", "content_language", "cache_control")
_RETRYABLE_ERRNO = {errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.EBUSY}


class FileStore:
    """Store over a directory tree. Every call is safe to run concurrently."""

    def __init__(self, location: Location):
        self.location = location
        self.root = location.bucket

    # ------------------------------------------------------------ paths and errors
    def _where(self, key: str | None) -> str:
        return f"file://{self.root}/{key}" if key else f"file://{self.root}"

    def _paths(self, key: str) -> tuple[str, str]:
        """(data path, sidecar path) for a key. Raises FatalError for keys that cannot be
        files under root (empty, absolute, '..', too long a segment, reserved names)."""
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
        rel = os.path.join(*segments)
        return os.path.join(self.root, rel), os.path.join(self.root, META_DIR, rel + ".json")

    @contextmanager
    def _translate(self, key: str | None) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except FileNotFoundError as e:
            if not os.path.isdir(self.root):
                raise BucketNotFound(f"{self._where(None)}: NoSuchBucket: root directory does not exist",
                                     code="NoSuchBucket") from e
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

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise BucketNotFound(f"{self._where(None)}: NoSuchBucket: root directory does not exist",
                                 code="NoSuchBucket")

    # ------------------------------------------------------------ metadata
    def _sidecar(self, meta_path: str, st: os.stat_result) -> dict[str, Any]:
        """The sidecar when it describes exactly this file, else {}."""
        try:
            with open(meta_path, encoding="utf-8") as f:
                side = json.load(f)
        except (OSError, ValueError):
            return {}
        if (side.get("ino"), side.get("size"), side.get("mtime_ns")) != (st.st_ino, st.st_size, st.st_mtime_ns):
            return {}
        return side

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

    def _stat_file(self, key: str, path: str) -> os.stat_result:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise NotFound(f"{self._where(key)}: NoSuchKey (a directory)", code="NoSuchKey")
        return st

    # ------------------------------------------------------------ reads
    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's tags (from the sidecar). Raises NotFound."""
        return dict((await self.head(key, HeadOptions(include_tags=True))).tags or {})

    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Raises NotFound, BucketNotFound, AccessDenied, FatalError (invalid key)."""
        opts = opts or HeadOptions()
        metrics.storage_request("file", "head")
        path, meta_path = self._paths(key)

        def run() -> ObjectMeta:
            st = self._stat_file(key, path)
            return self._meta(key, st, self._sidecar(meta_path, st), full=True, include_tags=opts.include_tags)

        with self._translate(key):
            return await asyncio.to_thread(run)

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Streams the file in chunks of opts.chunk_size. Raises NotFound,
        PreconditionFailed (if_match differs from the etag, or the etag is unknown)."""
        opts = opts or GetOptions()
        metrics.storage_request("file", "get")
        path, meta_path = self._paths(key)

        def run() -> tuple[Any, ObjectMeta]:
            f = open(path, "rb")  # noqa: SIM115 - closed by the body iterator
            try:
                st = os.fstat(f.fileno())
                if not os.path.isfile(path):
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                meta = self._meta(key, st, self._sidecar(meta_path, st), full=True)
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
                raise NotFound(f"{self._where(key)}: NoSuchKey (a directory)", code="NoSuchKey") from None
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
        """Yields files under opts.prefix in key order (no user metadata), a page of
        opts.page_size at a time. The tree is walked lazily, one directory level at a time."""
        opts = opts or ListOptions()
        walk = self._walk(self.root, "", opts.prefix, opts.start_after)

        def page() -> list[ObjectMeta]:
            out = []
            for key, entry in itertools.islice(walk, max(1, opts.page_size)):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                side = self._sidecar(os.path.join(self.root, META_DIR, key + ".json"), st)
                out.append(self._meta(key, st, side, full=False))
            return out

        with self._translate(None):
            await asyncio.to_thread(self._check_root)
        while True:
            metrics.storage_request("file", "list")
            with self._translate(None):
                batch = await asyncio.to_thread(page)
            for m in batch:
                yield m
            if len(batch) < max(1, opts.page_size):
                return

    def _walk(self, dir_path: str, key_prefix: str, prefix: str, start_after: str | None) -> Iterator[tuple[str, Any]]:
        try:
            with os.scandir(dir_path) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return
        items: list[tuple[str, bool, Any]] = []
        for e in entries:
            if e.name.startswith(RESERVED):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    items.append((key_prefix + e.name + "/", True, e))
                elif e.is_file():
                    items.append((key_prefix + e.name, False, e))
            except OSError:
                continue
        # "name/" for directories makes per-directory order equal to global key order
        items.sort(key=lambda t: t[0])
        for k, is_dir, e in items:
            if is_dir:
                if not (k.startswith(prefix) or prefix.startswith(k)):
                    continue
                if start_after is not None and k <= start_after and not start_after.startswith(k):
                    continue
                yield from self._walk(e.path, k, prefix, start_after)
            elif k.startswith(prefix) and (start_after is None or k > start_after):
                yield k, e

    # ------------------------------------------------------------ writes
    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """Atomic write: nothing is visible until the whole body is on disk and verified.
        Raises ChecksumMismatch (nothing written) when opts.md5 / opts.size disagree,
        BucketNotFound when the root is missing, FatalError for invalid/conflicting keys."""
        opts = opts or PutOptions()
        metrics.storage_request("file", "put")
        path, meta_path = self._paths(key)
        h = hashlib.md5()
        with self._translate(key):
            f, tmp = await asyncio.to_thread(self._open_temp, path)
        try:
            size = 0
            with self._translate(key):
                if isinstance(body, (bytes, bytearray, memoryview)):
                    size = await asyncio.to_thread(_write, f, h, bytes(body))
                else:
                    async for chunk in body:
                        size += await asyncio.to_thread(_write, f, h, chunk)
                md5 = h.hexdigest()
                verify_written(self._where(key), opts, md5, size)
                side = {h_: getattr(opts, h_) for h_ in _HEADERS}
                side.update(etag=md5, md5=md5, metadata={k.lower(): v for k, v in opts.metadata.items()},
                            tags=dict(opts.tags), storage_class=opts.storage_class)
                await asyncio.to_thread(self._commit, f, tmp, path, meta_path, side)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, f, tmp))
            raise
        return PutResult(etag=md5, version_id=None, size=size, md5=md5)

    def _open_temp(self, path: str) -> tuple[Any, str]:
        self._check_root()
        parent = os.path.dirname(path)
        for attempt in range(3):  # a concurrent delete may prune the directory under us
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}")
            try:
                return open(tmp, "xb"), tmp  # noqa: SIM115 - returned to the caller, which closes it
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _commit(self, f: Any, tmp: str, path: str, meta_path: str, side: dict[str, Any]) -> None:
        f.flush()
        os.fsync(f.fileno())
        st = os.fstat(f.fileno())
        f.close()
        side.update(ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)
        os.replace(tmp, path)
        _atomic_write(meta_path, json.dumps(side, ensure_ascii=False).encode())
        _fsync_dir(os.path.dirname(path))

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """Removes the file and its sidecar, then empty parent directories. Idempotent."""
        metrics.storage_request("file", "delete")
        path, meta_path = self._paths(key)

        def run() -> None:
            for p, top in ((path, self.root), (meta_path, os.path.join(self.root, META_DIR))):
                try:
                    os.unlink(p)
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    pass
                _prune(os.path.dirname(p), top)

        with self._translate(key):
            await asyncio.to_thread(run)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """No multipart uploads here: a no-op (idempotent)."""

    async def close(self) -> None:
        """Nothing to release."""


def _write(f: Any, h: Any, chunk: bytes) -> int:
    f.write(chunk)
    h.update(chunk)
    return len(chunk)


def _discard(f: Any, tmp: str) -> None:
    try:
        f.close()
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _atomic_write(path: str, data: bytes) -> None:
    parent = os.path.dirname(path)
    tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}")
    for attempt in range(3):  # a concurrent delete may prune the directory under us
        os.makedirs(parent, exist_ok=True)
        try:
            f = open(tmp, "xb")  # noqa: SIM115 - closed by the `with f:` below, after the retry loop
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prune(directory: str, top: str) -> None:
    """Remove empty directories from `directory` up to (not including) `top`."""
    top = os.path.abspath(top)
    directory = os.path.abspath(directory)
    while directory.startswith(top + os.sep) and directory != top:
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)
