"""``fedjoint demo``: both nodes on loopback, end to end."""

from __future__ import annotations

import click

from federation.cli.common import CliError


@click.command("demo")
@click.option("--quick", is_flag=True, help="small data, small test keys: under a minute")
@click.option("--dir", "work_dir", type=click.Path(), default=None,
              help="working directory (default: a new temporary directory)")
def demo(quick: bool, work_dir: str | None) -> None:
    """Both nodes on loopback with TLS: PSI, SecureBoost, LR, scoring, audit."""
    from federation import demo as D
    res = D.run_demo(quick=quick, work_dir=work_dir)
    if not all(res.verified.values()):
        raise CliError("a transcript did not verify (see above)")
