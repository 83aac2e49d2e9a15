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

import numpy as np

from federation.config import JobSpec, NodeConfig
from federation.jobstore import JobRecord
from federation.node.context import one_line


def report_data(rec: JobRecord, cfg: NodeConfig, identities: Callable[[], tuple],
                lookup: Callable[[str], JobRecord] | None = None, *, oot: str = "",
                threshold: float | None = None, binning: str = "") -> dict:
    """What ``fedjoint job report`` renders for one job. ``identities()`` gives the
    (local, peer) identities that pin the transcript's signing keys; ``lookup`` finds
    the other jobs named by ``oot`` (a done scoring job of this job's model, on a
    labelled dataset for the bank) and ``binning`` (a binning job whose tables to
    show); ``threshold``: the confusion matrix's (None: the KS-optimal score).
    ``ReportError`` names what is wrong with them."""
    from federation.report import collect as R
    art = rec.artifacts
    m = rec.metrics or {}
    splits = split_metrics(m)
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
    data = {"job": job, "psi": psi, "metrics": splits,
            "history": history_rows(rec.history),
            "timings": {k: v for k, v in rec.timings.items() if isinstance(v, (int, float))},
            "params": dict(rec.spec.get("params") or {}),
            "evaluation": dict(rec.spec.get("evaluation") or {}),
            "threshold": R.check_threshold(threshold)}
    if art.get("test_scores") and Path(art["test_scores"]).exists():
        data["scores"] = json.loads(Path(art["test_scores"]).read_text())
    part, model_id = _part(art.get("model")), rec.job_id
    if part is not None:
        data["params"] = dict(part.params) or data["params"]
    elif art.get("models"):      # a pipeline: every stage's part, in order
        stages = [(n, _part(path), (m.get("stages") or {}).get(n) or {})
                  for n, path in art["models"].items()]
        pl = R.pipeline([st for st in stages if st[1] is not None])
        part, model_id = pl["part"], f"{rec.job_id}.{pl['stage']}"
        data.update({k: pl[k] for k in ("stages", "params")})
        if pl["binning"] is not None:
            data["binning"] = pl["binning"]
    if part is not None:
        dev = _dev_rows(rec, cfg, part)
        if dev is not None:
            data["data"] = R.label_summary(dev)
        test = None
        if dev is not None and cfg.party == "bank" and data.get("scores"):
            try:
                test = R.rows_of(dev, data["scores"]["ids"])
            except R.ReportError:   # the file changed: no log-odds spreads, the rest stays
                test = None
        data.update(R.explain(part, test, data.get("scores")))
    if binning:
        data["binning"] = _binning_body(lookup, binning)
    elif "binning" not in data and part is not None and \
            isinstance(part.body.get("binning"), str):
        try:   # woe_lr: the binning it was trained on (a binning job, or a pipeline's stage)
            data["binning"] = _binning_body(lookup, part.body["binning"])
        except R.ReportError:
            pass    # no longer on this node: the report goes without its tables
    if oot:
        kind = (data.get("scores") or {}).get("label_kind", "binary")
        data.update(_oot(rec, cfg, part, model_id, _done(lookup, oot, "score"),
                         data.get("binning"), kind, (data.get("scores") or {}).get("classes")))
    if art.get("transcript"):
        local, peer = identities()
        pins = {cfg.name: _pub_hex(local.signing_key.public_key()),
                cfg.peer.name: _pub_hex(peer.signing_public_key)}
        data["transcript"] = _verify_transcript(art["transcript"], pins)
    return data


def split_metrics(m: dict) -> dict:
    """The scalar metrics of each split a job recorded (``{"train": {...}, ...}``)."""
    return {k: {n: v for n, v in m[k].items() if not isinstance(v, (dict, list))}
            for k in ("train", "valid", "test") if isinstance(m.get(k), dict)}


def _part(path: str | None):
    from parties.common.artifact import ModelPart
    return ModelPart.load(path) if path and Path(path).exists() else None


def _done(lookup, job_id: str, algorithm: str) -> JobRecord:
    from federation.jobstore import JobNotFound
    from federation.report.collect import ReportError
    try:
        rec = lookup(job_id) if lookup is not None else None
    except JobNotFound:
        rec = None
    if rec is None:
        raise ReportError(f"no job {job_id!r} on this node (see `fedjoint job list`)")
    if (algorithm and rec.algorithm != algorithm) or rec.state != "done":
        raise ReportError(f"job {rec.job_id} is a {rec.state} {rec.algorithm} job; expected a "
                          f"done {algorithm or 'binning or pipeline'} job")
    return rec


def _binning_body(lookup, job_id: str) -> dict:
    """The binning tables of ``job_id``: a binning job's part, or a pipeline's first
    binning stage's."""
    from federation.report.collect import ReportError
    rec = _done(lookup, job_id, "")
    paths = [rec.artifacts.get("model"), *(rec.artifacts.get("models") or {}).values()]
    for path in paths:
        b = _part(path)
        if b is not None and b.algorithm == "binning":
            return b.body
    raise ReportError(f"job {rec.job_id} has no binning part (a binning job, or a pipeline "
                      "with a binning stage)")


