"""LocalStack in host mode (no Docker): the high-fidelity local AWS.

Drives the repo's `localstack/launch` script, which builds `.localstack-venv/` (Python >= 3.13,
pinned by localstack/requirements.txt) and runs LocalStack on 127.0.0.1 with S3, SQS, SNS,
EventBridge and KMS. With init hooks, the demo setup of localstack/init/ready.d exists once
`start_localstack` returns (see DEMO_* below). No cloud SDK is imported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from cloudmirror.local import procs

LOCALSTACK_DIR = Path(__file__).resolve().parents[2] / "localstack"

# What localstack/init/ready.d/10-cloudmirror-demo.py creates.
DEMO_SOURCE_BUCKET = "cloudmirror-demo-use1"   # us-east-1, versioned, notifies DEMO_QUEUE
DEMO_SOURCE_REGION = "us-east-1"
DEMO_TARGET_BUCKET = "cloudmirror-demo-euw1"   # eu-west-1
DEMO_TARGET_REGION = "eu-west-1"
DEMO_QUEUE = "cloudmirror-demo-events"         # us-east-1
ACCOUNT_ID = "000000000000"

REQUIRED_SERVICES = ("s3", "sqs")
VENV_TIMEOUT_S = 900.0   # first build downloads ~80 wheels
START_TIMEOUT_S = 120.0


def launcher() -> Path:
    """The `localstack/launch` script. Raises LaunchError when the repo's localstack/ dir is missing."""
    script = LOCALSTACK_DIR / "launch"
    if not script.is_file():
        raise procs.LaunchError(
            f"localstack: {script} not found (LocalStack runs from a cloudmirror source checkout, "
            "not from an installed package)")
    return script


def ensure_venv(log_dir: Path = Path(".cloudmirror")) -> Path:
    """Build or refresh .localstack-venv (idempotent, fast when current); return its python.

    Raises LaunchError when no Python >= 3.13 is found or the build fails (with the reason).
    """
    log = log_dir / "localstack-venv.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(["bash", str(launcher()), "python"], capture_output=True, text=True,
                             timeout=VENV_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise procs.LaunchError(f"localstack: building the venv took over {VENV_TIMEOUT_S:.0f}s") from None
    with open(log, "a") as fh:
        fh.write(res.stderr)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-15:])
        raise procs.LaunchError(f"localstack: cannot build the venv (exit {res.returncode}):\n{tail}")
    python = Path(res.stdout.strip().splitlines()[-1])
    if not python.exists():
        raise procs.LaunchError(f"localstack: launcher reported {python}, which does not exist")
    return python


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (local URL)
            return json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def health(endpoint: str) -> dict[str, str]:
    """Service name -> state ("available", "running", "disabled", ...); {} when unreachable."""
    data = _get_json(endpoint + "/_localstack/health")
    return dict((data or {}).get("services", {}))


def init_status(endpoint: str) -> dict | None:
    """LocalStack's /_localstack/init/ready: {"completed": bool, "scripts": [{"name", "state"}...]}."""
    return _get_json(endpoint + "/_localstack/init/ready")


def is_ready(endpoint: str, init_hooks: bool = True) -> bool:
    """True when S3 and SQS are up and, with init_hooks, the READY hooks have finished."""
    services = health(endpoint)
    if not all(services.get(s) in ("available", "running") for s in REQUIRED_SERVICES):
        return False
    if not init_hooks:
        return True
    status = init_status(endpoint)
    return bool(status and status.get("completed"))


def start_localstack(port: int | None = None, log_dir: Path = Path(".cloudmirror"),
                     init_hooks: bool = True) -> tuple[procs.Proc, str]:
    """Start LocalStack on 127.0.0.1 (a free port unless given); return (process, endpoint URL).

    Builds the venv first when needed (ensure_venv). With init_hooks, returns only after the
    demo setup exists. Logs go to log_dir/localstack-<port>.log and LocalStack's files to
    log_dir/localstack-<port>/ (emptied at start). Stop it with proc.stop().
    Raises LaunchError (with the log tail) when it exits, is not ready within 120 s, or an init
    hook fails. Not idempotent: each call starts a new LocalStack.
    """
    ensure_venv(log_dir)
    port = port or procs.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"LOCALSTACK_DATA_DIR": str((log_dir / f"localstack-{port}").resolve()),
           "LOCALSTACK_NO_INIT": "0" if init_hooks else "1"}
    proc = procs.start(
        "localstack",
        ["bash", str(launcher()), "start", "--port", str(port)],
        log_dir / f"localstack-{port}.log",
        ready=lambda: is_ready(endpoint, init_hooks),
        env=env,
        timeout=START_TIMEOUT_S,
        cwd=str(LOCALSTACK_DIR.parent),
    )
    if init_hooks:
        failed = [s for s in (init_status(endpoint) or {}).get("scripts", []) if s.get("state") != "SUCCESSFUL"]
        if failed:
            proc.stop()
            names = ", ".join(f"{s.get('name')} ({s.get('state')})" for s in failed)
            raise procs.LaunchError(f"localstack: init hook failed: {names}\n{proc.log_tail()}")
    return proc, endpoint


def demo_queue_url(endpoint: str) -> str:
    """URL of the demo queue as LocalStack names it (SQS_ENDPOINT_STRATEGY=path)."""
    return f"{endpoint}/queue/{DEMO_SOURCE_REGION}/{ACCOUNT_ID}/{DEMO_QUEUE}"


def venv_python() -> Path:
    """Where ensure_venv puts the interpreter (may not exist yet)."""
    return Path(os.environ.get("LOCALSTACK_VENV", LOCALSTACK_DIR.parent / ".localstack-venv")) / "bin" / "python"
