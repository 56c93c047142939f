"""CLI verbs of this pillar. ``register(app)`` adds them to the main drivelab app."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from pathlib import Path

import typer

from drivelab import cliutil as cu
from drivelab.errors import DrivelabError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """Any free port on ``host`` right now (tests and scripts; the app binds its own socket)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on exactly ``host:port`` (port 0: any free one). A taken port is an error,
    never a silent move to another one: labellers' URLs and bookmarks must keep working."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a crash
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise DrivelabError(f"port {port} is in use (another drivelab label?); stop it, or choose "
                                "another with --port N (--port 0: any free port)", f"{host}:{port}") from None
        raise DrivelabError(f"cannot listen ({e.strerror or e})", f"{host}:{port}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def label(
    dataset: Path = typer.Argument(..., help="Dataset folder in any layout drivelab reads."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs tokens."),
    port: int = typer.Option(8765, help="Port; the app fails when it is taken (0 = any free port)."),
    token: str = typer.Option(None, help="One access token every API call must carry (needed off loopback)."),
    user: list[str] = typer.Option(None, "--user", help="NAME: the local user's name (default: your login). "
                                   "NAME:TOKEN (repeat): one labeller each, names taken from their token."),
    users: Path = typer.Option(None, "--users", help="YAML file of labellers and tokens ({name: token})."),
    allow_host: list[str] = typer.Option(None, "--allow-host", help="Host name the app may be reached "
                                         "under (repeat), e.g. a LAN name; IP addresses always work."),
    model: Path = typer.Option(None, help="Checkpoint or run folder: show its predictions and diffs; on a "
                               "COCO dataset an instance checkpoint whose objects become editable."),
    score: float = typer.Option(0.5, min=0.0, max=1.0, help="Instance models: objects scoring at least "
                                "this are offered."),
    findings: list[Path] = typer.Option(None, "--findings", help="overunder.json, per_image.parquet, "
                                        "audit.parquet/csv or a folder of them (repeat): regions drawn on "
                                        "the images."),
    sam: Path = typer.Option(None, "--sam", help="Local Segment Anything checkpoint (.pth) for point/box "
                             "prompts; needs the optional segment-anything package, never downloads."),
    device: str = cu.device_option("Device for --model: " + cu.DEVICE_HELP),
    table: Path = typer.Option(None, help="Per-image table (parquet/csv with name, loss) to sort by loss."),
    format: str = typer.Option(None, "--format", help="Dataset format (default: detected)."),
    max_upload_mb: int = typer.Option(64, help="Largest mask upload accepted, in MiB."),
) -> None:
    """Browse, paint and review masks in the browser (local web app)."""
    from rich.console import Console

    from drivelab.label.security import load_users, parse_user_options

    local, team = parse_user_options(user or [])
    if users is not None:
        if team or token:
            raise DrivelabError("give the labellers in --users or as --user NAME:TOKEN / --token, not both")
        team = load_users(users)
    if token and team:
        raise DrivelabError("--token is one shared token; with --user NAME:TOKEN each labeller has their own")
    if not _is_loopback(host) and not (token or team):
        raise DrivelabError(f"--host {host} shares the app beyond this machine: give --token or --users too")
    allowed = set(allow_host or [])
    if not _is_loopback(host):
        allowed.add(socket.gethostname())
        try:
            ipaddress.ip_address(host)
        except ValueError:
            allowed.add(host)
    import uvicorn

    from drivelab.label.app import create_app

    err = Console(stderr=True)
    sock = bind(host, port)
    try:
        app = create_app(dataset, model=model, token=token, users=team or None, user=local, table=table,
                         format=format, max_upload=max_upload_mb * 1024 * 1024, allow_hosts=allowed,
                         device=device, findings=findings or [], sam=sam, score=score)
        state = app.state.label
        port = sock.getsockname()[1]
        shown = "[" + host + "]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = socket.gethostname()
        err.print(f"drivelab label: {state.root} ({state.reader.format}, {len(state.index)} images)")
        rec = state.recovery
        if rec.rolled_back or rec.store_fixed or rec.temp_removed or rec.partial_removed or rec.problems:
            err.print(state.recovery.line())
        if state.read_only_reason:
            err.print(f"browse only: {state.read_only_reason}")
        if team:
            err.print(f"{len(team)} labellers; each opens the URL with their own token")
            url = f"http://{shown}:{port}/#token=THEIR_TOKEN"
        else:
            url = f"http://{shown}:{port}/" + (f"#token={token}" if token else "")
        print(f"open {url}", flush=True)
        # A long-lived server: move the start-up heap (the image index) out of the cyclic
        # collector's sight, or its first full collection rescans it inside some unlucky request
        # (a 250 ms p99 at 100k images). Reference counting still frees what is replaced.
        import gc

        gc.freeze()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server.run(sockets=[sock])
    finally:
        sock.close()
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("label", rich_help_panel=cu.LABEL)(label)
