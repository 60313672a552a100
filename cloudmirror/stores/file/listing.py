"""The file store's listing and sidecars, walked with directory fds (see safepath).

Only regular files are objects: symlinks (to files or directories), FIFOs, devices and
sockets are skipped, and a directory swapped for a link while the walk runs is not entered.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import cloudmirror.stores.file.safepath as safepath

RESERVED = ".cloudmirror-"
META_DIR = RESERVED + "meta"
_MAX_SIDECAR = 4 << 20  # bytes; a larger "sidecar" is not one of ours


def read_sidecar(meta_fd: int | None, name: str, st: os.stat_result) -> dict[str, Any]:
    """The sidecar `name` in the metadata directory meta_fd when it describes exactly the file
    `st`, else {} (missing, unreadable, a link, or stale)."""
    if meta_fd is None:
        return {}
    try:
        fd = safepath.open_file(meta_fd, name, name)
        with os.fdopen(fd, "rb") as f:
            side = json.loads(f.read(_MAX_SIDECAR + 1)[:_MAX_SIDECAR])
    except (OSError, ValueError):
        return {}
    if not isinstance(side, dict):
        return {}
    if (side.get("ino"), side.get("size"), side.get("mtime_ns")) != (st.st_ino, st.st_size, st.st_mtime_ns):
        return {}
    return side


def _open_or_none(dir_fd: int | None, name: str) -> int | None:
    if dir_fd is None:
        return None
    try:
        return safepath.open_dir(dir_fd, name, name)
    except OSError:
        return None


def walk_files(root_fd: int, prefix: str, start_after: str | None) -> Iterator[tuple[str, os.stat_result, dict]]:
    """(key, lstat, sidecar) of every regular file under root_fd whose key starts with prefix
    and sorts after start_after, in key order; lazily, one directory level at a time. Holds
    the fds of the directories it is in (root_fd is the caller's); closing the generator
    closes them."""
    meta_fd = _open_or_none(root_fd, META_DIR)
    try:
        yield from _walk(root_fd, meta_fd, "", prefix, start_after)
    finally:
        if meta_fd is not None:
            os.close(meta_fd)


def _walk(dir_fd: int, meta_fd: int | None, key_prefix: str, prefix: str,
          start_after: str | None) -> Iterator[tuple[str, os.stat_result, dict]]:
    try:
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in it]
    except OSError:
        return
    items: list[tuple[str, bool, str]] = []
    for name, is_dir, is_file in entries:
        if name.startswith(RESERVED):
            continue
        if is_dir:
            items.append((key_prefix + name + "/", True, name))
        elif is_file:  # never a link: follow_symlinks=False
            items.append((key_prefix + name, False, name))
    # "name/" for directories makes per-directory order equal to global key order
    items.sort(key=lambda t: t[0])
    for k, is_dir, name in items:
        if is_dir:
            if not (k.startswith(prefix) or prefix.startswith(k)):
                continue
            if start_after is not None and k <= start_after and not start_after.startswith(k):
                continue
            try:
                sub = safepath.open_dir(dir_fd, name, k)
            except OSError:  # gone, or swapped for a link since the scan
                continue
            sub_meta = _open_or_none(meta_fd, name)
            try:
                yield from _walk(sub, sub_meta, k, prefix, start_after)
            finally:
                os.close(sub)
                if sub_meta is not None:
                    os.close(sub_meta)
        elif k.startswith(prefix) and (start_after is None or k > start_after):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue  # deleted while listing
            if stat.S_ISREG(st.st_mode):  # not swapped for a link since the scan
                yield k, st, read_sidecar(meta_fd, name + ".json", st)
