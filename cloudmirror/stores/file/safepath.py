"""No-follow paths for the file store: walked one directory at a time with directory fds.

Every directory is opened `O_DIRECTORY|O_NOFOLLOW` relative to its parent's fd
(`dir_fd=`), from `/` down to the store's root and from the root down to a key's parent;
files are opened `O_NOFOLLOW` in that parent fd, and renames, unlinks and rmdirs name an
entry of a directory fd. A symlink anywhere on the way (in the root's own path too) raises
SymlinkFound instead of being followed, and a directory swapped for a symlink after it was
opened cannot redirect anything: the fd still names the directory that was checked.
Blocking calls; the store runs them in worker threads.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Sequence


def dir_mode(file_mode: int) -> int:
    """The mode of the directories made for files of `file_mode`: rwx for the owner, r-x for
    group and others when the files give them any access (0640 -> 0750, 0600 -> 0700,
    0644 -> 0755), so a configured mode is neither defeated nor widened by its directories."""
    out = 0o700
    for shift in (3, 0):  # group, others
        if file_mode & (0o7 << shift):
            out |= 0o5 << shift
    return out
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO cannot hang us
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkFound(OSError):
    """A path component is a symbolic link; it was not followed. `filename` names it."""

    def __init__(self, path: str):
        super().__init__(errno.ELOOP, "a symbolic link (never followed)", path)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(dir_fd: int, name: str, shown: str) -> int:
    """fd of the directory `name` inside dir_fd. Raises SymlinkFound (a link), NotADirectoryError,
    FileNotFoundError."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        # Linux answers ENOTDIR for O_DIRECTORY|O_NOFOLLOW on a link, others ELOOP
        if e.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(dir_fd, name):
            raise SymlinkFound(shown) from None
        raise


def open_root(root: str) -> int:
    """fd of the absolute directory `root`, walked from '/' without following any symlink:
    raises SymlinkFound when any component of the path is a link, FileNotFoundError or
    NotADirectoryError when it is missing or not a directory."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        walked = ""
        for seg in (s for s in root.split("/") if s):
            if seg in (".", ".."):  # refused by parse_location already; never walk upwards
                raise OSError(errno.EINVAL, "'.' or '..' in the root path", root)
            walked += "/" + seg
            nxt = open_dir(fd, seg, walked)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


class Chain:
    """Open directories below a root fd (which the chain does not own): fds[i] is names[i]
    inside fds[i-1] (inside the root for i = 0). Close it, or use it in a `with`."""

    def __init__(self, root_fd: int):
        self.root_fd = root_fd
        self.fds: list[int] = []
        self.names: list[str] = []

    @property
    def fd(self) -> int:
        """The deepest directory (the root when the chain is empty)."""
        return self.fds[-1] if self.fds else self.root_fd

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())
            self.names.pop()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prune(self, keep: int = 0) -> None:
        """Remove the chain's directories from the deepest up while they are empty, keeping
        the first `keep` (and the root). rmdir names an entry of the parent fd: never a link."""
        while len(self.fds) > keep:
            name = self.names.pop()
            os.close(self.fds.pop())
            try:
                os.rmdir(name, dir_fd=self.fd)
            except OSError:
                self.close()
                return


def walk(root_fd: int, segments: Sequence[str], *, create: int | None = None, shown: str = "") -> Chain:
    """Open the directories `segments` one below the other from root_fd; when `create` is a
    mode, make missing ones with it (set with fchmod, so the umask does not change it).
    Raises SymlinkFound, FileNotFoundError, NotADirectoryError."""
    chain = Chain(root_fd)
    try:
        path = shown
        for seg in segments:
            path = f"{path}/{seg}" if path else seg
            try:
                fd = open_dir(chain.fd, seg, path)
            except FileNotFoundError:
                if create is None:
                    raise
                try:
                    os.mkdir(seg, create, dir_fd=chain.fd)
                    made = True
                except FileExistsError:  # made concurrently (or a link: open_dir refuses it)
                    made = False
                fd = open_dir(chain.fd, seg, path)
                if made:
                    os.fchmod(fd, create)
            chain.fds.append(fd)
            chain.names.append(seg)
        return chain
    except BaseException:
        chain.close()
        raise


def lstat_file(dir_fd: int, name: str, shown: str) -> os.stat_result:
    """stat of the regular file `name` in dir_fd. Raises SymlinkFound (a link),
    IsADirectoryError (a directory or any other non-regular file), FileNotFoundError."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise SymlinkFound(shown)
    if not stat.S_ISREG(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "not a regular file", shown)
    return st


def open_file(dir_fd: int, name: str, shown: str) -> int:
    """Read-only fd of the regular file `name` in dir_fd, opened O_NOFOLLOW. Raises like
    lstat_file; a device or FIFO is never opened (checked before, and again after)."""
    lstat_file(dir_fd, name, shown)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SymlinkFound(shown) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
            raise IsADirectoryError(errno.EISDIR, "not a regular file", shown)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def create_temp(dir_fd: int, prefix: str, mode: int) -> tuple[int, str]:
    """A new, empty file in dir_fd with exactly `mode` (fchmod: the umask cannot widen or
    narrow it): (fd open for writing, its name)."""
    name = f"{prefix}{uuid.uuid4().hex}"
    fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    return fd, name


def replace(dir_fd: int, tmp: str, name: str, shown: str) -> None:
    """Rename tmp over `name`, both in dir_fd. Raises SymlinkFound when `name` is a link
    (rename would not follow it, but a link is never treated as an object)."""
    if _is_link(dir_fd, name):
        raise SymlinkFound(shown)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def unlink_file(dir_fd: int, name: str, shown: str) -> None:
    """Remove the regular file `name` in dir_fd; nothing when it is missing or a directory.
    Raises SymlinkFound for a link (left in place)."""
    try:
        lstat_file(dir_fd, name, shown)
        os.unlink(name, dir_fd=dir_fd)
    except (FileNotFoundError, IsADirectoryError):
        pass


def discard(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:
        pass
