"""moto server: the default, fast local AWS (S3, SQS, SNS, EventBridge in memory)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from cloudmirror.local import procs


def moto_server_bin() -> str:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return str(exe)
    found = shutil.which("moto_server")
    if not found:
        raise procs.LaunchError("moto_server not found: pip install 'moto[server]'")
    return found


def start_moto(port: int | None = None, log_dir: Path = Path(".cloudmirror")) -> tuple[procs.Proc, str]:
    """Start moto server on 127.0.0.1; returns (process, endpoint URL). Raises LaunchError."""
    port = port or procs.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = procs.start(
        "moto",
        [moto_server_bin(), "-H", "127.0.0.1", "-p", str(port)],
        log_dir / f"moto-{port}.log",
        ready=lambda: procs.http_ok(endpoint + "/moto-api/"),
        timeout=30,
    )
    return proc, endpoint


def reset_moto(endpoint: str) -> None:
    """Forget every bucket, queue and topic (POST /moto-api/reset)."""
    import urllib.request

    req = urllib.request.Request(endpoint + "/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - a local emulator URL
