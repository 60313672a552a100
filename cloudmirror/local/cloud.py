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


def start_all(provider: str = "moto", port: int | None = None, log_dir: Path = STATE_DIR,
              gcp: bool = True, azure: bool = True,
              gcs_event_bucket: str | None = None) -> tuple[dict, list[procs.Proc]]:
    """Start the AWS emulator, the Google pair (Pub/Sub emulator + fake-gcs-server publishing
    notifications into it) and Azurite (two accounts). Returns (state, processes).

    Where the Pub/Sub emulator or Java is missing, fake-gcs-server still runs (without
    notifications) and state["notes"] says so plainly. Raises LocalCloudError; on error,
    whatever was already started is stopped."""
    started: list[procs.Proc] = []
    notes: list[str] = []
    state: dict = {"provider": provider}
    try:
        if provider == "localstack":
            from cloudmirror.local.localstack import start_localstack

            proc, endpoint = start_localstack(port or 4566, log_dir=log_dir)
        else:
            from cloudmirror.local.moto import start_moto

            if port is None:
                port = 5000 if not procs.port_open(5000) else procs.free_port()
            proc, endpoint = start_moto(port, log_dir=log_dir)
        started.append(proc)
        state.update(endpoint=endpoint, log=str(proc.log))
        if gcp:
            from cloudmirror.local import gcp as gcp_emu

            pubsub_host = None
            reason = gcp_emu.pubsub_unavailable()
            if reason:
                notes.append(f"GCS event notifications are off: {reason}")
            else:
                ps = gcp_emu.start_pubsub(log_dir=log_dir)
                started.append(ps.proc)
                pubsub_host = ps.host
            gcs = gcp_emu.start_fake_gcs(log_dir=log_dir, pubsub_host=pubsub_host, project=GCP_PROJECT,
                                         topic=GCS_TOPIC, event_bucket=gcs_event_bucket)
            started.append(gcs.proc)
            state.update(gcs_endpoint=gcs.endpoint, pubsub_host=pubsub_host, gcp_project=GCP_PROJECT,
                         gcs_topic=GCS_TOPIC if pubsub_host else None)
        if azure:
            from cloudmirror.local.azurite import start_azurite

            az = start_azurite(log_dir=log_dir)
            started.append(az.proc)
            state.update(azure_connection_strings={a: az.connection_string(a) for a in az.accounts},
                         azure_blob_port=az.blob_port, azure_queue_port=az.queue_port)
    except procs.LaunchError as e:
        for p in started:
            p.stop()
        raise LocalCloudError(str(e)) from None
    state.update(pids=[p.pid for p in started], notes=notes)
    return state, started


GCP_PROJECT = "cloudmirror-local"
GCS_TOPIC = "gcs-events"


def azure_env_var(account: str) -> str:
    """The env var that holds an Azurite account's connection string (see env_lines)."""
    return f"CLOUDMIRROR_AZURITE_CONN_{account.upper()}"


def export_env(state: dict) -> None:
    """Put the local cloud's environment into this process (what env_lines prints)."""
    for line in env_lines(state).splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            os.environ[k] = v.strip("'")


def up(provider: str = "moto", port: int | None = None) -> dict:
    """Start the emulators unless already running. Idempotent. Raises LocalCloudError."""
    state = read_state()
    if state:
        return state
    state, _ = start_all(provider, port)
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
    lines = [
        f"export AWS_ENDPOINT_URL={ep}",
        "export AWS_ACCESS_KEY_ID=testing",
        "export AWS_SECRET_ACCESS_KEY=testing",
        "export AWS_DEFAULT_REGION=us-east-1",
        f"# s3 locations: s3://BUCKET?region=us-east-1&endpoint={ep}",
    ]
    if state.get("gcs_endpoint"):
        lines += [f"export STORAGE_EMULATOR_HOST={state['gcs_endpoint']}",
                  f"# gcs locations: gs://BUCKET?endpoint={state['gcs_endpoint']}&project={state['gcp_project']}"]
        if state.get("pubsub_host"):
            lines += [f"export PUBSUB_EMULATOR_HOST={state['pubsub_host']}",
                      f"# every GCS write is published to projects/{state['gcp_project']}/topics/{state['gcs_topic']}"]
    for account, conn in (state.get("azure_connection_strings") or {}).items():
        var = azure_env_var(account)
        lines += [f"export {var}='{conn}'",
                  f"# azure locations: az://{account}/CONTAINER?connection_string_env={var}"]
    lines += [f"# note: {n}" for n in state.get("notes", [])]
    return "\n".join(lines)
