"""A worker's surroundings on memory stores: one mirror memory://src -> memory://dst, a fresh
ledger, fast retries, and an `endpoint(url)` that opens each store once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from cloudmirror.config import Config, validate_config
from cloudmirror.ledger.repo import Ledger
from cloudmirror.location import parse_location
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.replication.worker import WorkerPool
from cloudmirror.stores import open_store
from cloudmirror.stores.memory import reset_memory_stores

SRC, DST = "memory://src", "memory://dst"


@contextlib.contextmanager
def memory_worker_env(ledger_url: str) -> Iterator[tuple[Config, Ledger, Callable[[str], Endpoint]]]:
    reset_memory_stores()
    cfg = validate_config({"ledger": ledger_url, "mirrors": [{"name": "m", "source": SRC, "targets": [DST]}],
                           "workers": {"max_attempts": 3, "retry_base_delay": 0.01, "retry_max_delay": 0.02,
                                       "poll_interval": 0.01}})
    ledger = Ledger(ledger_url)
    eps: dict[str, Endpoint] = {}

    def endpoint(url: str) -> Endpoint:
        if url not in eps:
            eps[url] = Endpoint(parse_location(url), open_store(parse_location(url)))
        return eps[url]

    try:
        yield cfg, ledger, endpoint
    finally:
        ledger.close()
        reset_memory_stores()


async def drain(cfg: Config, ledger: Ledger, endpoint: Callable[[str], Endpoint], timeout: float = 10.0) -> WorkerPool:
    """Run a worker pool until the ledger's backlog is empty (polled, with a deadline)."""
    pool = WorkerPool(cfg, ledger, endpoint)
    task = asyncio.create_task(pool.run())
    deadline = asyncio.get_running_loop().time() + timeout
    while ledger.backlog() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    pool.stop()
    await task
    assert ledger.backlog() == 0, "the backlog did not drain"
    return pool
