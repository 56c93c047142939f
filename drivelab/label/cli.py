"""CLI verbs of this pillar. ``register(app)`` adds them to the main drivelab app."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from drivelab.errors import DrivelabError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1", preferred: int = 0) -> int:
    """``preferred`` when it can be bound, else any free port."""
    import socket

    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DrivelabError(f"cannot bind any port on {host}")


def label(
    dataset: Path = typer.Argument(..., help="Dataset folder in any layout drivelab reads."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8765, help="Port (a free one is picked when it is taken; 0 = any)."),
    token: str = typer.Option(None, help="Access token every API call must carry (required off loopback)."),
    model: Path = typer.Option(None, help="Checkpoint or run folder: show its predictions and diffs."),
    table: Path = typer.Option(None, help="Per-image table (parquet/csv with name, loss) to sort by loss."),
    user: str = typer.Option(None, help="Name recorded as holder/author (default: your login)."),
    format: str = typer.Option(None, "--format", help="Dataset format (default: detected)."),
    max_upload_mb: int = typer.Option(64, help="Largest mask upload accepted, in MiB."),
) -> None:
    """Browse, paint and review masks in the browser (local web app)."""
    if not _is_loopback(host) and not token:
        raise DrivelabError(f"--host {host} shares the app beyond this machine: give --token too")
    import uvicorn

    from drivelab.label.app import create_app

    app = create_app(dataset, model=model, token=token, table=table, user=user, format=format,
                     max_upload=max_upload_mb * 1024 * 1024)
    port = free_port(host, port)
    shown = "[" + host + "]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    state = app.state.label
    print(f"drivelab label: {state.root} ({state.reader.format}, {len(state.items)} images)")
    print(f"open {url}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("label")(label)
