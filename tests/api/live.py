"""A real HTTP server around an app, for tests that need a socket (schemathesis, a browser)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from cloudmirror.local.procs import free_port


@contextlib.contextmanager
def serving(app, name: str = "api-under-test") -> Iterator[str]:
    """The app on a free local port, lifespan included, in a thread of its own; yields its
    base URL. Raises AssertionError when it does not start within 30 s."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # poll with a deadline
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