def _rows(rec: JobRecord) -> np.ndarray | None:
    path = rec.artifacts.get("intersection_rows")
    return np.load(path, allow_pickle=False) if path and Path(path).exists() else None


def _own_dataset(cfg: NodeConfig, spec: dict):
    from federation.config import ConfigError
    from federation.report.collect import ReportError
    try:
        return cfg.dataset(spec.get("dataset" if cfg.party == "bank" else "peer_dataset", ""))
    except ConfigError as exc:
        raise ReportError(str(exc)) from None


def _dev_rows(rec: JobRecord, cfg: NodeConfig, part):
    """This party's rows of the training job's intersection (None where its dataset
    cannot be read now: the report then shows what the job store holds)."""
    from federation.report.collect import ReportError, dev_rows
    try:
        return dev_rows(_own_dataset(cfg, rec.spec), part, _rows(rec))
    except ReportError:
        return None


def _oot(rec: JobRecord, cfg: NodeConfig, part, model_id: str, score: JobRecord,
         binning, kind: str, classes: list | None = None) -> dict:
    """The scoring job's population: this party's per-variable PSI against the training
    job's intersection; for the bank, the scores (the prediction's PSI) and, of a 0/1
    model, the labels (the out-of-time evaluation)."""
    from federation.report import collect as R
    if score.spec.get("model") != model_id:
        raise R.ReportError(f"scoring job {score.job_id} used model "
                            f"{score.spec.get('model')!r}, not the one this report shows "
                            f"({model_id})")
    dev_cfg, act_cfg = _own_dataset(cfg, rec.spec), _own_dataset(cfg, score.spec)
    bank = cfg.party == "bank" and kind == "binary"
    actual = R.own_rows(act_cfg, part, _rows(score), need_label=bank)
    card = part.body.get("scorecard") if part is not None else None
    out = {"stability": R.variable_stability(R.own_rows(dev_cfg, part, _rows(rec)), actual,
                                             binning, cfg.party, card)}
    if cfg.party == "bank" and kind == "multiclass":
        labelled = R.own_rows(act_cfg, part, _rows(score), need_label=True,
                              label_kind="multiclass")
        ids, p = _read_class_scores(score.artifacts.get("scores", ""), classes)
        if ids != [str(i) for i in labelled.ids]:
            raise R.ReportError(f"the scores of job {score.job_id} are not in the order of "
                                f"its intersection rows of {act_cfg.name!r} (file changed?)")
        out["oot"] = R.oot_multiclass(ids, p, labelled, classes,
                                      f"{act_cfg.name}, job {score.job_id}")
    elif bank:
        ids, p = _read_scores(score.artifacts.get("scores", ""))
        if ids != [str(i) for i in actual.ids]:
            raise R.ReportError(f"the scores of job {score.job_id} are not in the order of "
                                f"its intersection rows of {act_cfg.name!r} (file changed?)")
        out["oot"] = R.oot_scores(ids, p, actual, f"{act_cfg.name}, job {score.job_id}")
    elif cfg.party == "bank" and kind == "continuous":
        out["oot"] = {"name": f"{act_cfg.name}, job {score.job_id}",
                      "scores": {"p": _read_scores(score.artifacts.get("scores", ""))[1]}}
    return out


def _read_class_scores(path: str, classes: list) -> tuple[list[str], list[list[float]]]:
    """The ids and class probabilities (``p_<class>`` columns, in ``classes`` order) of
    a multiclass scoring job's CSV."""
    import csv

    from federation.report.collect import ReportError
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ReportError(f"cannot read the scoring job's scores {path!r}: {exc}") from None
    want = [f"p_{c}" for c in classes]
    head = rows[0] if rows else []
    if head[:2] != ["id", "class"] or any(w not in head for w in want):
        raise ReportError(f"{path}: expected id,class,{','.join(want)} (a multiclass model's "
                          "scores)")
    cols = [head.index(w) for w in want]
    return [r[0] for r in rows[1:]], [[float(r[c]) for c in cols] for r in rows[1:]]


def _read_scores(path: str) -> tuple[list[str], list[float]]:
    """The id and score columns of a scoring job's CSV (extra columns ignored)."""
    import csv

    from federation.report.collect import ReportError
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ReportError(f"cannot read the scoring job's scores {path!r}: {exc}") from None
    if not rows or rows[0][:2] != ["id", "score"]:
        raise ReportError(f"{path}: expected an id,score CSV (a binary model's scores)")
    return [r[0] for r in rows[1:]], [float(r[1]) for r in rows[1:]]


def model_explanation(path: str) -> dict:
    """The report's explanation of a stored model part, as its algorithm declares it
    in the registry (``Algorithm.explain``); none if the algorithm declares none."""
    from federation.report.collect import registered_explanation
    from parties.common.artifact import ModelPart
    return registered_explanation(ModelPart.load(path))


def history_rows(history: list) -> list[dict]:
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
