"""``fedjoint model``: the node's model registry (list, show, export)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from federation.cli.common import admin_client, config_option, fmt_time, print_table


@click.group()
def model() -> None:
    """The node's model registry (model id = the training job id)."""


@model.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def model_list(config_path: str | None, as_json: bool) -> None:
    rows = admin_client(config_path, read_only=True).call("models")
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = [("MODEL", "ALGORITHM", "CREATED", "TEST AUC", "DIGEST")]
    for r in rows:
        auc = (r.get("metrics") or {}).get("test_auc")
        table.append((r["model_id"], r["algorithm"], fmt_time(r["created"]),
                      f"{auc:.4f}" if isinstance(auc, float) else "", r["digest"][:16]))
    print_table(table)


@model.command("show")
@click.argument("model_id")
@config_option
def model_show(model_id: str, config_path: str | None) -> None:
    m = admin_client(config_path, read_only=True).call("model", model_id=model_id)
    click.echo(json.dumps(m, indent=2, default=str))


@model.command("export")
@click.argument("model_id")
@click.option("--out", "out_path", required=True, type=click.Path())
@config_option
def model_export(model_id: str, out_path: str, config_path: str | None) -> None:
    """Copy this party's model part (JSON) to OUT (mode 0600)."""
    from federation.admin import write_private
    m = admin_client(config_path, read_only=True).call("model", model_id=model_id, body=True)
    data = json.dumps(m["part"], sort_keys=True, indent=1).encode()
    write_private(Path(out_path), data)
    click.echo(f"model part {m['model_id']} ({m['algorithm']}, digest {m['digest'][:16]}...) "
               f"written to {out_path}")
