"""The ``fedjoint`` command.

Every failure prints one line (``error: ...``) to stderr and exits non-zero; set
``FEDJOINT_DEBUG=1`` to see tracebacks. Commands that talk to a node find it through
``--config node.toml`` (or ``FEDJOINT_CONFIG``): the admin endpoint's address and the
operator token are in the node's data directory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from federation.admin import AdminClient, AdminError
from federation.config import ConfigError, load_job_spec, load_node_config
from federation.data import DataError

EXIT_ERROR = 1
EXIT_JOB_FAILED = 3
FINAL = ("done", "failed", "cancelled")


class CliError(click.ClickException):
    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _console(stderr: bool = False):
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


config_option = click.option(
    "--config", "-c", "config_path", envvar="FEDJOINT_CONFIG", type=click.Path(),
    help="node.toml of the local node (or set FEDJOINT_CONFIG)")


def _need_config(config_path: str | None):
    if not config_path:
        raise CliError("no node config: pass --config node.toml or set FEDJOINT_CONFIG")
    return load_node_config(config_path)


class _OfflineClient:
    """Read-only calls answered from the node's own job store when it is stopped."""

    def __init__(self, cfg):
        from federation.node import Node
        self._node = Node(cfg, quiet=True, offline=True)
        self._handlers = self._node.offline_handlers()

    def call(self, op: str, timeout: float | None = None, **args):
        fn = self._handlers.get(op)
        if fn is None:
            raise AdminError(f"the node is not running (start it with `fedjoint node start "
                             f"--config {self._node.cfg.file}`)")
        return fn(args)


def _client(config_path: str | None, read_only: bool = False):
    cfg = _need_config(config_path)
    try:
        return AdminClient(cfg.data_dir)
    except AdminError as exc:
        if read_only and "not running" in str(exc) and (Path(cfg.data_dir) /
                                                        "jobs.db").exists():
            return _OfflineClient(cfg)
        raise


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _print_table(rows: list[tuple]) -> None:
    """Plain aligned columns (never truncated: ids must stay copyable)."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _fmt_metric(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedjoint", message="fedjoint %(version)s")
def cli() -> None:
    """fedjoint: privacy-preserving joint credit modelling between a bank and a
    data platform (PSI + SecureBoost / logistic regression over mutual-TLS gRPC)."""


# ------------------------------------------------------------------------- keys


@cli.group()
def keys() -> None:
    """Create and inspect party keys."""


@keys.command("init")
@click.option("--party", required=True, help="this node's name (e.g. bank-a)")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="directory for key "
              "files")
def keys_init(party: str, out_dir: str) -> None:
    """Create the TLS key + self-signed certificate and the Ed25519 signing key."""
    from federation import keys as K
    try:
        res = K.init_party_keys(party, out_dir)
    except (ValueError, FileExistsError, OSError) as exc:
        raise CliError(str(exc)) from None
    c = _console()
    c.print(f"[bold]Keys for {party}[/] in {out_dir}")
    c.print(f"  private (0600, keep):  {res['tls_key']}, {res['signing_key']}")
    c.print(f"  public (give to peer): {res['tls_cert']}, {res['signing_pub']}")
    c.print(f"  certificate fingerprint: [bold]{res['cert_fingerprint']}[/]")
    c.print(f"  signing key fingerprint: [bold]{res['signing_fingerprint']}[/]")
    click.echo("Read both fingerprints to the peer's operator over a second channel (phone); "
               "they pin the certificate fingerprint in their node.toml [peer].")


# ------------------------------------------------------------------------- node


@cli.group()
def node() -> None:
    """Run and check the party node."""


@node.command("start")
@config_option
@click.option("--quiet", is_flag=True, help="do not echo the JSON log to stderr")
def node_start(config_path: str | None, quiet: bool) -> None:
    """Run the node daemon until interrupted (Ctrl-C / SIGTERM)."""
    from federation.node import Node
    cfg = _need_config(config_path)
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
    n.stop()


@node.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def node_check(config_path: str | None, as_json: bool) -> None:
    """Reach the peer: round-trip latency and both fingerprints."""
    cfg = _need_config(config_path)
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
        c = _console()
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


# ------------------------------------------------------------------------- job


@cli.group()
def job() -> None:
    """Submit and follow jobs."""


@job.command("submit")
@click.argument("job_file", type=click.Path())
@config_option
@click.option("--wait", is_flag=True, help="follow the job until it ends")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def job_submit(job_file: str, config_path: str | None, wait: bool, as_json: bool) -> None:
    """Submit JOB_FILE (job.toml) to the local (bank) node."""
    spec = load_job_spec(job_file)
    client = _client(config_path)
    res = client.call("submit", spec=spec.to_dict(), source=str(job_file))
    job_id = res["job_id"]
    if not wait:
        if as_json:
            click.echo(json.dumps(res))
        else:
            click.echo(f"submitted job {job_id}; follow it with `fedjoint job status "
                       f"{job_id}` or `fedjoint job logs {job_id} --follow`")
        return
    rec = _follow(client, job_id, quiet=as_json)
    if as_json:
        click.echo(json.dumps(rec, default=str))
    else:
        _print_status(rec)
    if rec["state"] != "done":
        sys.exit(EXIT_JOB_FAILED)


def _follow(client: AdminClient, job_id: str, quiet: bool = False, poll: float = 0.3) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    c = _console(stderr=True)
    last_state = None
    told_waiting = False

    def tell_waiting(rec: dict) -> None:
        nonlocal told_waiting
        if rec.get("waiting") and not told_waiting and not quiet:
            click.echo(f"{job_id}: {rec['waiting']}", err=True)
            told_waiting = True
    if quiet or not c.is_terminal:
        while True:
            rec = client.call("status", job_id=job_id)
            tell_waiting(rec)
            if rec["state"] != last_state and not quiet:
                click.echo(f"{job_id}: {rec['state']}", err=True)
                last_state = rec["state"]
            if rec["state"] in FINAL:
                return rec
            time.sleep(poll)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=c,
                  transient=True) as prog:
        task = prog.add_task(job_id, total=1.0, step="")
        while True:
            rec = client.call("status", job_id=job_id)
            if rec.get("waiting") and not told_waiting:
                prog.console.print(f"{job_id}: {rec['waiting']}")
                told_waiting = True
            p = rec.get("progress") or {}
            prog.update(task, description=f"{rec['state']}", completed=p.get("fraction", 0),
                        step=p.get("step", ""))
            if rec["state"] in FINAL:
                return rec
            time.sleep(poll)


def _print_status(rec: dict) -> None:
    c = _console()
    color = {"done": "green", "failed": "red", "cancelled": "yellow"}.get(rec["state"], "cyan")
    c.print(f"[bold]{rec['job_id']}[/]  {rec['algorithm']}  [{color}]{rec['state']}[/]")
    if rec.get("error"):
        c.print(f"  reason: {rec['error']}")
    if rec.get("waiting"):
        c.print(f"  {rec['waiting']}")
    p = rec.get("progress") or {}
    if rec["state"] not in FINAL and p.get("step"):
        c.print(f"  progress: {p['step']} {100 * float(p.get('fraction', 0)):.0f}%")
    m = rec.get("metrics") or {}
    shown = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
    if shown:
        c.print("  " + "  ".join(f"{k}={_fmt_metric(v)}" for k, v in sorted(shown.items())))
    t = rec.get("timings") or {}
    if t.get("total"):
        c.print(f"  time: {t['total']:.1f} s")
    art = rec.get("artifacts") or {}
    for k in ("model", "scores", "transcript"):
        if art.get(k):
            c.print(f"  {k}: {art[k]}")


@job.command("status")
@click.argument("job_id")
@config_option
@click.option("--json", "as_json", is_flag=True)
def job_status(job_id: str, config_path: str | None, as_json: bool) -> None:
    """Show one job's state, error and metrics."""
    rec = _client(config_path, read_only=True).call("status", job_id=job_id)
    if as_json:
        click.echo(json.dumps(rec, indent=2, default=str))
    else:
        _print_status(rec)


