"""``fedjoint keys``: create and inspect party keys."""

from __future__ import annotations

import click

from federation.cli.common import CliError, console


@click.group()
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
    c = console()
    c.print(f"[bold]Keys for {party}[/] in {out_dir}")
    c.print(f"  private (0600, keep):  {res['tls_key']}, {res['signing_key']}")
    c.print(f"  public (give to peer): {res['tls_cert']}, {res['signing_pub']}")
    c.print(f"  certificate fingerprint: [bold]{res['cert_fingerprint']}[/]")
    c.print(f"  signing key fingerprint: [bold]{res['signing_fingerprint']}[/]")
    click.echo("Read both fingerprints to the peer's operator over a second channel (phone); "
               "they pin the certificate fingerprint in their node.toml [peer].")
