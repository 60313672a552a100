"""The leases of one worker's in-flight jobs, kept from a thread of the worker's own.

A lease renewed from the event loop lapses exactly when the loop is busy or starved (many
copies at once, a loaded machine), and renewals sent through the shared thread pool queue
behind the very ledger calls that are slow then. The keeper renews every held lease each
`lease / 4` from its own thread, then reclaims the expired leases of other (dead) workers.

It also knows, per job, until when the lease is sure to hold on this process's monotonic
clock: when the last successful renewal (or the claim) was *sent*, plus the lease -- the
database dates the new expiry no earlier than that. Before each write to a target the worker
awaits `ensure()`: when less than half a lease is sure to remain (the process was paused or
starved, renewals fell behind), it renews at once and raises LeaseLost if the claim is no
longer ours. A worker that wakes up after its job was handed to another therefore writes
nothing more, and the ledger refuses its renewals and outcomes (the lease token).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cloudmirror.ledger.repo import Job, Ledger

log = logging.getLogger("cloudmirror.worker")
ENSURE_TRIES = 3  # renewals ensure() makes before it judges a lease by what surely remains


class LeaseLost(Exception):
    """The job's lease lapsed and its claim was taken back; the job belongs to another claim."""


@dataclass
class _Held:
    token: int
    valid_until: float  # monotonic: the lease surely holds until then
    finishing: bool = False  # its outcome is being recorded: a refused renewal is no loss
    lost: bool = False


class LeaseKeeper:
    """Thread-safe. `on_lost(job_id)` and `on_reclaimed()` are called from the keeper's thread."""

    def __init__(self, ledger: Ledger, owner: str, lease: float, *, every: float | None = None):
        self.ledger, self.owner, self.lease = ledger, owner, lease
        self.every = every if every is not None else max(0.02, lease / 4)
        self.on_lost: Callable[[int], None] = lambda job_id: None
        self.on_reclaimed: Callable[[], None] = lambda: None
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the set of held jobs
    def add(self, job: Job, sent: float) -> None:
        """A job just claimed; `sent`: time.monotonic() before the claim was sent."""
        with self._lock:
            self._held[job.id] = _Held(job.token, sent + self.lease)

    def finishing(self, job_id: int) -> None:
        with self._lock:
            if job_id in self._held:
                self._held[job_id].finishing = True

    def remove(self, job_id: int) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def holds(self, job_id: int) -> bool:
        """Not found lost so far."""
        with self._lock:
            h = self._held.get(job_id)
            return h is not None and not h.lost

    # ------------------------------------------------------------ renewing
    def renew(self, ids: Collection[int] | None = None) -> set[int]:
        """Renew the leases of `ids` (default: all held) now, in the calling thread.
        Returns the ids found lost (reclaimed and possibly claimed again elsewhere)."""
        with self._lock:
            snap = {i: h.token for i, h in self._held.items() if (ids is None or i in ids) and not h.lost}
        if not snap:
            return set()
        sent = time.monotonic()
        kept = self.ledger.renew_leases(self.owner, snap, self.lease)
        lost = set()
        with self._lock:
            for i, token in snap.items():
                h = self._held.get(i)
                if h is None or h.token != token:
                    continue  # finished meanwhile
                if i in kept:
                    h.valid_until = max(h.valid_until, sent + self.lease)
                elif not h.finishing:  # a finishing job's own fenced outcome says whether it was ours
                    h.lost = True
                    lost.add(i)
        return lost

    async def ensure(self, job_id: int) -> None:
        """Return when the job's lease surely holds for at least half a lease more (renewing
        first when it might not); raise LeaseLost when the claim is no longer ours."""
        with self._lock:
            h = self._held.get(job_id)
        if h is None:
            return  # not run by a pool (a direct call): nothing to keep
        for _ in range(ENSURE_TRIES):
            if h.lost:
                break
            if time.monotonic() < h.valid_until - self.lease / 2:
                return
            # a renewal that queued behind another writer may come back with less than half
            # a lease surely left although the ledger renewed it: renew again (the lock is free now)
            await asyncio.to_thread(self.renew, {job_id})
        if h.lost or time.monotonic() >= h.valid_until:
            raise LeaseLost(f"the lease of replication {job_id} lapsed and was taken back")

    # ------------------------------------------------------------ the thread
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"leases-{self.owner}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (blocking: call through asyncio.to_thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                for job_id in self.renew():
                    self.on_lost(job_id)
                # whatever expired and is not held here is a dead or starved worker's
                with self._lock:
                    held = set(self._held)
                if self.ledger.reclaim_expired(spare=held):
                    self.on_reclaimed()
            except Exception:  # noqa: BLE001 - keep maintaining; the DB may come back
                log.exception("lease maintenance failed")
