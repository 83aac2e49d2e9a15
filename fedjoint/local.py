"""``run_local``: both parties' side of a job in one process, over in-memory links.

It runs exactly the node's pipeline (:func:`federation.runner.run_job_side`: PSI ->
intersection checks -> hashed split -> train -> evaluate -> model parts) for the bank
and the platform in two threads, on pandas DataFrames or CSV/Parquet paths, with the
same job TOML/dict as the CLI and each party's ``[policy]`` validated as node.toml's.
What crosses between the two threads is encoded exactly as on the wire. Nothing here is
a substitute for two nodes: both datasets are in one process, so use it for notebooks,
experiments and tests, and two nodes (``fedjoint node start``) for real data.
A pipeline job (``[[stages]]``) runs its stages the same way (:attr:`RunResult.stages`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from federation.config import (
    ConfigError,
    JobSpec,
    NodeConfig,
    job_spec_from_dict,
    load_job_spec,
    node_config_from_dict,
)
from federation.data import DataError
from federation.link import local_link_pair, run_two_parties
from federation.policy import policy_refusal
from federation.runner import JobFailed, JobResult, model_path, run_job_side
from parties.common.artifact import ModelPart

PARTIES = ("bank", "platform")
_ID_KINDS = {"i": "integers", "u": "integers", "O": "strings", "U": "strings", "T": "strings"}


class FedjointError(RuntimeError):
    """A job run with the Python API failed; ``party`` is the side where it started."""

    def __init__(self, message: str, party: str = ""):
        super().__init__(message)
        self.party = party


@dataclass
class RunResult:
    """What a local run returns: the bank's metrics, both model parts, the scorer."""

    job: JobSpec
    bank: JobResult
    platform: JobResult
    #: every message that crossed: (sender party, kind, payload type, sha256 hex, bytes)
    wire: list = field(default_factory=list)
    _data_dir: Path = field(repr=False, default=None)
    _nodes: dict = field(repr=False, default_factory=dict)

    @property
    def metrics(self) -> dict:
        return self.bank.metrics

    @property
    def history(self) -> list:
        return self.bank.history

    @property
    def bank_model(self) -> ModelPart:
        """The bank's model part (a pipeline: its last stage's)."""
        return self.bank.stages[-1]["model"] if self.bank.stages else self.bank.model

    @property
    def platform_model(self) -> ModelPart:
        return self.platform.stages[-1]["model"] if self.platform.stages else \
            self.platform.model

    @property
    def stages(self) -> dict[str, dict]:
        """A pipeline's stages by name: ``{"algorithm", "bank", "platform"`` (the two
        model parts), ``"metrics"`` (the bank's), ``"model_id"}`` (empty otherwise)."""
        return {b["name"]: {"algorithm": b["algorithm"], "bank": b["model"],
                            "platform": p["model"], "metrics": b["metrics"],
                            "model_id": f"{self.bank.job_id}.{b['name']}"}
                for b, p in zip(self.bank.stages or [], self.platform.stages or [],
                                strict=True)}

    def report(self, path: str | Path, *, oot: tuple | None = None,
               threshold: float | None = None, binning=None,
               oot_name: str = "out-of-time") -> Path:
        """Write the bank's HTML model-risk report of this run to ``path``
        (docs/report.md). ``oot=(bank_frame, platform_frame)``: a labelled out-of-time
        population, scored through this model (a federated scoring run) for the
        out-of-time and stability sections; ``threshold``: the confusion matrix's
        (default: the KS-optimal score); ``binning``: a binning run (or its bank part)
        whose WOE/IV tables to show."""
        from federation.report.collect import ReportError
        from fedjoint import report
        try:
            return report.write(self, path, oot=oot, threshold=threshold, binning=binning,
                                oot_name=oot_name)
        except ReportError as exc:
            raise FedjointError(f"report: {exc}", "bank") from None

    def score(self, bank: pd.DataFrame | str | Path, platform: pd.DataFrame | str | Path,
              *, seed: bytes | int | None = None, stage: str = "") -> pd.DataFrame:
        """Score the enterprises both frames share with this model (a federated scoring
        job, PSI included): ``DataFrame[id, score]`` in the agreed order (a ``woe_lr``
        scorecard adds ``points``, ``platform_points``, ``reason_1..``); for a
        multiclass model ``DataFrame[id, class, p_<class>...]`` (predicted class, then
        each class's probability). A pipeline scores with its ``stage`` (default: its
        last stage), a trained model's stage."""
        model, algorithm = self.bank.job_id, self.job.algorithm
        if self.bank.stages:
            st = self.stages.get(stage or self.bank.stages[-1]["name"])
            if st is None:
                raise FedjointError(f"the pipeline has no stage {stage!r} (stages: "
                                    f"{', '.join(self.stages)})")
            model, algorithm = st["model_id"], st["algorithm"]
        spec = job_spec_from_dict({
            "job": {"name": f"{self.job.name}-score", "algorithm": "score",
                    "dataset": self.job.dataset, "peer_dataset": self.job.peer_dataset,
                    "model": model, "train_algorithm": algorithm},
            "psi": dict(self.job.psi),
            "evaluation": {"cipher": self.job.evaluation.cipher,
                           "key_bits": self.job.evaluation.key_bits}}, "score job")
        nodes = _with_frames(self._nodes, spec, bank, platform)
        res_b, _, _ = _run(spec, nodes, seed)
        sc = res_b.scores
        if "classes" in sc:   # multiclass: the predicted class, then p_<class> columns
            cols = {f"p_{c}": col for c, col in zip(sc["classes"], np.asarray(sc["p"]).T,
                                                    strict=True)}
            return pd.DataFrame({"id": sc["ids"], "class": sc["pred"], **cols})
        return pd.DataFrame({"id": sc["ids"], "score": sc["p"], **sc.get("columns", {})})


