"""Azurite (npm `azurite`, installed into node_modules by `make` from package.json): Blob
and Queue emulators with two storage accounts, so cross-account copies (SAS source URLs)
are exercised as well.

The keys below are Azurite's published development keys, not secrets.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cloudmirror.local import procs

REPO_ROOT = Path(__file__).resolve().parents[2]
# Azurite's well-known development account and key (documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SECOND_ACCOUNT = "cmdrstore"
SECOND_KEY = "Y2xvdWRtaXJyb3ItbG9jYWwtc2Vjb25kLWFjY291bnQta2V5LWZvci1henVyaXRlLXRlc3Rz"


@dataclass
class Azurite:
    proc: procs.Proc
    blob_port: int
    queue_port: int
    accounts: dict[str, str]  # account name -> key

    def blob_endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{account}"

    def queue_endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{account}"

    def connection_string(self, account: str = DEV_ACCOUNT) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={self.accounts[account]};"
                f"BlobEndpoint={self.blob_endpoint(account)};QueueEndpoint={self.queue_endpoint(account)};")


def azurite_bin() -> str:
    """node_modules/.bin/azurite of this checkout, else one on PATH. Raises LaunchError."""
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise procs.LaunchError("azurite not found: run `make venv` (it runs `npm ci` from package.json) "
                            "or `npm install azurite`")


def start_azurite(log_dir: Path = Path(".cloudmirror"), *, blob_port: int | None = None,
                  queue_port: int | None = None, in_memory: bool = True) -> Azurite:
    """Start Azurite Blob + Queue on 127.0.0.1 with two accounts. Raises LaunchError."""
    blob_port = blob_port or procs.free_port()
    queue_port = queue_port or procs.free_port()
    table_port = procs.free_port()
    accounts = {DEV_ACCOUNT: DEV_KEY, SECOND_ACCOUNT: SECOND_KEY}
    data = log_dir / f"azurite-{blob_port}"
    if not in_memory:
        data.mkdir(parents=True, exist_ok=True)
    argv = [azurite_bin(), "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
            "--blobPort", str(blob_port), "--queuePort", str(queue_port), "--tablePort", str(table_port),
            "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
    argv += ["--inMemoryPersistence"] if in_memory else ["--location", str(data)]
    env = {"AZURITE_ACCOUNTS": ";".join(f"{a}:{k}" for a, k in accounts.items())}
    proc = procs.start("azurite", argv, log_dir / f"azurite-{blob_port}.log",
                       ready=lambda: procs.port_open(blob_port) and procs.port_open(queue_port), env=env, timeout=60)
    return Azurite(proc, blob_port, queue_port, accounts)
