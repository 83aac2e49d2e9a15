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
@click.option("--format", "fmt", type=click.Choice(["fedjoint", "xgboost-json",
                                                   "sklearn-json", "onnx", "pmml"]),
              default="fedjoint", show_default=True,
              help="fedjoint: this party's part; xgboost-json (SecureBoost), sklearn-json "
              "(LR), onnx (both), pmml (LR; onnx and pmml need the 'export' extra): the "
              "full model, on the bank's node, when both nodes' [serving] reveal_models "
              "list it")
@config_option
def model_export(model_id: str, out_path: str, fmt: str, config_path: str | None) -> None:
    """Write this party's model part, or the full model, to OUT (mode 0600)."""
    from federation.admin import write_private
    if fmt != "fedjoint":
        return _export_full(model_id, out_path, fmt, config_path)
    m = admin_client(config_path, read_only=True).call("model", model_id=model_id, body=True)
    data = json.dumps(m["part"], sort_keys=True, indent=1).encode()
    write_private(Path(out_path), data)
    click.echo(f"model part {m['model_id']} ({m['algorithm']}, digest {m['digest'][:16]}...) "
               f"written to {out_path}")


def _export_full(model_id: str, out_path: str, fmt: str, config_path: str | None) -> None:
    """The full model in ``fmt``, the platform's half revealed over the channel."""
    from federation.admin import AdminError, write_private
    from federation.cli.common import need_config
    from federation.serving.export import (
        FULL_FORMATS,
        ExportRefused,
        fetch_platform_table,
    )
    cfg = need_config(config_path)
    if cfg.party != "bank":
        raise AdminError("a full export is made on the bank's node (it holds the trees)")
    try:
        rec = admin_client(config_path, read_only=True).call("model", model_id=model_id)
        has = FULL_FORMATS.get(rec["algorithm"], ())
        if fmt not in has:
            raise ExportRefused(f"a {rec['algorithm']} model has no {fmt} export (formats: "
                                f"{', '.join(('fedjoint', *has))})")
        if fmt in ("onnx", "pmml"):       # before the platform is asked to reveal
            import importlib
            importlib.import_module(f"federation.serving.export_{fmt}").need_converters(
                rec["algorithm"])
        part, table = fetch_platform_table(cfg, rec["model_id"], fmt=fmt)
        data = _document(fmt, part, table)
        _record_export(cfg, rec["model_id"], fmt, data, table)
    except ExportRefused as exc:
        raise AdminError(f"export of {model_id} refused: {exc}") from None
    write_private(Path(out_path), data)
    reveal = Path(out_path + ".reveal.json")
    write_private(reveal, json.dumps({"statement": table["statement"],
                                      "signature": table["signature"]}, indent=1).encode())
    click.echo(f"full model {part.job_id} ({part.algorithm}, the platform's half revealed "
               f"by {cfg.peer.name}) written to {out_path} as {fmt}; the signed reveal "
               f"statement to {reveal}")


def _record_export(cfg, model_id: str, fmt: str, data: bytes, table: dict) -> None:
    """The bank's export act, signed into its transcript of the training job (before
    the file is written: no record, no export)."""
    import hashlib

    from federation.node.peer import load_identities
    from federation.serving.export import ExportRefused
    from federation.transcript import TranscriptError
    from federation.transcript.exports import append_export, training_transcript
    local, _ = load_identities(cfg)
    try:
        append_export(training_transcript(cfg.data_dir, model_id), local.signing_key,
                      {"act": "export", "model": model_id, "format": fmt,
                       "sha256": hashlib.sha256(data).hexdigest(),
                       "statement": table["statement"], "signature": table["signature"]})
    except (TranscriptError, ValueError) as exc:
        raise ExportRefused(f"the export cannot be recorded in the training job's "
                            f"transcript ({exc})") from None


def _document(fmt: str, part, table: dict) -> bytes:
    """The bytes of the full model in ``fmt``."""
    from federation.serving import export
    if fmt == "onnx":
        from federation.serving.export_onnx import onnx_model
        return onnx_model(part, table)
    if fmt == "pmml":
        from federation.serving.export_pmml import pmml_document
        return pmml_document(part, table)
    build = export.xgboost_json if fmt == "xgboost-json" else export.sklearn_json
    return json.dumps(build(part, table)).encode()