def run_local(job: dict | str | Path | JobSpec, *, bank: pd.DataFrame | str | Path,
              platform: pd.DataFrame | str | Path, bank_policy: dict | None = None,
              platform_policy: dict | None = None, id_column: str = "id",
              label_column: str = "y", seed: bytes | int | dict | None = None,
              workers: int = 1,
              data_dir: str | Path | None = None,
              categorical: dict[str, list[str]] | None = None,
              max_categories: int | None = None) -> RunResult:
    """Run ``job`` (a job.toml path, its tables as a dict, or a JobSpec) between the
    bank's and the platform's data; see the module docstring.

    ``bank_policy`` / ``platform_policy``: each party's ``[policy]`` table as in
    node.toml (validated the same way). ``seed``: fixes every random stream of both
    parties (keys, PSI blinding, batches), so a run is reproducible (an int or bytes,
    or ``{"bank": seed, "platform": seed}``: each party's 32-byte job seed as a node's
    vault holds it). ``data_dir``:
    where the model parts are kept (default: a temporary directory).
    ``categorical``: ``{"bank": [...], "platform": [...]}``, each party's columns read as
    categories (as node.toml's ``[datasets.X] categorical``; columns of pandas' category
    dtype are categorical anyway); ``max_categories``: the most levels one may have.
    """
    spec = _spec(job)
    if spec.algorithm == "score":
        raise FedjointError("run_local trains; score with RunResult.score(bank, platform)")
    root = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="fedjoint-"))
    cats = dict(categorical or {})
    unknown = sorted(set(cats) - set(PARTIES))
    if unknown:
        raise FedjointError(f"categorical: unknown part(ies) {unknown}; expected "
                            '{"bank": [...], "platform": [...]}')
    nodes = {party: _node(party, spec, root, id_column, label_column, workers,
                          bank_policy if party == "bank" else platform_policy,
                          cats.get(party), max_categories)
             for party in PARTIES}
    nodes = _with_frames(nodes, spec, bank, platform)
    res_b, res_p, wire = _run(spec, nodes, seed)
    for party, res in (("bank", res_b), ("platform", res_p)):
        if res.model is not None:
            res.model.save(model_path(nodes[party], res.job_id))
        for st in res.stages or []:      # a pipeline: each stage's output by name
            st["model"].save(model_path(nodes[party], f"{res.job_id}.{st['name']}"))
    return RunResult(spec, res_b, res_p, wire, root, nodes)


# --------------------------------------------------------------------------- pieces


def _spec(job) -> JobSpec:
    if isinstance(job, JobSpec):
        return job
    try:
        if isinstance(job, (str, Path)):
            return load_job_spec(job)
        if isinstance(job, dict):
            return job_spec_from_dict(job, "job")
    except ConfigError as exc:
        raise FedjointError(str(exc)) from None
    raise FedjointError(f"job must be a job.toml path, a dict or a JobSpec, not "
                        f"{type(job).__name__}")


def _node(party: str, spec: JobSpec, root: Path, id_column: str, label_column: str,
          workers: int, policy: dict | None, categorical: list[str] | None = None,
          max_categories: int | None = None) -> NodeConfig:
    ds = {"path": f"{party} data", "id_column": id_column}
    if categorical is not None:
        ds["categorical"] = list(categorical)
    if max_categories is not None:
        ds["max_categories"] = max_categories
    if party == "bank":
        ds["label_column"] = label_column
    raw = {
        "node": {"party": party, "name": f"{party}-local", "listen": "127.0.0.1:0",
                 "data_dir": str(root / party), "workers": workers},
        # never used in-process: no channel, no keys on disk
        "keys": {"tls_key": "-", "tls_cert": "-", "signing_key": "-"},
        "peer": {"name": f"{'platform' if party == 'bank' else 'bank'}-local",
                 "address": "127.0.0.1:0", "cert_fingerprint": "00" * 32,
                 "signing_public_key": "00" * 32, "cert": "-"},
        "datasets": {spec.dataset_for(party): ds},
        "policy": dict(policy or {}),
    }
    try:
        return node_config_from_dict(raw, f"{party}_policy", base=root)
    except ConfigError as exc:
        raise FedjointError(str(exc), party) from None


