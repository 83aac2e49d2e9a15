"""``fedjoint node``: run the party node daemon and check the peer."""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from federation.admin import AdminClient, AdminError
from federation.cli.common import EXIT_ERROR, config_option, console, need_config

#: on SIGINT/SIGTERM, how long the node waits for its running jobs to stop (their job
#: processes are terminated; the channel and the log close after)
STOP_JOBS_TIMEOUT_S = 6.0


@click.group()
def node() -> None:
    """Run and check the party node."""


@node.command("start")
@config_option
@click.option("--quiet", is_flag=True, help="do not echo the JSON log to stderr")
def node_start(config_path: str | None, quiet: bool) -> None:
    """Run the node daemon until interrupted (Ctrl-C / SIGTERM)."""
    from federation.node import Node
    cfg = need_config(config_path)
    n = Node(cfg, quiet=quiet)
    try:
        n.start()
    except Exception:
        n.stop()
        raise
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if not quiet:
        click.echo(f"fedjoint node {cfg.name} ({cfg.party}) listening on "
                   f"{n.channel_address}; admin on {n.admin.address}; Ctrl-C to stop",
                   err=True)
    while not stop.wait(0.5):
        pass
    # running jobs holding a checkpoint become "interrupted" (resumed at the next start);
    # the others fail with "the node stopped while the job ran" and their transcripts
    # are closed; the whole stop stays within 10 s of the signal
    n.stop(timeout=STOP_JOBS_TIMEOUT_S)


@node.command("reload")
@config_option
def node_reload(config_path: str | None) -> None:
    """Pick up edits to node.toml's [datasets], [policy] and workers (no restart)."""
    cfg = need_config(config_path)
    res = AdminClient(cfg.data_dir).call("reload", timeout=30)
    what = ", ".join(res.get("reloaded") or []) or "nothing changed"
    click.echo(f"{cfg.name}: reloaded {res.get('file')}: {what}")


@node.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def node_check(config_path: str | None, as_json: bool) -> None:
    """Reach the peer: round-trip latency and both fingerprints."""
    cfg = need_config(config_path)
    try:
        res = AdminClient(cfg.data_dir).call("check", timeout=60)
        via = "running node"
    except AdminError as exc:
        if "not running" not in str(exc):
            raise
        from federation.node import standalone_check
        res = standalone_check(cfg)
        via = "standalone client (the local node is not running)"
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        c = console()
        c.print(f"[bold]{cfg.name}[/] ({cfg.party}) -> [bold]{cfg.peer.name}[/] at "
                f"{cfg.peer.address}  [dim](via {via})[/]")
        c.print(f"  local certificate fingerprint:  {res.get('local_cert_fingerprint', '')}")
        c.print(f"  local signing fingerprint:      {res.get('local_signing_fingerprint', '')}")
        c.print(f"  peer certificate fingerprint:   {res.get('peer_cert_fingerprint', '')} "
                f"(pinned)")
        c.print(f"  peer signing fingerprint:       {res.get('peer_signing_fingerprint', '')}")
        if res.get("ok"):
            c.print(f"  [green]peer reachable[/]: round trip {res['rtt_ms']:.2f} ms "
                    f"(median of {res.get('pings', 1)}); it answers as "
                    f"{res.get('peer_reports', '?')} with the pinned certificate and key")
        else:
            c.print(f"  [red]peer unreachable[/]: {res.get('error')}")
    if not res.get("ok"):
        sys.exit(EXIT_ERROR)


@node.command("serving")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def node_serving(config_path: str | None, as_json: bool) -> None:
    """Open online-scoring sessions: per peer and model, lookups, IDs, budget left."""
    cfg = need_config(config_path)
    try:
        res = AdminClient(cfg.data_dir).call("serving", timeout=30)
    except AdminError as exc:
        if "not running" not in str(exc) or cfg.party != "bank":
            raise
        from federation.serving.bank import bank_sessions  # the serve processes' files
        res = bank_sessions(cfg)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    rows = res.get("sessions") or []
    click.echo(f"{cfg.name} ({cfg.party}): {len(rows)} open serving session(s)")
    if rows:
        last = "last_lookup" if cfg.party == "platform" else "budget_left"
        click.echo(f"  {'peer':<14} {'model':<34} {'session':<9} {'started (UTC)':<21} "
                   f"{'lookups':>8} {'ids':>9} {'held':>9}  {last}")
    for r in rows:
        click.echo(f"  {r['peer'] or '':<14} {r['model']:<34} {r['session'] or '':<9} "
                   f"{r['opened'] or '':<21} {r['lookups']:>8} {r['ids']:>9} {r['held']:>9}  "
                   f"{r.get(last) if r.get(last) is not None else '-'}")
    b = res.get("budget")
    if b:
        click.echo(f"  budget for {b['peer']} on {b['day']} (UTC): {b['used']} of "
                   f"{b['daily_budget']} lookups used, {b['left']} left; "
                   f"rate_per_s = {b['rate_per_s']:g}")
