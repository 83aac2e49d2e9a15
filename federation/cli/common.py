"""What every ``fedjoint`` command group shares: exit codes, the one-line error, the
``--config`` option, the admin client (or the offline job store when the node is
stopped) and plain table/time formatting.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from federation.admin import AdminClient, AdminError
from federation.config import load_node_config

EXIT_ERROR = 1
EXIT_JOB_FAILED = 3
FINAL = ("done", "failed", "cancelled")


class CliError(click.ClickException):
    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def console(stderr: bool = False):
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


config_option = click.option(
    "--config", "-c", "config_path", envvar="FEDJOINT_CONFIG", type=click.Path(),
    help="node.toml of the local node (or set FEDJOINT_CONFIG)")


def need_config(config_path: str | None):
    if not config_path:
        raise CliError("no node config: pass --config node.toml or set FEDJOINT_CONFIG")
    return load_node_config(config_path)


class OfflineClient:
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


def admin_client(config_path: str | None, read_only: bool = False):
    cfg = need_config(config_path)
    try:
        return AdminClient(cfg.data_dir)
    except AdminError as exc:
        if read_only and "not running" in str(exc) and (Path(cfg.data_dir) /
                                                        "jobs.db").exists():
            return OfflineClient(cfg)
        raise


def fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def print_table(rows: list[tuple]) -> None:
    """Plain aligned columns (never truncated: ids must stay copyable)."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def fmt_metric(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
