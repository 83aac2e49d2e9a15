"""``fedjoint serve``: the online scoring API on the bank's node (docs/serving.md).

Runs in its own process beside the node daemon: it reads the bank's model part and
job store from the node's data directory and reaches the platform's node over the
same mutual-TLS channel identity (control requests only).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from federation.cli.common import CliError, config_option, need_config


def token_from(path: Path) -> str:
    """The bearer token in ``path`` (created, 0600, if missing; refused if readable by
    others)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise CliError(f"{path}: the token file is readable by group or others "
                       f"(chmod 600 {path})")
    token = path.read_text().strip()
    if len(token) < 16:
        raise CliError(f"{path}: the token must be at least 16 characters")
    return token


def build(cfg, model_ids: list[str], token_file: str | None = None):
    """(ASGI app, served models, token) for ``cfg``'s node and ``model_ids``."""
    from federation.serving.app import create_app
    from federation.serving.bank import ServedModel, ServingError
    if cfg.party != "bank":
        raise CliError("fedjoint serve runs on the bank's node (this node is the platform; "
                       "it answers lookups from its daemon, see [serving] models)")
    try:
        models = [ServedModel(cfg, m) for m in model_ids]
    except ServingError as exc:
        raise CliError(str(exc)) from None
    token = token_from(Path(token_file) if token_file else cfg.serving.token_file)
    app, _ = create_app({m.model_id: m for m in models}, token, cfg.limits,
                        cfg.serving.batch_wait_ms / 1000)
    return app, models, token


@click.command("serve")
@click.option("--model", "model_ids", multiple=True, required=True,
              help="model id to serve (repeatable; see `fedjoint model list`)")
@config_option
@click.option("--listen", default=None, help="host:port (default: [serving] listen, "
              "127.0.0.1:8089)")
@click.option("--token-file", default=None, type=click.Path(),
              help="bearer token file (default: [serving] token_file)")
@click.option("--score-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="instead of serving: score this CSV (id + bank features) through the "
              "platform's pseudonym store, no PSI, and exit")
@click.option("--out", "out_path", default=None, type=click.Path(),
              help="with --score-file: where to write id,score,probability,platform_data")
@click.option("--id-column", default="id", show_default=True)
def serve(model_ids: tuple[str, ...], config_path: str | None, listen: str | None,
          token_file: str | None, score_file: str | None, out_path: str | None,
          id_column: str) -> None:
    """Online scoring API for trained models (POST /v1/score, /v1/score:batch)."""
    if score_file:
        cfg = need_config(config_path)
        if len(model_ids) != 1 or not out_path:
            raise CliError("--score-file needs exactly one --model and --out")
        return bulk(cfg, model_ids[0], score_file, out_path, id_column)
    try:
        import uvicorn
    except ImportError:
        raise CliError("fedjoint serve needs the serve extra: pip install "
                       "'fedjoint[serve]'") from None
    from federation.config import parse_address
    cfg = need_config(config_path)
    app, models, _ = build(cfg, list(model_ids), token_file)
    host, port = parse_address(listen or cfg.serving.listen, str(cfg.file), "--listen")
    click.echo(f"serving {', '.join(m.model_id for m in models)} on http://{host}:{port} "
               f"(token in {token_file or cfg.serving.token_file}); Ctrl-C to stop", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                loop="auto", http="auto")


def bulk(cfg, model_id: str, in_path: str, out_path: str, id_column: str) -> None:
    """``--score-file``: score a CSV through a serving session, with progress."""
    from federation.serving.bank import ServedModel, ServingError
    from federation.serving.bulk import score_file
    if cfg.party != "bank":
        raise CliError("fedjoint serve runs on the bank's node")
    try:
        served = ServedModel(cfg, model_id)
    except ServingError as exc:
        raise CliError(str(exc)) from None
    last = [0.0]

    def progress(rows: int, seconds: float) -> None:
        if seconds - last[0] >= 2.0:
            last[0] = seconds
            click.echo(f"  {rows} rows scored, {rows / seconds:.0f}/s", err=True)
    try:
        res = score_file(served, in_path, out_path, id_column=id_column, progress=progress)
    finally:
        served.close()
    click.echo(f"scored {res['rows']} applicants in {res['seconds']:.1f} s "
               f"({res['per_s']:.0f}/s; {res['held']} held by the platform) -> {out_path}")
