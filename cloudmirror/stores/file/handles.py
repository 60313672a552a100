"""What a file-store operation holds across awaits: a put's temp file and directory fds,
a listing's lazy walk. Their thread calls take turns on a lock, so a close() after a
cancelled await waits for a running call instead of closing an fd it uses (whose number
could then name another directory)."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import cloudmirror.stores.file.safepath as safepath
from cloudmirror.stores.file.listing import RESERVED, walk_files

TMP_PREFIX = RESERVED + "tmp-"


class Upload:
    """A put under way: the root and parent directory fds it holds, and its temp file. Its
    thread calls hold `lock`, so close() (after a cancelled await) waits for a running write
    or commit instead of closing an fd it uses, whose number could then name another file."""

    def __init__(self, root_fd: int, chain: safepath.Chain, fd: int, tmp: str):
        self.root_fd, self.chain, self.tmp = root_fd, chain, tmp
        self.file: Any = os.fdopen(fd, "wb")
        self.lock = threading.Lock()
        self.closed = False

    def write(self, h: Any, chunk: bytes) -> int:
        with self.lock:
            self.file.write(chunk)
            h.update(chunk)
            return len(chunk)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.file.close()
                if self.tmp is not None:
                    safepath.discard(self.chain.fd, self.tmp)
            finally:
                self.chain.close()
                os.close(self.root_fd)


class Listing:
    """A listing under way: the root fd and the lazy walk; page() and close() take turns."""

    def __init__(self, root_fd: int, prefix: str, start_after: str | None):
        self.root_fd = root_fd
        self.walk = walk_files(root_fd, prefix, start_after)
        self.lock = threading.Lock()
        self.closed = False

    def page(self, size: int) -> list[tuple[str, os.stat_result, dict]]:
        with self.lock:
            return [] if self.closed else list(itertools.islice(self.walk, size))

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                try:
                    self.walk.close()
                finally:
                    os.close(self.root_fd)


def temp_in(root_fd: int, dirs: list[str], mode: int, shown: str) -> tuple[int, safepath.Chain, str]:
    """A new temp file (mode `mode`) in the directory `dirs` under root_fd, made as needed
    (mode dir_mode(mode)):
    (its fd, the open directory chain, its name)."""
    for attempt in range(3):  # a concurrent delete may prune a directory under us
        chain = None
        try:
            chain = safepath.walk(root_fd, dirs, create=safepath.dir_mode(mode), shown=shown)
            fd, tmp = safepath.create_temp(chain.fd, TMP_PREFIX, mode)
            return fd, chain, tmp
        except FileNotFoundError:
            if chain is not None:
                chain.close()
            if attempt == 2:
                raise
        except BaseException:
            if chain is not None:
                chain.close()
            raise
    raise AssertionError("unreachable")
