"""One party's side of a job, as a pure function (the auditor replays this).

:func:`run_job_side` is everything a party does in a job after both nodes agreed to run
it. Its outcome depends only on

* the job spec (as agreed),
* this node's config and the data files it names (and, for scoring, the stored model),
* the :class:`~federation.link.Link` (live gRPC, or a replay link fed from a
  transcript), and
* the per-job 32-byte ``seed`` from the node's vault.

All randomness is drawn from :class:`~secure_agg.rng.Drbg` streams derived from the
seed by label (``psi``, ``paillier``, ``train``, ``predict``), so replaying with the
same inputs reproduces every message bit for bit. Nothing here touches the job store,
the clock (except for timings, which are reported, never sent) or the network
directly.

Pipeline (training jobs)::

    load own dataset -> PSI over the link -> intersection checks (both policies)
    -> align rows in the agreed order -> split by keyed hash of the ID (both sides
    compute the same split; a digest of the split is cross-checked)
    -> train (bank: Paillier key from Drbg(seed).child("paillier"))
    -> evaluate on the test split by federated prediction (bank computes metrics)
    -> exchange model-part digests

Algorithms are reached only through :mod:`parties.registry`: the entry names the role
modules (one contract, :mod:`parties.common.role`), the typed params (parsed once, in
``JobSpec.parsed``), the key holders and the protocol table. Every message the job
sends goes through a :class:`~federation.link.DeclaredLink` that refuses kinds the
job's protocols (runner, PSI, algorithm) do not declare. The runner's own messages are
declared in :mod:`federation.job_protocol`; none carries data values.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federation import job_protocol as J
from federation import pipeline as P
from federation.config import JobSpec, NodeConfig, parse_psi_params
from federation.data import DataError, Dataset, hashed_split, load_dataset
from federation.jobparts import JobFailed as JobFailed
from federation.jobparts import Rows, load_model, select_columns, unbound_digest
from federation.jobparts import model_path as model_path
from federation.jobparts import models_dir as models_dir
from federation.link import DeclaredLink, Link, ProtocolContext, ProtocolError
from federation.policy import (
    feature_refusal,
    make_cipher,
    policy_refusal,
    role_policy,
)
from parties import registry
from parties.common.artifact import ModelPart
from parties.common.role import PartyData, scored_parts
from psi import protocol as psi_protocol
from secure_agg.rng import Drbg


@dataclass
class JobResult:
    """``model_digest`` is the digest the outcome statement binds: the model part's for
    training jobs; for PSI jobs a digest of this side's intersection rows; for scoring
    jobs a digest of the model part used and the scores this side computed."""

    job_id: str
    party: str
    algorithm: str
    intersection: int = 0
    n_train: int = 0
    n_test: int = 0
    model: ModelPart | None = None
    model_digest: str = ""
    peer_model_digest: str = ""
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    # bank only (never sent): test labels/scores for the report, scoring output; the
    # runner writes no files, the node stores these
    test_scores: dict | None = None
    scores: dict | None = None       # scoring jobs, bank: {"ids": [...], "p": [...]}
    psi_info: dict = field(default_factory=dict)
    # this side's intersection as row indices into its own dataset, in the agreed order
    psi_rows: np.ndarray | None = None
    #: pipelines: per stage {name, algorithm, model (bound part), metrics, history,
    #: timings, model_digest, peer_model_digest}, in order (the node stores each model)
    stages: list | None = None


def _noop(*_a, **_k):
    return None


def run_job_side(spec: JobSpec, node: NodeConfig, link: Link, seed: bytes, *,
                 progress: Callable[[str, float], None] | None = None,
                 log: Callable[[str, dict], None] | None = None,
                 on_stage: Callable[[str], None] | None = None,
                 checkpoint: Callable[[str, int, dict], None] | None = None,
                 psi_budget: psi_protocol.Budget | None = None) -> JobResult:
    """Run this party's side of ``spec`` over ``link``; see the module docstring.

    ``on_stage`` is told ``"psi"``, ``"training"``, ``"evaluating"`` or ``"scoring"``
    when the pipeline enters that stage (the node maps them to job states).
    ``checkpoint(stage, step, state)`` is called where a role calls
    ``ctx.checkpoint(step, state)`` (:mod:`federation.node.checkpoint` keeps them).
    """
    log = log or _noop
    on_stage = on_stage or _noop
    checkpoint = checkpoint or _noop
    party = node.party
    job_id = link.job_id
    kind = spec.kind
    root = Drbg(seed, f"job/{job_id}")
    res = JobResult(job_id=job_id, party=party, algorithm=spec.algorithm)
    t_all = time.perf_counter()
    _check_local_policy(spec, node)
    stored = load_model(node, spec.model) if kind == "score" else None
    algo_name = stored.algorithm if stored is not None else spec.model_algorithm
    if stored is not None and spec.train_algorithm not in ("", stored.algorithm):
        raise JobFailed(f"model {spec.model!r} is a {stored.algorithm!r} model, the job "
                        f"says {spec.train_algorithm!r}")
    try:
        algos = P.stage_algorithms(spec) if kind == "pipeline" else \
            [registry.get(algo_name)] if kind != "psi" else []
    except registry.RegistryError as exc:   # e.g. a stored model of a removed algorithm
        raise JobFailed(str(exc)) from None
    algo = algos[0] if kind != "pipeline" and algos else None
    tables = [J.TABLE, psi_protocol.TABLE] + list(dict.fromkeys(a.protocol for a in algos))
    link = DeclaredLink(link, tables, party)

    def ctx(label: str) -> ProtocolContext:
        return ProtocolContext(link=link, job_id=job_id, rng=root.child(label),
                               workers=node.workers, log=log, progress=progress,
                               checkpoint=lambda step, state: checkpoint(label, step, state))

    # ---- own data -------------------------------------------------------------------
    t = time.perf_counter()
    ds_cfg = _chosen_columns(spec, node, node.dataset(spec.dataset_for(party)))
    if kind == "score":
        if party == "platform":
            from dataclasses import replace
            ds_cfg = replace(ds_cfg, columns=list(stored.feature_names))
        # categorical columns map with the levels the model recorded
        data = load_dataset(ds_cfg, need_label=False, categories=stored.categories(),
                            **_read_limits(node))
        if party == "bank":
            data = select_columns(data, stored.feature_names, ds_cfg.name)
    else:
        labels = None if party != "bank" else P.pipeline_labels(spec) \
            if kind == "pipeline" else _labels(spec, algo) if algo is not None else None
        data = load_dataset(ds_cfg, need_label=labels is not None,
                            max_classes=node.limits.max_classes, **_read_limits(node),
                            **({} if labels is None else
                               {"label_kind": labels[0], "label_use": labels[1]}))
    log("data.loaded", {"dataset": ds_cfg.name, "rows": len(data),
                        "features": len(data.feature_names)})
    for a in algos if kind == "pipeline" else [algo]:
        _check_categorical(data, a)
    if data.unseen:   # counts per column, never the values
        log("data.unseen_categories", {"cells": dict(data.unseen)})
    res.timings["load"] = time.perf_counter() - t

    # earlier jobs' outputs this job uses: both sides check they hold the paired parts
    inputs = P.load_inputs(spec, node, link) if spec.inputs else None
    if kind == "pipeline":     # both run the same stages under the same versions
        P.agree_plan(link, spec)

    # ---- PSI ------------------------------------------------------------------------
    on_stage("psi")
    t = time.perf_counter()
    rows, agreed_ids, info = _run_psi(ctx("psi"), party, data.ids, spec.psi,
                                      node.policy.min_intersection, psi_dirs(node),
                                      need_rows=kind != "psi",
                                      check_subgroup=node.policy.psi_check_subgroup,
                                      budget=psi_budget)
    res.intersection = info["size"]
    res.psi_info = info
    res.psi_rows = rows
    res.timings["psi"] = time.perf_counter() - t
    own_rows = len(data)
    log("psi.done", {"intersection": len(rows), "own_rows": own_rows,
                     **({"budget": info["budget"]} if "budget" in info else {})})
    aligned = data.take(rows)
    del data        # the job holds the intersection's rows only from here (docs/data.md)

    # both parties check the intersection against their own policy and agree on the
    # split before any model traffic
    test_mask = (hashed_split(agreed_ids, spec.evaluation.test_fraction,
                              spec.evaluation.split_salt)
                 if kind == "train" or any(a.kind == "train" for a in algos
                                           if kind == "pipeline")
                 else np.zeros(len(rows), dtype=bool))
    _exchange_checks(link, node, res.intersection, test_mask)

    if kind == "psi":
        res.timings["total"] = time.perf_counter() - t_all
        res.metrics = {"intersection": res.intersection, "own_rows": own_rows}
        res.model_digest = _digest(b"fedjoint-psi-result-v1", rows.astype(">i8").tobytes())
        return res

    if kind == "score":
        on_stage("scoring")
        _score(spec, node, link, ctx, stored, aligned, res)
        res.timings["total"] = time.perf_counter() - t_all
        return res

    # ---- training -------------------------------------------------------------------
    on_stage("training")
    train_idx = np.flatnonzero(~test_mask)
    train, test = aligned.take(train_idx), aligned.take(np.flatnonzero(test_mask))
    del aligned
    # the validation split (early stopping, per-iteration curves) comes out of the
    # training rows, never out of the test rows that report the model's quality
    valid_mask = hashed_split([agreed_ids[i] for i in train_idx],
                              spec.evaluation.valid_fraction,
                              spec.evaluation.split_salt + "/valid")
    train, valid = (train.take(np.flatnonzero(~valid_mask)),
                    train.take(np.flatnonzero(valid_mask)))
    res.n_train, res.n_test = len(train), len(test)
    if kind == "pipeline":
        P.run_stages(spec, node, link, root, Rows(train, valid, test), res, inputs,
                     labels=labels, log=log, progress=progress, train=train_stage,
                     bind=bind, checkpoint=checkpoint)
    else:
        params = spec.parsed if spec.parsed is not None else \
            algo.parse_params(spec.params, "job [params]")
        run = train_stage(algo, params, spec, node, ctx, root, Rows(train, valid, test),
                          labels, inputs, on_stage)
        model = run.model
        res.history = run.history
        res.metrics.update(run.metrics)
        res.timings.update(run.timings)
        res.test_scores = run.test_scores
        res.metrics.update({"intersection": res.intersection, "n_train": res.n_train,
                            "n_test": res.n_test})
        # ---- bind the two model parts: each records the other's unbound digest --------
        res.peer_model_digest = bind(link, model)
        res.model = model
        res.model_digest = model.digest()
    res.timings["total"] = time.perf_counter() - t_all
    return res


@dataclass
class StageRun:
    """What one algorithm's run left on this side (its part still unbound)."""

    model: ModelPart
    metrics: dict
    history: list
    timings: dict
    test_scores: dict | None = None


