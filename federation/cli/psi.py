"""``fedjoint psi``: the platform's PSI query budget and OPRF key (docs/psi.md).

Both commands work on the node's own files (the key store, caches and the SQLite
ledger under its data_dir), whether the node runs or not: a rotation waits for jobs
that are reading the key and is seen by every job that starts after it.
"""

from __future__ import annotations

import json
import time

import click

from federation.cli.common import CliError, config_option, need_config


@click.group()
def psi() -> None:
    """The platform's PSI query budget and OPRF key rotation."""


def _platform(config_path: str | None):
    cfg = need_config(config_path)
    if cfg.party != "platform":
        raise CliError(f"{cfg.file}: {cfg.name} is the bank's node; the PSI query budget "
                       "and OPRF keys are the platform's")
    return cfg


@psi.command("rotate")
@config_option
@click.option("--reason", default="operator request", show_default=True,
              help="recorded in the node's PSI ledger")
def psi_rotate(config_path: str | None, reason: str) -> None:
    """Rotate the unbalanced-PSI key now: re-encrypt the cache, erase the old key."""
    from federation.node import psi_budget
    cfg = _platform(config_path)
    rot = psi_budget.rotate(cfg, f"fedjoint psi rotate: {reason}")
    old = rot["old_key_id"] or "(none)"
    click.echo(f"{cfg.name}: OPRF key for {cfg.peer.name} rotated {old} -> "
               f"{rot['new_key_id']}; {rot['n_ids']} cached IDs re-encrypted in "
               f"{len(rot['caches'])} cache(s), {rot['seconds']:.2f} s; old key erased")


@psi.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def psi_status(config_path: str | None, as_json: bool) -> None:
    """The peer's query budget use and the current key's age."""
    from federation.node import psi_budget
    cfg = _platform(config_path)
    st = psi_budget.status(cfg)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{cfg.name}: {st['peer']} looked up {st['used_24h']} IDs in the last 24 h "
               f"(psi_max_queries_per_day = {st['max_per_day']}, per job "
               f"{st['max_per_job']})")
    if not st["key_id"]:
        click.echo("  no OPRF key yet (made by the first unbalanced PSI)")
    else:
        click.echo(f"  OPRF key {st['key_id']}: {st['key_age_days']:.2f} days old, "
                   f"{st['served_under_key']} queries served; psi_key_rotation = "
                   f"{st['key_rotation']!r}"
                   + (f"; due: {st['rotation_due']}" if st["rotation_due"] else ""))
    for r in st["rotations"]:
        at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r["ts"]))
        click.echo(f"  rotated {at}: {r['old_key_id'] or '(none)'} -> {r['new_key_id']}, "
                   f"{r['n_ids']} IDs, {r['seconds']:.2f} s ({r['reason']})")
