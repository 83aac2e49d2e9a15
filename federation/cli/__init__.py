"""The ``fedjoint`` command.

Every failure prints one line (``error: ...``) to stderr and exits non-zero; set
``FEDJOINT_DEBUG=1`` to see tracebacks. Commands that talk to a node find it through
``--config node.toml`` (or ``FEDJOINT_CONFIG``): the admin endpoint's address and the
operator token are in the node's data directory.

One module per command group (:mod:`.keys`, :mod:`.node`, :mod:`.job`, :mod:`.model`,
:mod:`.audit`, :mod:`.psi`, :mod:`.demo`, :mod:`.serve`) and their shared helpers
(:mod:`.common`); this module
assembles the ``fedjoint`` group and holds :func:`main`, the console script.
"""

from __future__ import annotations

import os
import sys

import click

from federation.admin import AdminError
from federation.cli.audit import audit_group
from federation.cli.common import EXIT_ERROR
from federation.cli.demo import demo as demo_command
from federation.cli.horizontal import horizontal as horizontal_group
from federation.cli.job import job as job_group
from federation.cli.keys import keys as keys_group
from federation.cli.model import model as model_group
from federation.cli.node import node as node_group
from federation.cli.psi import psi as psi_group
from federation.cli.serve import serve as serve_command
from federation.config import ConfigError
from federation.data import DataError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedjoint", message="fedjoint %(version)s")
def cli() -> None:
    """fedjoint: privacy-preserving joint credit modelling between a bank and a
    data platform (PSI + SecureBoost / logistic regression over mutual-TLS gRPC)."""


for _command in (keys_group, node_group, job_group, model_group, audit_group, psi_group,
                 demo_command, serve_command, horizontal_group):
    cli.add_command(_command)


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