def train_stage(algo, params, spec: JobSpec, node: NodeConfig, ctx, cipher_root: Drbg,
                rows: Rows, labels, inputs: dict | None, on_stage, prefix: str = ""
                ) -> StageRun:
    """Train one algorithm on ``rows`` (its role's ``train``), then for a ``train``
    algorithm evaluate it on the test rows by federated prediction; ``ctx(label)`` gives
    the protocol contexts (labels ``prefix + "train"`` / ``"predict"``)."""
    party = node.party
    train, valid, test = rows.train, rows.valid, rows.test
    timings: dict = {}
    metrics: dict = {}
    if party == "bank" and algo.needs_label:
        _check_training_labels(labels[0], train)
    role = algo.role(party)
    t = time.perf_counter()
    cipher = make_cipher(spec, node, cipher_root) if algo.holds_key(party) else None
    timings["keygen"] = time.perf_counter() - t
    labelled = party == "bank" and algo.needs_label
    part_data = PartyData(train.X, list(train.feature_names),
                          y=train.y if labelled else None,
                          X_valid=valid.X if len(valid) else None,
                          y_valid=valid.y if labelled and len(valid) else None,
                          classes=train.classes if labelled else None,
                          categories=dict(train.categories) or None,
                          inputs=inputs or None)
    outcome = _role_call(algo, role.train, ctx(prefix + "train"), part_data, params, cipher,
                         role_policy(node))
    timings["training"] = time.perf_counter() - t
    metrics.update(outcome.metrics or {})
    for k, v in (outcome.timings or {}).items():
        timings[f"training.{k}"] = v
    run = StageRun(outcome.model, metrics, list(outcome.history or []), timings)

    # ---- evaluation -----------------------------------------------------------------
    # bank: metrics for the label kind the algorithm declared (binary: AUC, KS, log loss,
    # confusion at the threshold; continuous: RMSE, MAE, R^2; multiclass: accuracy,
    # macro-F1, per-class AUC, log loss, K x K confusion)
    if len(test) and algo.kind == "train":
        on_stage("evaluating")
        t = time.perf_counter()
        scores, _ = scored_parts(_role_call(algo, role.predict, ctx(prefix + "predict"),
                                            run.model, test.X))
        timings["evaluating"] = time.perf_counter() - t
        if party == "bank" and labels is not None:
            rep, run.test_scores = _evaluate(labels[0], test, scores,
                                             spec.evaluation.threshold)
            metrics["test"] = rep
            metrics.update({f"test_{k}": v for k, v in rep.items()
                            if not isinstance(v, (dict, list))})
    return run


