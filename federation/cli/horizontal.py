"""``fedjoint horizontal``: Flower-based horizontal jobs (docs/horizontal.md).

    fedjoint horizontal keys --party platform --host 127.0.0.1 --out DIR
    fedjoint horizontal keys --party bank --name bank-a --out DIR
    fedjoint horizontal superlink start|stop --config platform.toml
    fedjoint horizontal supernode start|stop --config bank.toml
    fedjoint horizontal run JOB.toml --config platform.toml
"""

from __future__ import annotations

import json
import secrets

import click

from federation.cli.common import CliError, console
from federation.config import load_node_config


@click.group()
def horizontal() -> None:
    """Horizontal jobs across banks on Flower (SuperLink at the platform, a SuperNode
    per bank)."""


def _deploy():
    try:
        from federation.horizontal import deploy
    except ImportError as exc:
        raise CliError(f"horizontal jobs need the horizontal extra ({exc}): "
                       "pip install 'fedjoint[horizontal]'") from None
    return deploy


@horizontal.command("keys")
@click.option("--party", type=click.Choice(["platform", "bank"]), required=True)
@click.option("--name", default=None, help="the bank's name (--party bank)")
@click.option("--host", "hosts", multiple=True, help="a name or IP the banks dial "
              "(--party platform; repeat; default 127.0.0.1 and localhost)")
@click.option("--out", "out_dir", required=True, type=click.Path())
def keys_cmd(party: str, name: str | None, hosts: tuple[str, ...], out_dir: str) -> None:
    """Create the SuperLink's CA + TLS certificate, or a bank's SuperNode key."""
    from federation.horizontal import keys as K
    try:
        if party == "platform":
            res = K.init_platform_keys(out_dir, list(hosts) or ["127.0.0.1", "localhost"])
        else:
            if not name:
                raise CliError("--party bank needs --name")
            res = K.init_supernode_key(name, out_dir)
    except (ValueError, FileExistsError, OSError) as exc:
        raise CliError(str(exc)) from None
    for k, v in res.items():
        console().print(f"  {k}: {v}")


def _group(role: str):
    @click.group(role, help=f"Start or stop this node's {role} (by the PID it records).")
    def grp() -> None:
        pass

    @grp.command("start")
    @click.option("--config", "config_path", required=True, type=click.Path())
    def start(config_path: str) -> None:
        d = _deploy()
        cfg = load_node_config(config_path)
        try:
            out = d.start_superlink(cfg) if role == "superlink" else {"pid": d.start_supernode(cfg)}
        except d.DeployError as exc:
            raise CliError(str(exc)) from None
        click.echo(json.dumps({"role": role, **{k: v for k, v in out.items()}}, default=str))

    @grp.command("stop")
    @click.option("--config", "config_path", required=True, type=click.Path())
    def stop(config_path: str) -> None:
        d = _deploy()
        stopped = d.stop(load_node_config(config_path), role)
        click.echo(f"{role} {'stopped' if stopped else 'was not running'}")
    return grp


horizontal.add_command(_group("superlink"))
horizontal.add_command(_group("supernode"))


@horizontal.command("run")
@click.argument("job_path", type=click.Path())
@click.option("--config", "config_path", required=True, type=click.Path(),
              help="the platform's node.toml (its SuperLink must be running)")
def run_cmd(job_path: str, config_path: str) -> None:
    """Run a horizontal job on the running SuperLink and wait; prints its result."""
    d = _deploy()
    from federation.horizontal.job import load_job
    spec, _ = load_job(job_path)
    cfg = load_node_config(config_path)
    job_id = f"{spec.job_id.rsplit('-', 1)[0]}-{secrets.token_hex(4)}"
    try:
        path = d.run(cfg, job_path, job_id)
    except d.DeployError as exc:
        raise CliError(str(exc)) from None
    res = json.loads(path.read_text())
    res.pop("theta", None)
    click.echo(json.dumps(res, indent=1))
    if res.get("state") != "done":
        raise CliError(f"job {job_id} failed: {res.get('reason')}")
