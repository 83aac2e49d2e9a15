"""The aggregator's side of a horizontal job: the ServerApp's main loop.

:func:`run_job` drives Flower's Grid (a SuperLink in deployment, the in-process grid
of ``federation.horizontal.inprocess`` from the Python API): join -> counts -> rounds
of fit -> test -> close, every sum through the summation seam
(:mod:`parties.horizontal.aggregate`). Rounds stop early after ``patience`` rounds
without a lower federated validation loss; the best round's model is the result.

What the aggregator learns (secure aggregation on): which banks joined or refused
(and the refusal reason each bank chose to send), each bank's feature count, and per
sum only the total: the federation's row and positive counts, the weighted mean of
the banks' model deltas, validation and training losses, and the weighted test loss
and accuracy; plus which banks dropped out of which round. With
``secure_aggregation = false`` it sees each bank's vector.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from parties.horizontal.aggregate import PlainSum, RoundFailed, SecureSum, SumResult, _Exchange
from parties.horizontal.model import build_model, get_flat
from parties.horizontal.params import ALGORITHMS, HorizontalParams
from parties.horizontal.wire import CLOSE_TYPE, JOIN_TYPE, phase_dim, vec_bytes


@dataclass
class JobSpec:
    job_id: str
    algorithm: str
    columns: list[str]
    params: HorizontalParams
    banks: dict[int, str] = field(default_factory=dict)   # node id -> bank name, if known

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {self.algorithm!r}: expected one of "
                             f"{', '.join(ALGORITHMS)}")
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise ValueError("columns must be a non-empty list of distinct names")


@dataclass
class JobResult:
    theta: np.ndarray
    best_round: int
    history: list[dict]
    metrics: dict
    joined: list[int]
    refused: dict[int, str]
    dropped: dict[int, str]
    rounds: list[dict]          # per sum: phase, seconds, bytes up/down per bank
    statements: dict[int, dict]


def _log_sum(log: list, phase: str, rnd: int, res: SumResult) -> None:
    log.append({"phase": phase, "round": rnd, "seconds": res.seconds,
                "banks": len(res.included), "up_bytes": dict(res.up_bytes),
                "down_bytes": dict(res.down_bytes)})


def run_job(grid, spec: JobSpec, nodes: list[int], ledgers: dict | None = None) -> JobResult:
    """One horizontal job over ``nodes``; raises RoundFailed (reason names the banks)
    when a round cannot complete with enough banks. ``ledgers`` (node -> ledger, as
    :class:`parties.horizontal.bank.NoLedger`) record what crosses to each bank."""
    p = spec.params
    names = spec.banks
    summer = (SecureSum(spec.job_id, p.min_banks, p.clip, p.bits, p.round_timeout,
                        p.signed_rounds)
              if p.secure_aggregation else PlainSum(p.min_banks, p.round_timeout))
    ex = _Exchange(grid, p.round_timeout, "join", names, ledgers)
    join = {"job_id": spec.job_id, "algorithm": spec.algorithm,
            "columns": json.dumps(spec.columns), "params": json.dumps(p.to_wire())}
    replies = ex.ask(JOIN_TYPE, dict.fromkeys(nodes, join))
    model = build_model(spec.algorithm, len(spec.columns), p, p.seed)
    theta = get_flat(model)
    refused = dict(ex.dropped)
    for node, rec in replies.items():
        if rec.get("n_features") != len(spec.columns) or rec.get("n_params") != len(theta):
            refused[node] = (f"joined with {rec.get('n_features')} features / "
                             f"{rec.get('n_params')} parameters, the job has "
                             f"{len(spec.columns)} / {len(theta)}")
    joined = sorted(n for n in replies if n not in refused)
    if len(joined) < p.min_banks:
        why = "; ".join(f"{names.get(n, n)}: {r}" for n, r in sorted(refused.items()))
        raise RoundFailed(f"{len(joined)} bank(s) joined, fewer than min_banks = "
                          f"{p.min_banks} ({why or 'no banks'})")
    log: list[dict] = []
    dropped: dict[int, str] = {}

    def total(phase: str, rnd: int, inputs: dict) -> np.ndarray:
        nonlocal joined
        res = summer.total(grid, joined, phase, inputs, phase_dim(phase, len(theta)),
                           f"{phase}-{rnd}", names, ledgers)
        _log_sum(log, phase, rnd, res)
        for n, why in res.dropped.items():
            dropped.setdefault(n, f"round {rnd} ({phase}): {why}")
        joined = res.included
        return res.total

    counts = np.rint(total("counts", 0, {}))
    if counts[0] < 1 or counts[2] < 1 or counts[3] < 1:
        raise RoundFailed(f"the banks' splits are empty (train/valid/test rows = "
                          f"{counts[0]:.0f}/{counts[2]:.0f}/{counts[3]:.0f})")
    totals = vec_bytes(counts)
    best, best_loss, best_round, since, history = theta.copy(), np.inf, 0, 0, []
    for rnd in range(1, p.rounds + 1):
        s = total("fit", rnd, {"theta": vec_bytes(theta), "totals": totals, "round": rnd})
        weight, vweight = s[-4], s[-3]
        if not (weight > 0 and vweight > 0):
            raise RoundFailed(f"fit round {rnd}: the surviving banks hold no training or "
                              "validation rows")
        vloss = s[-2] / vweight
        history.append({"iteration": rnd, "train_loss": s[-1] / weight, "valid_loss": vloss,
                        "banks": len(joined)})
        if vloss < best_loss - 1e-9:
            best, best_loss, best_round, since = theta.copy(), vloss, rnd - 1, 0
        else:
            since += 1
        theta = theta + s[:-4] / weight
        if p.patience and since >= p.patience:
            break
    t = total("test", len(history) + 1, {"theta": vec_bytes(best), "totals": totals,
                                          "history": json.dumps(history)})
    w = max(t[2], 1e-12)
    metrics = {"test_log_loss": t[0] / w, "test_accuracy": t[1] / w,
               "banks": len(joined), "best_round": best_round}
    statements = _close(grid, joined, spec, names, p.round_timeout, ledgers or {},
                        hashlib.sha256(vec_bytes(best)).hexdigest())
    return JobResult(best, best_round, history, metrics, joined, refused, dropped, log,
                     statements)


def _close(grid, nodes: list[int], spec: JobSpec, names: dict, timeout: float,
           ledgers: dict, digest: str) -> dict:
    """The job.outcome exchange: each side's signed statement closes both transcripts."""
    ex = _Exchange(grid, timeout, "close", names, ledgers)
    own = {n: ledgers[n].statement(digest) if n in ledgers else {} for n in nodes}
    out = {}
    replies = ex.ask(CLOSE_TYPE, {n: {"job_id": spec.job_id, "model_sha256": digest,
                                      "statement": json.dumps(own[n], sort_keys=True)}
                                  for n in nodes})
    for node, rec in replies.items():
        try:
            out[node] = json.loads(rec.get("statement", "{}"))
        except ValueError:
            out[node] = {}
        if node in ledgers:
            ledgers[node].close(own[node], out[node])
    return out