def bind(link: Link, model: ModelPart) -> str:
    """Exchange unbound digests and record the peer's in ``model``; returns it."""
    peer_digest = J.exchange_model_digests(link, unbound_digest(model))
    model.peer_part_digest = peer_digest
    return peer_digest


# --------------------------------------------------------------------------- pieces


def _labels(spec: JobSpec, algo) -> tuple[str, str] | None:
    """(label kind, what needs it) the algorithm declares for this job's params (None if
    its bank role takes no labels); the loader checks the label column against it."""
    params = spec.parsed if spec.parsed is not None else \
        algo.parse_params(spec.params, "job [params]")
    return algo.labels_for(params)


def _check_training_labels(kind: str, train: Dataset) -> None:
    """The training split must hold both classes / a varying target / every class."""
    if kind == "multiclass":
        counts = np.bincount(train.y, minlength=len(train.classes))
        empty = [train.classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise JobFailed(f"class(es) {empty} of the label have no rows in the training "
                            f"split ({len(train)} rows, {len(train.classes)} classes); the "
                            "intersection is too small or the class too rare")
        return
    if len(np.unique(train.y)) < 2:
        what = "only one class" if kind == "binary" else "a constant target"
        raise JobFailed(f"the training split has {what} ({len(train)} rows); the "
                        "intersection is too small or too unbalanced")


def _evaluate(kind: str, test: Dataset, scores, threshold: float) -> tuple[dict, dict]:
    """(test metrics, the test rows' scores the node keeps: ids, labels, scores)."""
    from parties.common import metrics as M
    p = np.asarray(scores, dtype=np.float64)
    if kind == "multiclass":
        if p.shape != (len(test), len(test.classes)):
            raise ProtocolError(f"multiclass prediction has shape {p.shape}, expected "
                                f"({len(test)}, {len(test.classes)})")
        rep = M.report(kind, test.y, p)
        rep["classes"] = list(test.classes)
        return rep, {"ids": list(test.ids), "y": test.y.tolist(), "p": p.tolist(),
                     "pred": np.argmax(p, axis=1).tolist(), "classes": list(test.classes),
                     "label_kind": kind}
    p = p.ravel()
    rep = M.report(kind, test.y, p)
    if kind == "binary":
        rep["confusion"] = M.confusion(test.y, p, threshold)
    y_out = test.y.astype(int) if kind == "binary" else test.y.astype(np.float64)
    return rep, {"ids": list(test.ids), "y": y_out.tolist(), "p": p.tolist(),
                 "label_kind": kind}


def _chosen_columns(spec: JobSpec, node: NodeConfig, ds_cfg):
    """This side's dataset restricted to the columns the job picks for it (``features`` /
    ``peer_features``, in the job's order); unchanged when it picks none. A platform
    refuses with the one answer that names no column (federation.policy.NOT_OFFERED);
    the bank's reason names its own columns, so it stays in its log (DataError: the
    platform is told only that the bank could not load its data)."""
    wanted = spec.features_for(node.party)
    if wanted is None:
        return ds_cfg
    reason = feature_refusal(spec, node)
    if reason and node.party == "platform":
        raise JobFailed(f"refused by {node.name}'s policy: {reason}")
    if reason:
        raise DataError(reason)
    from dataclasses import replace
    return replace(ds_cfg, columns=list(wanted))


def _role_call(algo, fn, *args):
    """Call a role; what it declares as a job error fails the job with its message (a
    protocol error or the peer's abort keeps its own type: the node reports those)."""
    try:
        return fn(*args)
    except ProtocolError:
        raise
    except algo.job_errors as exc:
        raise JobFailed(f"{algo.name}: {exc}", peer_message=f"{algo.name} failed on the "
                        "peer's side (its operator sees why in its job log)") from exc


def _check_local_policy(spec: JobSpec, node: NodeConfig) -> None:
    """Defence in depth: the runner itself refuses what this node's policy forbids."""
    reason = policy_refusal(spec, node)
    if reason:
        raise JobFailed(f"refused by {node.name}'s policy: {reason}")


def protocol_versions(algorithm: str, train_algorithm: str = "",
                      stages: list | None = None) -> dict[str, str]:
    """Versions of every protocol a job of ``algorithm`` runs (a pipeline: every stage's
    algorithm). The transcript's first record binds them; replay refuses to run under
    different versions."""
    from federation.channel.peer import PROTOCOL_VERSION as channel_version
    out = {"channel": str(channel_version), "psi": str(psi_protocol.PROTOCOL_VERSION)}
    algo = train_algorithm if algorithm == "score" else algorithm
    for name in [st["algorithm"] for st in stages or []] if algo == P.PIPELINE else [algo]:
        if name and name != "psi":
            out[name] = registry.get(name).version
    if algo == P.PIPELINE:
        out["job"] = J.PROTOCOL_VERSION
    return out


def psi_dirs(node: NodeConfig) -> tuple[str, str]:
    """Where this node keeps its long-lived per-peer PSI keys (0600) and the caches of
    unbalanced PSI; never taken from a job spec (the peer proposes those)."""
    root = Path(node.data_dir) / "psi"
    return str(root / "keys"), str(root / "cache")


def _run_psi(ctx: ProtocolContext, party: str, ids: list[str], psi_params: dict,
             min_intersection: int = 0, dirs: tuple[str, str] | None = None,
             need_rows: bool = True, check_subgroup: bool = True,
             budget: psi_protocol.Budget | None = None
             ) -> tuple[np.ndarray, list[str], dict]:
    """-> (row indices into own data in the agreed order, the agreed normalised ids,
    info). This node's ``min_intersection`` policy goes into the PSI hello (the
    platform's is binding on both). ``dirs`` = (key_dir, cache_dir) of this node;
    ``check_subgroup``: this node's own policy for the points it receives; ``budget``:
    the platform node's query budget (the node passes it; replay and run_local do not)."""
    from federation.config import ConfigError
    from psi import ids as psi_ids
    P = psi_protocol
    values = dict(psi_params)
    values["min_intersection"] = max(int(values.get("min_intersection", 0)), min_intersection)
    values.pop("key_dir", None)
    values.pop("cache_dir", None)
    values["check_subgroup"] = check_subgroup
    if dirs is not None:
        values["key_dir"], values["cache_dir"] = dirs
    try:
        params = parse_psi_params(values, "job [psi]")
    except ConfigError as exc:
        raise JobFailed(f"invalid [psi] parameters: {exc}") from None
    try:
        out = P.run_psi(ctx, party, ids, params, budget=budget)
    except P.PsiPolicyError as exc:
        raise JobFailed(str(exc)) from None
    except psi_ids.IdInputError as exc:
        raise JobFailed(f"the IDs of this node's dataset are not usable for PSI: {exc}") \
            from None
    info = {"mode": out.mode, "size": int(out.size), "peer_size": int(out.peer_size),
            "own_size": len(ids), "id_type": params.id_type}
    for k in ("budget", "key_id"):   # the platform's charge and its OPRF key
        if k in out.stats:
            info[k] = out.stats[k]
    if out.indices is None and not need_rows:  # cardinality-only: the size is the result
        return np.zeros(0, dtype=np.int64), [], info
    if out.indices is None:
        raise JobFailed(f"PSI mode {params.mode!r} reveals no rows; it cannot feed a "
                        "training or scoring job")
    rows = np.asarray(out.indices, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= len(ids))):
        raise ProtocolError("PSI returned row indices out of range")
    if len(np.unique(rows)) != len(rows):
        raise ProtocolError("PSI returned duplicate rows")
    agreed = [psi_ids.normalise(str(ids[i]), params.id_type) for i in rows]
    return rows, agreed, info


