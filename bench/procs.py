"""Child processes for the bench: started in their own session, CPU read from /proc while
they run and from wait4's rusage when they end, always cleaned up (see `cleanup`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_LIVE: dict[int, "Child"] = {}  # every child not yet reaped, for cleanup()


class BenchError(RuntimeError):
    """A phase failed (a child died, a deadline passed); the message says which and why."""


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a running process (all its threads) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def poll(check: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str = "condition",
         alive: Sequence["Child"] = ()) -> object:
    """Call `check` until truthy; raise BenchError when `timeout` passes or a watched child exits."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        for c in alive:
            if c.exited():
                raise BenchError(f"{c.name} exited (code {c.returncode}) while waiting for {what}:\n{c.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0, token: str | None = None) -> str | None:
    """The body of a GET (with `token` as a bearer API key), or None when it fails."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Rusage:
    wall: float  # seconds from start to reaped
    cpu: float  # user + sys seconds (rusage of the child)
    returncode: int


class Child:
    """One child process in its own session (so its whole group can be signalled)."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None):
        self.name = name
        self.log = log
        self.returncode: int | None = None
        self.rusage: Rusage | None = None
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            self.t0 = time.perf_counter()
            self.epoch0 = time.time()
            try:
                self.popen = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except OSError as e:
                raise BenchError(f"{name}: cannot run {argv[0]}: {e}") from None
        self.pid = self.popen.pid
        _LIVE[self.pid] = self

    def cpu(self) -> float:
        """CPU seconds so far (the process must not be reaped yet)."""
        return cpu_seconds(self.pid)

    def exited(self) -> bool:
        """Has it exited? Reaps it (keeping its rusage) when it has."""
        if self.returncode is not None:
            return True
        try:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self._reaped(status, ru)
        return True

    def _reaped(self, status: int, ru) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # keep subprocess from waiting again
        self.rusage = Rusage(time.perf_counter() - self.t0, ru.ru_utime + ru.ru_stime, self.returncode)
        _LIVE.pop(self.pid, None)

    def wait(self, timeout: float) -> Rusage:
        """Block until it exits (exact wall time); SIGKILL its group and raise after `timeout`."""
        if self.returncode is not None:
            return self.rusage
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            self.signal(signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, ru = os.wait4(self.pid, 0)
        finally:
            timer.cancel()
        self._reaped(status, ru)
        if fired.is_set():
            raise BenchError(f"{self.name} did not finish within {timeout:.0f}s (killed):\n{self.log_tail()}")
        return self.rusage

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 30.0) -> Rusage:
        """SIGTERM (graceful: cloudmirror drains), SIGKILL after `timeout`. Idempotent."""
        if self.returncode is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def cleanup() -> None:
    """Kill every child still running (their whole groups) and reap them. Safe to call twice."""
    for child in list(_LIVE.values()):
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _LIVE and time.monotonic() < deadline:
        for child in list(_LIVE.values()):
            child.exited()
        time.sleep(0.05)
    for child in list(_LIVE.values()):
        child.signal(signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, BenchError):
            child.wait(5)
