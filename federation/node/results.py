"""Shaping a job's stored result into the fields the report shows (``report_data``).

Reads only what the job store and the job's files hold: metrics per split, PSI
figures, the history rows, timings, test scores, the transcript's verification and
disclosure ledger, and the model part's explanation as its algorithm declares it in
the registry (:func:`model_explanation`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from federation.config import JobSpec, NodeConfig
from federation.jobstore import JobRecord
from federation.node.context import one_line


def report_data(rec: JobRecord, cfg: NodeConfig, identities: Callable[[], tuple]) -> dict:
    """What ``fedjoint job report`` renders for one job. ``identities()`` gives the
    (local, peer) identities that pin the transcript's signing keys."""
    art = rec.artifacts
    m = rec.metrics or {}
    splits = {k: {n: v for n, v in m[k].items() if not isinstance(v, (dict, list))}
              for k in ("train", "valid", "test") if isinstance(m.get(k), dict)}
    psi = {"intersection": m.get("intersection"), **(rec.checkpoint.get("psi") or {})}
    for k in ("n_train", "n_test"):
        if k in m:
            psi[k] = m[k]
    job = {"id": rec.job_id, "name": rec.name, "algorithm": rec.algorithm,
           "state": rec.state, "role": rec.role, "node": cfg.name,
           "peer": cfg.peer.name,
           "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.created)),
           "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.updated)),
           "model digest": rec.checkpoint.get("model_digest", ""),
           "peer part digest": rec.checkpoint.get("peer_model_digest", "")}
    if rec.error:
        job["error"] = rec.error
    ev = rec.spec.get("evaluation") or {}
    data = {"job": job, "psi": psi, "metrics": splits,
            "history": _history_rows(rec.history),
            "timings": {k: round(v, 3) for k, v in rec.timings.items()
                        if isinstance(v, (int, float))},
            "threshold": ev.get("threshold", 0.5)}
    if art.get("test_scores") and Path(art["test_scores"]).exists():
        data["scores"] = json.loads(Path(art["test_scores"]).read_text())
    if art.get("model") and Path(art["model"]).exists():
        data.update(model_explanation(art["model"]))
    if art.get("transcript"):
        local, peer = identities()
        pins = {cfg.name: _pub_hex(local.signing_key.public_key()),
                cfg.peer.name: _pub_hex(peer.signing_public_key)}
        data["transcript"] = _verify_transcript(art["transcript"], pins)
    return data


def model_explanation(path: str) -> dict:
    """The report's explanation of a stored model part, as its algorithm declares it
    in the registry (``Algorithm.explain``); none if the algorithm declares none."""
    from parties import registry
    from parties.common.artifact import ModelPart
    part = ModelPart.load(path)
    try:
        explain = registry.get(part.algorithm).explain
    except registry.RegistryError:
        return {}
    return explain(part) if explain is not None else {}


def _history_rows(history: list) -> list[dict]:
    """Per-iteration rows {iteration, train_loss, valid_loss, train_auc, valid_auc,
    train_rmse, valid_rmse}."""
    rows = []
    for i, h in enumerate(history or []):
        if not isinstance(h, dict):
            continue
        r: dict = {"iteration": h.get("tree", h.get("epoch", h.get("iteration", i)))}
        for split in ("train", "valid"):
            sub = h.get(split)
            if isinstance(sub, dict):
                if "log_loss" in sub:
                    r[f"{split}_loss"] = sub["log_loss"]
                if "auc" in sub:
                    r[f"{split}_auc"] = sub["auc"]
                if "rmse" in sub:
                    r[f"{split}_rmse"] = sub["rmse"]
        for k in ("loss", "train_loss"):
            if isinstance(h.get(k), (int, float)):
                r["train_loss"] = h[k]
        for k in ("valid_auc", "valid_loss", "train_auc"):
            if isinstance(h.get(k), (int, float)):
                r[k] = h[k]
        rows.append(r)
    return rows


def _pub_hex(key) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.public_bytes(serialization.Encoding.Raw,
                            serialization.PublicFormat.Raw).hex()


def _verify_transcript(path: str, pins: dict | None = None) -> dict:
    """Verification status and disclosure ledger of this node's transcript of a job."""
    try:
        from federation import audit
        rep = audit.verify(path, pinned_keys=pins)
    except Exception as exc:  # noqa: BLE001 - shown in the report, not raised
        return {"verified": False, "detail": one_line(exc)}
    ledger = {}
    for e in rep.ledger:
        ledger[f"{e.get('category')} (to {e.get('to')})"] = {
            "messages": e.get("messages"), "values": e.get("values"),
            "kinds": ", ".join(e.get("kinds") or [])}
    return {"verified": bool(rep.ok), "detail": rep.detail, "ledger": ledger}


def spec_summary(spec: JobSpec) -> dict:
    return {k: v for k, v in asdict(spec).items() if k in ("name", "algorithm", "dataset",
                                                           "peer_dataset")}