def _exchange_checks(link: Link, node: NodeConfig, n: int, test_mask: np.ndarray) -> None:
    problem = ""
    if n < node.policy.min_intersection:
        problem = (f"the intersection has {n} IDs, below {node.name}'s minimum "
                   f"min_intersection = {node.policy.min_intersection}")
    try:
        J.exchange_checks(link, problem, n, test_mask)
    except J.CheckFailed as exc:
        raise JobFailed(str(exc)) from None


def _read_limits(node: NodeConfig) -> dict:
    """The node's memory budget and read chunk for :func:`load_dataset`."""
    return {"memory_budget_mb": node.limits.memory_budget_mb,
            "chunk_rows": node.limits.read_chunk_rows}


def _check_categorical(data: Dataset, algo) -> None:
    """Categorical columns only for an algorithm that takes them (before any message)."""
    if data.categories and algo is not None and not algo.categorical:
        raise JobFailed(f"dataset {data.name!r} has categorical column(s) "
                        f"{sorted(data.categories)}; {algo.name} takes numeric features "
                        "only (drop them from columns or from categorical)")


def _score(spec: JobSpec, node: NodeConfig, link: Link, ctx, model: ModelPart,
           aligned: Dataset, res: JobResult) -> None:
    # both sides confirm they hold the two halves of the same model
    link.send(J.K_SCORE_MODEL, {"model": spec.model, "own_digest": unbound_digest(model),
                              "peer_digest": model.peer_part_digest,
                              "algorithm": model.algorithm})
    peer = link.recv_json(J.K_SCORE_MODEL)
    if peer.get("algorithm") != model.algorithm:
        raise JobFailed(f"the peer's model {spec.model!r} is a {peer.get('algorithm')!r} "
                        f"model, here it is {model.algorithm!r}")
    if model.peer_part_digest and peer.get("own_digest") != model.peer_part_digest:
        raise JobFailed(f"the peer's part of model {spec.model!r} is not the one this "
                        "node's part was trained with (digest mismatch)")
    role = registry.get(model.algorithm).role(node.party)  # checked against the job above
    t = time.perf_counter()
    scores, extra = scored_parts(_role_call(registry.get(model.algorithm), role.predict,
                                            ctx("predict"), model, aligned.X))
    res.timings["scoring"] = time.perf_counter() - t
    res.peer_model_digest = str(peer.get("own_digest", ""))
    res.metrics = {"intersection": res.intersection, "scored": len(aligned)}
    # the job's result digest (what the outcome statement binds): the model part used
    # and what this side computed with it
    p = np.asarray(scores if scores is not None else [], dtype=np.float64)
    p = p if p.ndim == 2 else p.ravel()   # (n, K) class probabilities, or one per row
    res.model_digest = _digest(b"fedjoint-score-result-v1", model.digest().encode(),
                               p.astype(">f8").tobytes(),
                               str(len(aligned)).encode())
    if node.party == "bank":
        # returned, not written: the node writes the CSV (replay must not touch files)
        res.scores = {"ids": list(aligned.ids), "p": p.tolist()}
        if extra:   # e.g. a scorecard's points and reason codes, one value per row
            res.scores["columns"] = extra
        if p.ndim == 2:
            classes = list(model.body.get("classes") or range(p.shape[1]))
            res.scores.update({"classes": classes,
                               "pred": [classes[i] for i in np.argmax(p, axis=1)]})


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()
