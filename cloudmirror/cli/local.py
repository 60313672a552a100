"""`cloudmirror local up|down|env` (the local emulator cloud) and `cloudmirror demo`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cloudmirror.cli.common import console, fail

local_app = typer.Typer(help="The local emulator cloud: moto (or LocalStack), fake-gcs-server + the Pub/Sub emulator, "
                             "and Azurite.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(local_app, name="local")
    app.command()(demo)


@local_app.command("up")
def local_up(localstack: Annotated[bool, typer.Option(
                 "--localstack", help="LocalStack (host mode) instead of moto.")] = False,
             port: Annotated[int | None, typer.Option(
                 help="Port (default: 5000 moto, 4566 LocalStack).")] = None) -> None:
    """Start the local emulator cloud in the background and print its environment."""
    from cloudmirror.local import cloud

    try:
        state = cloud.up(provider="localstack" if localstack else "moto", port=port)
    except cloud.LocalCloudError as e:
        raise fail(str(e)) from None
    console.print(f"local cloud up: {state['provider']} at {state['endpoint']}")
    if state.get("gcs_endpoint"):
        pubsub = f", notifications to Pub/Sub emulator {state['pubsub_host']}" if state.get("pubsub_host") else ""
        console.print(f"  fake-gcs-server at {state['gcs_endpoint']}{pubsub}")
    if state.get("azure_blob_port"):
        console.print(f"  Azurite blob :{state['azure_blob_port']} queue :{state['azure_queue_port']} "
                      f"(accounts {', '.join(state['azure_connection_strings'])})")
    for note in state.get("notes", []):
        console.print(f"[yellow]{note}[/yellow]")
    console.print(cloud.env_lines(state), highlight=False)


@local_app.command("down")
def local_down() -> None:
    """Stop everything `local up` started."""
    from cloudmirror.local import cloud

    stopped = cloud.down()
    console.print("local cloud stopped" if stopped else "local cloud was not running")


@local_app.command("env")
def local_env() -> None:
    """Print `export` lines for the running local cloud (eval "$(cloudmirror local env)")."""
    from cloudmirror.local import cloud

    state = cloud.read_state()
    if not state:
        raise fail("the local cloud is not running: cloudmirror local up")
    typer.echo(cloud.env_lines(state))


def demo(localstack: Annotated[bool, typer.Option(
             "--localstack", help="Run the demo on LocalStack instead of moto.")] = False,
         keep: Annotated[bool, typer.Option(help="Leave the local cloud running afterwards.")] = False) -> None:
    """Start the local cloud, mirror us-east-1 -> eu-west-1, write objects, show progress and status."""
    from cloudmirror.cli.demo import run_demo

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        ok = run_demo(console, provider="localstack" if localstack else "moto", keep=keep)
    except Exception as e:  # noqa: BLE001 - one line, not a trace
        raise fail(f"demo failed: {e}", 1) from None
    if not ok:
        raise typer.Exit(1)
