"""A bank node's policy for horizontal jobs, and the aggregator's per-bank transcripts.

:func:`open_bank` is what the bank's ClientApp calls for every message: it refuses
the job unless the bank's node.toml ``[horizontal]`` says ``join = true`` and allows
the algorithm, the job's ``min_banks`` and its aggregation mode, loads the configured
dataset and picks the job's columns in the job's order — refusing, with the column
named, a column the dataset lacks or does not list, a categorical column or one with
missing values (the job's schema is complete float columns). Its transcript and its
report live under ``data_dir/horizontal/<job_id>/``.
"""

from __future__ import annotations

import json
import re

import numpy as np

from federation.config import ConfigError
from federation.config.node import NodeConfig
from federation.data import DataError, load_dataset
from federation.horizontal.ledger import TranscriptLedger, job_dir, open_appending
from federation.keys import (
    load_signing_key,
    load_signing_pubkey,
    parse_signing_pubkey,
    signing_pub_hex,
)
from federation.report import write_report
from parties.horizontal.bank import BankRefused, BankSide


def _policy(cfg: NodeConfig, job: dict) -> None:
    h, f = cfg.horizontal, cfg.file
    if cfg.party != "bank":
        raise BankRefused(f"{f}: this node is the {cfg.party}, not a bank")
    if not h.join:
        raise BankRefused(f"{f}: [horizontal] join = false: {cfg.name} does not take part "
                          "in horizontal jobs")
    if job["algorithm"] not in h.allowed_algorithms:
        raise BankRefused(f"{f}: [horizontal] allowed_algorithms does not list "
                          f"{job['algorithm']!r}")
    p = job["params_obj"]
    if h.require_secure_aggregation and not p.secure_aggregation:
        raise BankRefused(f"{f}: [horizontal] require_secure_aggregation = true refuses a "
                          "job with params.secure_aggregation = false")
    if h.require_signed_rounds and not p.signed_rounds:
        raise BankRefused(f"{f}: [horizontal] require_signed_rounds = true refuses a job "
                          "with params.signed_rounds = false")
    if p.min_banks < h.min_banks:
        raise BankRefused(f"{f}: [horizontal] min_banks = {h.min_banks} refuses a job with "
                          f"params.min_banks = {p.min_banks}")


def load_bank_rows(cfg: NodeConfig, columns: list[str], frame=None):
    """The configured dataset's job columns (float64, in the job's order) and labels."""
    ds = cfg.dataset(cfg.horizontal.dataset or "")
    if frame is not None:
        ds = type(ds)(**{**ds.__dict__, "frame": frame})
    try:
        data = load_dataset(ds, need_label=True)
    except (DataError, ConfigError) as exc:
        raise BankRefused(str(exc)) from None
    where = f"{ds.path} ([datasets.{ds.name}])"
    missing = [c for c in columns if c not in data.feature_names]
    if missing:
        raise BankRefused(f"{where}: the job's column(s) {missing} are not among this "
                          f"bank's usable columns {data.feature_names[:20]}")
    cat = [c for c in columns if c in data.categories]
    if cat:
        raise BankRefused(f"{where}: column(s) {cat} are categorical here; the job's schema "
                          "is numeric (float) columns")
    X = data.X[:, [data.feature_names.index(c) for c in columns]]
    bad = np.flatnonzero(~np.isfinite(X).all(axis=0))
    if bad.size:
        c = columns[int(bad[0])]
        row = int(np.flatnonzero(~np.isfinite(X[:, bad[0]]))[0]) + 1
        raise BankRefused(f"{where}: column {c!r} has a missing or non-numeric value at "
                          f"data row {row}; horizontal jobs need complete float columns")
    return X, data.y


def signing_key_from(spk: str):
    """An Ed25519 public key from node.toml: 64 hex digits or a .sign.pub path."""
    return parse_signing_pubkey(spk) if re.fullmatch(r"[0-9A-Fa-f]{64}", spk) \
        else load_signing_pubkey(spk)


def open_bank(cfg: NodeConfig, job: dict, frame=None) -> BankSide:
    _policy(cfg, job)
    X, y = load_bank_rows(cfg, job["columns"], frame)
    d = job_dir(cfg.data_dir, job["job_id"])
    key = load_signing_key(cfg.keys.signing_key)
    peer_key = signing_key_from(cfg.peer.signing_public_key)
    spec = {"job_id": job["job_id"], "algorithm": job["algorithm"],
            "columns": job["columns"], "params": job["params"]}
    w = open_appending(d / "transcript.jsonl", job_id=job["job_id"], party=cfg.name,
                       peer=cfg.peer.name, key=key, peer_key_hex=signing_pub_hex(peer_key),
                       spec=spec, roles={cfg.name: "bank", cfg.peer.name: "platform"})

    def report(data: dict) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / "result.json").write_text(json.dumps(
            {k: v for k, v in data.items() if k != "scores"}, indent=1, default=float))
        write_report({"job": {"id": data["job_id"], "algorithm": data["algorithm"],
                              "name": f"horizontal job at {cfg.name}"},
                      "metrics": {"test (this bank)": data["metrics"]},
                      "history": data["history"], "scores": data["scores"]},
                     d / "report.html")

    peers = {n: signing_key_from(v) for n, v in cfg.horizontal.peers.items()}
    return BankSide(cfg.name, X, y, ledger=TranscriptLedger(w, key, peer_key), report=report,
                    signing_key=key, peer_keys=peers)
