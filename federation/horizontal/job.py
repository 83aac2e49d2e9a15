"""A horizontal job file and the in-process run behind ``fedjoint.run_horizontal``.

job.toml::

    [job]
    name = "credit-h"                  # the job id is name + a random suffix
    algorithm = "horizontal_lr"        # or "horizontal_mlp"
    [horizontal]
    columns = ["x0", "x1", "x2"]       # the schema: float columns every bank must have
    banks = ["bank-1", "bank-2"]       # deployment: the SuperNodes to invite (default:
                                       # every connected one)
    [params]                           # parties.horizontal.params.HorizontalParams
    rounds = 20
    secure_aggregation = true
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from federation.config import ConfigError, load_node_config
from federation.config.toml import NAME_RE, _load_toml, _Table
from federation.horizontal.inprocess import InProcessGrid
from parties.common.params import ParamError
from parties.horizontal.bank import BankRefused, BankSide, make_client_app
from parties.horizontal.model import build_model, predict, set_flat
from parties.horizontal.params import ALGORITHMS, HorizontalParams
from parties.horizontal.server import JobResult, JobSpec, run_job


def job_from_table(raw: dict, label: str) -> tuple[JobSpec, list[str]]:
    top = _Table(label, "", raw)
    top.check_keys(("job", "horizontal", "params"))
    j = top.sub("job")
    j.check_keys(("name", "algorithm", "job_id"))
    name = j.get("name", str, "horizontal")
    if not NAME_RE.match(name):
        raise j.err("name", f"= {name!r}: letters, digits, '_', '.', '-' (max 64)")
    algorithm = j.choice("algorithm", ALGORITHMS)
    h = top.sub("horizontal")
    h.check_keys(("columns", "banks"))
    columns = h.get("columns", "str_list")
    if not columns or len(set(columns)) != len(columns):
        raise h.err("columns", "must list distinct column names")
    banks = h.get("banks", "str_list", [])
    try:
        params = HorizontalParams.parse(top.sub("params", {}).data, f"{label}: params")
    except ParamError as exc:
        raise ConfigError(str(exc)) from None
    job_id = j.get("job_id", str, f"{name}-{secrets.token_hex(4)}")
    return JobSpec(job_id, algorithm, columns, params), banks


def load_job(job) -> tuple[JobSpec, list[str]]:
    """``job``: a job.toml path or the same tables as a dict."""
    if isinstance(job, dict):
        return job_from_table(job, "job")
    raw, label = _load_toml(job, "job")
    return job_from_table(raw, label)


@dataclass
class HorizontalResult:
    """``theta`` the final global model (flat), ``metrics`` the aggregator's federated
    test figures, ``history`` per round, ``job`` the spec, ``result`` everything else."""
    job: JobSpec
    result: JobResult
    #: DataFrame banks only (in process): each bank's own report (test metrics on its
    #: rows, its DP epsilon when DP is on), by bank name
    bank_reports: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        return self.result.metrics

    @property
    def history(self) -> list[dict]:
        return self.result.history

    @property
    def theta(self) -> np.ndarray:
        return self.result.theta

    def model(self):
        m = build_model(self.job.algorithm, len(self.job.columns), self.job.params,
                        self.job.params.seed)
        set_flat(m, self.theta)
        return m

    def score(self, df: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.job.columns if c not in df.columns]
        if missing:
            raise ValueError(f"score: the frame lacks the job's column(s) {missing}")
        return predict(self.model(), df[self.job.columns].to_numpy(np.float64))


def _frame_side(name: str, df: pd.DataFrame, label: str, reports: dict):
    def open_side(context, job) -> BankSide:
        missing = [c for c in job["columns"] + [label] if c not in df.columns]
        if missing:
            raise BankRefused(f"{name}: the frame lacks column(s) {missing}")
        return BankSide(name, df[job["columns"]].to_numpy(np.float64), df[label].to_numpy(),
                        report=lambda data: reports.__setitem__(name, data))
    return open_side


def run_horizontal(job, banks: dict, *, label: str = "y", platform=None,
                   drop: dict | None = None) -> HorizontalResult:
    """Run a horizontal job in one process over Flower's Message API (the same
    ServerApp loop and ClientApp handlers as a deployment). ``banks`` maps a bank name
    to its node.toml (policy, dataset and signed transcript, as in deployment) or to
    a pandas DataFrame (its ``label`` column and the job's columns). ``platform``: the
    aggregator's node.toml, to keep its side of each bank's transcript. ``drop``:
    {bank: (message type, n)} makes that bank stop answering (tests)."""
    from federation.horizontal.bankside import open_bank
    from federation.horizontal.ledger import aggregator_ledgers

    spec, _ = load_job(job)
    apps, cfgs, reports = {}, {}, {}
    for i, (name, src) in enumerate(banks.items()):
        node = 1000 + i
        if isinstance(src, pd.DataFrame):
            apps[node] = make_client_app(_frame_side(name, src, label, reports))
        else:
            cfg = load_node_config(src)
            cfgs[node] = cfg
            apps[node] = make_client_app(lambda ctx, j, cfg=cfg: open_bank(cfg, j))
        spec.banks[node] = name
    names = {n: spec.banks[n] for n in apps}
    node_drop = {n: drop[names[n]] for n in apps if drop and names[n] in drop}
    grid = InProcessGrid(apps, drop=node_drop)
    ledgers = aggregator_ledgers(load_node_config(platform), spec, cfgs) if platform else None
    try:
        res = run_job(grid, spec, sorted(apps), ledgers)
    except Exception as exc:
        for led in (ledgers or {}).values():
            led.abort(f"job failed: {exc}")
        raise
    return HorizontalResult(spec, res, reports)


def result_json(res: HorizontalResult) -> str:
    r = res.result
    return json.dumps({"job_id": res.job.job_id, "state": "done", "algorithm": res.job.algorithm,
                       "metrics": r.metrics, "history": r.history, "best_round": r.best_round,
                       "banks": {res.job.banks.get(n, str(n)): "joined" for n in r.joined},
                       "refused": {res.job.banks.get(n, str(n)): w for n, w in r.refused.items()},
                       "dropped": {res.job.banks.get(n, str(n)): w for n, w in r.dropped.items()},
                       "theta": r.theta.tolist()}, indent=1, default=float)


def write_result(res: HorizontalResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(result_json(res))
    return out / "result.json"
