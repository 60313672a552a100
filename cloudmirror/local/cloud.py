"""`cloudmirror local up|down|env`: the local emulator cloud as background processes, with
its state (provider, endpoint, pids) in .cloudmirror/local.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cloudmirror.local import procs

STATE_DIR = Path(os.environ.get("CLOUDMIRROR_STATE_DIR", ".cloudmirror"))
STATE = STATE_DIR / "local.json"


class LocalCloudError(RuntimeError):
    """The local cloud could not be started; the message says why."""


def read_state() -> dict | None:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    return state if all(procs.pid_alive(p) for p in state.get("pids", [])) else None


def up(provider: str = "moto", port: int | None = None) -> dict:
    """Start the emulators unless already running. Idempotent. Raises LocalCloudError."""
    state = read_state()
    if state:
        return state
    try:
        if provider == "localstack":
            from cloudmirror.local.localstack import start_localstack

            proc, endpoint = start_localstack(port or 4566, log_dir=STATE_DIR)
        else:
            from cloudmirror.local.moto import start_moto

            if port is None:
                port = 5000 if not procs.port_open(5000) else procs.free_port()
            proc, endpoint = start_moto(port, log_dir=STATE_DIR)
    except procs.LaunchError as e:
        raise LocalCloudError(str(e)) from None
    state = {"provider": provider, "endpoint": endpoint, "pids": [proc.pid], "log": str(proc.log)}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=2))
    return state


def down() -> bool:
    """Stop what `up` started. Idempotent; returns whether anything was running."""
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return False
    for pid in state.get("pids", []):
        procs.stop_pid(pid)
    STATE.unlink(missing_ok=True)
    return True


def env_lines(state: dict) -> str:
    ep = state["endpoint"]
    return "\n".join([
        f"export AWS_ENDPOINT_URL={ep}",
        "export AWS_ACCESS_KEY_ID=testing",
        "export AWS_SECRET_ACCESS_KEY=testing",
        "export AWS_DEFAULT_REGION=us-east-1",
        f"# locations: s3://BUCKET?region=us-east-1&endpoint={ep}",
    ])