@job.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True)
def job_list(config_path: str | None, as_json: bool, limit: int) -> None:
    """List recent jobs on this node."""
    rows = _client(config_path, read_only=True).call("list", limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = [("JOB", "ALGORITHM", "ROLE", "STATE", "CREATED", "REASON / METRICS")]
    for r in rows:
        m = r.get("metrics") or {}
        extra = r.get("error") or r.get("waiting") or (
            f"auc={m['test_auc']:.4f}" if "test_auc" in m else
            f"intersection={m['intersection']:,}" if "intersection" in m else "")
        table.append((r["job_id"], r["algorithm"], r["role"], r["state"],
                      _fmt_time(r["created"]), extra))
    _print_table(table)


@job.command("logs")
@click.argument("job_id")
@config_option
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def job_logs(job_id: str, config_path: str | None, follow: bool, as_json: bool) -> None:
    """Print a job's event log."""
    client = _client(config_path, read_only=True)
    after = 0
    while True:
        res = client.call("logs", job_id=job_id, after=after)
        for e in res["events"]:
            after = max(after, e["id"])
            if as_json:
                click.echo(json.dumps(e, default=str))
            else:
                fields = {k: v for k, v in e.items() if k not in ("id", "ts", "event")}
                rest = " ".join(f"{k}={v}" for k, v in fields.items())
                click.echo(f"{_fmt_time(e['ts'])}  {e['event']:<22} {rest}")
        if not follow or res["state"] in FINAL:
            if follow and res["state"] in FINAL:
                # drain events written alongside the final transition
                for e in client.call("logs", job_id=job_id, after=after)["events"]:
                    click.echo(json.dumps(e, default=str) if as_json else
                               f"{_fmt_time(e['ts'])}  {e['event']}")
            return
        time.sleep(0.5)


@job.command("cancel")
@click.argument("job_id")
@config_option
def job_cancel(job_id: str, config_path: str | None) -> None:
    """Cancel a job (the peer is told too)."""
    res = _client(config_path).call("cancel", job_id=job_id)
    click.echo(f"job {res['job_id']} cancelled")


@job.command("approve")
@click.argument("job_id")
@config_option
def job_approve(job_id: str, config_path: str | None) -> None:
    """Approve a proposed job (platform, when require_approval = true)."""
    res = _client(config_path).call("approve", job_id=job_id)
    click.echo(f"job {res['job_id']} approved")


@job.command("refuse")
@click.argument("job_id")
@config_option
@click.option("--reason", default="", help="shown to the bank's modeler")
def job_refuse(job_id: str, config_path: str | None, reason: str) -> None:
    """Refuse a proposed job (platform, when require_approval = true)."""
    res = _client(config_path).call("refuse", job_id=job_id, reason=reason)
    click.echo(f"job {res['job_id']} refused")


@job.command("report")
@click.argument("job_id")
@config_option
@click.option("--out", "out_path", type=click.Path(), default=None,
              help="HTML file to write (default: <data_dir>/jobs/<job>/report.html)")
def job_report(job_id: str, config_path: str | None, out_path: str | None) -> None:
    """Write a self-contained HTML report of a job."""
    from federation import report
    cfg = _need_config(config_path)
    data = _client(config_path, read_only=True).call("report_data", job_id=job_id)
    out = Path(out_path) if out_path else Path(cfg.data_dir) / "jobs" / data["job"]["id"] / \
        "report.html"
    path = report.write_report(data, out)
    click.echo(f"report written to {path}")


# ------------------------------------------------------------------------- model


@cli.group()
def model() -> None:
    """The node's model registry (model id = the training job id)."""


@model.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def model_list(config_path: str | None, as_json: bool) -> None:
    rows = _client(config_path, read_only=True).call("models")
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = [("MODEL", "ALGORITHM", "CREATED", "TEST AUC", "DIGEST")]
    for r in rows:
        auc = (r.get("metrics") or {}).get("test_auc")
        table.append((r["model_id"], r["algorithm"], _fmt_time(r["created"]),
                      f"{auc:.4f}" if isinstance(auc, float) else "", r["digest"][:16]))
    _print_table(table)


@model.command("show")
@click.argument("model_id")
@config_option
def model_show(model_id: str, config_path: str | None) -> None:
    m = _client(config_path, read_only=True).call("model", model_id=model_id)
    click.echo(json.dumps(m, indent=2, default=str))


@model.command("export")
@click.argument("model_id")
@click.option("--out", "out_path", required=True, type=click.Path())
@config_option
def model_export(model_id: str, out_path: str, config_path: str | None) -> None:
    """Copy this party's model part (JSON) to OUT (mode 0600)."""
    from federation.admin import write_private
    m = _client(config_path, read_only=True).call("model", model_id=model_id, body=True)
    data = json.dumps(m["part"], sort_keys=True, indent=1).encode()
    write_private(Path(out_path), data)
    click.echo(f"model part {m['model_id']} ({m['algorithm']}, digest {m['digest'][:16]}...) "
               f"written to {out_path}")


# ------------------------------------------------------------------------- audit / demo


def _add_optional_commands() -> None:
    try:
        from federation import audit
        make = getattr(audit, "_cli", None) or getattr(audit, "cli_group", None)
        cmd = make() if callable(make) and not isinstance(make, click.Command) else make
        if isinstance(cmd, click.Command):
            cli.add_command(cmd, "audit")
    except Exception:  # noqa: BLE001 - the audit tools are optional for the node CLI
        pass


@cli.command("demo")
@click.option("--quick", is_flag=True, help="small data, small test keys: under a minute")
@click.option("--dir", "work_dir", type=click.Path(), default=None,
              help="working directory (default: a new temporary directory)")
def demo(quick: bool, work_dir: str | None) -> None:
    """Both nodes on loopback with TLS: PSI, SecureBoost, LR, scoring, audit."""
    from federation import demo as D
    res = D.run_demo(quick=quick, work_dir=work_dir)
    if not all(res.verified.values()):
        raise CliError("a transcript did not verify (see above)")


_add_optional_commands()


def main(argv: list[str] | None = None) -> None:
    from federation.keys import KeyFileError
    debug = os.environ.get("FEDJOINT_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="fedjoint", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code else EXIT_ERROR)
    except (ConfigError, DataError, AdminError, KeyFileError) as exc:
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        click.echo(f"error: {msg}", err=True)
        sys.exit(EXIT_ERROR)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"error: {type(exc).__name__}: {msg} (FEDJOINT_DEBUG=1 for details)",
                   err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
