"""Run the LocalStack runtime in host mode, with two fixes applied first.

`localstack/launch start` execs this file with the .localstack-venv python; it is the same as
`python -m localstack.runtime.main` except that:

1. S3 object data goes to $CLOUDMIRROR_S3_STORAGE_DIR (per run) instead of the hard-coded
   /tmp/localstack-s3-storage that every LocalStack on the machine shares (deleting a bucket
   there removes the directory of a same-named bucket of another instance).
2. SIGTERM stops the process. LocalStack 2026.3.0's HypercornRuntimeServer.shutdown() calls
   loop.stop() from another thread without waking the loop, so the process can hang forever
   in select() after "[shutdown] Stopping all services"; we wake the loop.

Both are best-effort: if a LocalStack release renames what we patch, we warn and go on.
"""

from __future__ import annotations

import os
import runpy
import sys


def _warn(msg: str) -> None:
    sys.stderr.write(f"cloudmirror host_runtime: {msg}\n")


def _patch_s3_storage_dir() -> None:
    storage = os.environ.get("CLOUDMIRROR_S3_STORAGE_DIR")
    if not storage:
        return
    try:
        from localstack.services.s3 import provider
    except Exception as e:  # noqa: BLE001 (never stop LocalStack from starting)
        _warn(f"S3 storage stays in /tmp/localstack-s3-storage: {e}")
        return
    if not hasattr(provider, "DEFAULT_S3_TMP_DIR"):
        _warn("S3 storage dir not patched: DEFAULT_S3_TMP_DIR is gone from this LocalStack")
        return
    os.makedirs(storage, exist_ok=True)
    provider.DEFAULT_S3_TMP_DIR = storage


def _patch_shutdown_wakeup() -> None:
    try:
        from localstack.runtime.server.hypercorn import HypercornRuntimeServer
    except Exception as e:  # noqa: BLE001
        _warn(f"shutdown fix not applied: {e}")
        return
    original = HypercornRuntimeServer.shutdown

    def shutdown(self) -> None:
        original(self)
        try:  # wake select() so run_forever() sees the stop request
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # loop already closed: nothing to wake
            pass

    HypercornRuntimeServer.shutdown = shutdown


if __name__ == "__main__":
    _patch_s3_storage_dir()
    _patch_shutdown_wakeup()
    sys.argv = ["localstack.runtime.main"]
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