def _with_frames(nodes: dict, spec: JobSpec, bank, platform) -> dict:
    """Copies of the two node configs whose job datasets are the given frames."""
    from dataclasses import replace
    frames = {"bank": _frame(bank, "bank"), "platform": _frame(platform, "platform")}
    out = {}
    for party, node in nodes.items():
        name = spec.dataset_for(party)
        base = next(iter(node.datasets.values()))
        ds = replace(base, name=name, frame=frames[party], path=Path(f"{party} DataFrame"))
        out[party] = replace(node, datasets={name: ds})
    _check_frames(out["bank"].datasets[spec.dataset],
                  out["platform"].datasets[spec.peer_dataset], spec.algorithm != "score")
    return out


def _frame(data, party: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, Path)):
        from federation.data import _read
        try:
            return _read(Path(data))
        except DataError as exc:
            raise FedjointError(str(exc), party) from None
    raise FedjointError(f"{party}: expected a pandas DataFrame or a CSV/Parquet path, not "
                        f"{type(data).__name__}", party)


def _check_frames(bank_ds, plat_ds, training: bool) -> None:
    """One clear message naming the frame and column, before anything runs."""
    kinds = {}
    for party, ds in (("bank", bank_ds), ("platform", plat_ds)):
        df, where = ds.frame, f"the {party} DataFrame"
        if ds.id_column not in df.columns:
            raise FedjointError(f"{where} has no id column {ds.id_column!r} (columns: "
                                f"{', '.join(map(str, df.columns[:8]))}); pass id_column=",
                                party)
        kind = df[ds.id_column].dtype.kind
        if kind not in _ID_KINDS:
            raise FedjointError(f"{where}: id column {ds.id_column!r} has dtype "
                                f"{df[ds.id_column].dtype}; IDs must be strings or integers",
                                party)
        kinds[party] = _ID_KINDS[kind]
    if kinds["bank"] != kinds["platform"]:
        raise FedjointError(f"the id columns differ in type: the bank DataFrame's "
                            f"{bank_ds.id_column!r} holds {kinds['bank']}, the platform "
                            f"DataFrame's {plat_ds.id_column!r} holds {kinds['platform']}; "
                            "convert both to the same type", "platform")
    label = bank_ds.label_column
    if label and label in plat_ds.frame.columns and label != plat_ds.id_column:
        raise FedjointError(f"the platform DataFrame has a column {label!r} named like the "
                            "bank's label; the platform holds no labels (drop it or rename "
                            "it)", "platform")
    if training and label and label not in bank_ds.frame.columns:
        raise FedjointError(f"the bank DataFrame has no label column {label!r}; pass "
                            "label_column=", "bank")


def _seeds(seed) -> dict[str, bytes]:
    if seed is None:
        return {p: os.urandom(32) for p in PARTIES}
    if isinstance(seed, dict):   # each party's own 32-byte job seed, as a node's vault
        return {p: bytes(seed[p]) for p in PARTIES}
    raw = seed.to_bytes(32, "big", signed=False) if isinstance(seed, int) else bytes(seed)
    return {p: hashlib.sha256(b"fedjoint-local/" + p.encode() + b"\0" + raw).digest()
            for p in PARTIES}


def _run(spec: JobSpec, nodes: dict, seed) -> tuple[JobResult, JobResult, list]:
    seeds = _seeds(seed)
    a, b, crossed = local_link_pair(spec.name)
    failed: dict[int, str] = {}

    for party in PARTIES:   # as the node's control plane does before a job starts
        reason = policy_refusal(spec, nodes[party])
        if reason:
            raise FedjointError(f"{party} side: refused by its policy: {reason}", party)

    def side(party: str, link):
        def run():
            try:
                return run_job_side(spec, nodes[party], link, seeds[party])
            except BaseException as exc:
                failed[id(exc)] = party
                link.close()   # the other side fails at once instead of waiting
                raise
        return run

    try:
        res_b, res_p = run_two_parties(side("bank", a), side("platform", b),
                                       timeout=24 * 3600)
    except Exception as exc:  # the root cause, from whichever side it started
        party = failed.get(id(exc), "")
        what = "" if isinstance(exc, (JobFailed, DataError, ConfigError)) else \
            f"{type(exc).__name__}: "
        raise FedjointError(f"{party or 'job'} side: {what}{exc}", party) from exc
    wire = [(who, kind, ptype, hashlib.sha256(data).hexdigest(), len(data))
            for who, kind, ptype, data in crossed]
    return res_b, res_p, wire
