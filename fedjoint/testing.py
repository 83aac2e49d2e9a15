"""Role conformance: what every registered algorithm must do (like scikit-learn's
``check_estimator``). ``check_algorithm(name)`` runs it through the node's own
pipeline (:func:`fedjoint.run_local`) on a small synthetic dataset, twice from the same
seed, and raises ``AssertionError`` naming the first broken promise:

* both roles return a model part of this algorithm, for their own party and job, naming
  only their own features (the bank's part holds no platform feature name and the
  platform's no bank feature name: the platform's policy here does not reveal names);
* the run is reproducible: the same seed gives the same model digests and the same
  bytes for every message in both directions (what replay relies on);
* every message kind that crossed is declared in the algorithm's protocol table or the
  runner's and PSI's, sent by the party the table names (the runner's DeclaredLink
  refuses anything else, so an undeclared kind fails the run itself);
* ``train`` kind: the bank's ``predict`` gives one finite score per test row and the
  bank reports test metrics; scoring the stored parts gives one score per shared row;
* a declared explanation returns ``feature_importance`` rows.

Small sizes: 1024-bit Paillier keys on a test policy (or ``cipher="plain"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from federation.link import PROTOCOLS
from fedjoint.local import RunResult, run_local
from parties import registry

TEST_POLICY = {"allow_insecure_test_jobs": True, "min_key_bits": 1024,
               "min_intersection": 10, "allowed_algorithms": ["all"]}


def synthetic_parties(n: int = 240, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A bank frame (id, y, b0..b2) and a platform frame (id, p0..p3) sharing 200 ids;
    the label depends on features of both parties."""
    rng = np.random.default_rng(seed)
    ids = [f"E{i:05d}" for i in range(n)]
    xb, xp = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    logit = 1.2 * xb[:, 0] - 0.8 * xb[:, 1] + 1.5 * xp[:, 0] + 0.7 * xp[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    bank = pd.DataFrame({"id": ids, "y": y, **{f"b{j}": xb[:, j] for j in range(3)}})
    plat = pd.DataFrame({"id": ids, **{f"p{j}": xp[:, j] for j in range(4)}})
    return bank.iloc[:220].reset_index(drop=True), plat.iloc[20:].reset_index(drop=True)


def check_algorithm(name: str, params: dict | None = None, *, cipher: str = "paillier",
                    before: list[dict] | None = None, inputs: dict | None = None
                    ) -> RunResult:
    """Run the conformance checks on registered algorithm ``name``; returns the first
    run's result. An algorithm that consumes earlier outputs runs as the last stage of
    a pipeline: ``before`` its earlier stages (``[[stages]]`` tables), ``inputs`` its
    stage's inputs (input name -> stage name); the checks apply to its stage."""
    algo = registry.get(name)
    bank, plat = synthetic_parties()
    job = {"job": {"name": f"conformance-{name}", "algorithm": name, "dataset": "d",
                   "peer_dataset": "d"},
           "psi": {"id_type": "string"}, "params": dict(params or {}),
           "evaluation": {"cipher": cipher, "key_bits": 1024, "test_fraction": 0.25}}
    if before:
        job["job"]["algorithm"] = "pipeline"
        job["stages"] = [*before, {"name": "checked", "algorithm": name,
                                   "inputs": dict(inputs or {}), "params": job.pop("params")}]
    runs = [run_local(job, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                      platform_policy=TEST_POLICY, seed=11) for _ in range(2)]
    first, second = runs
    own = {"bank": [c for c in bank.columns if c not in ("id", "y")],
           "platform": [c for c in plat.columns if c != "id"]}
    for party, other in (("bank", "platform"), ("platform", "bank")):
        part = getattr(first, f"{party}_model")
        assert part is not None, f"{name}: the {party} role returned no model part"
        assert (part.algorithm, part.party, part.job_id) == (name, party, first.job.name), \
            f"{name}: the {party} part says {(part.algorithm, part.party, part.job_id)}"
        assert set(part.feature_names) <= set(own[party]), \
            f"{name}: the {party} part names features it does not own"
        text = part.canonical().decode()
        leaked = [f for f in own[other] if f'"{f}"' in text]
        assert not leaked, f"{name}: the {party} part names the {other}'s features {leaked}"
        assert part.digest() == getattr(second, f"{party}_model").digest(), \
            f"{name}: the {party} part differs between two runs from the same seed"
    for party in ("bank", "platform"):   # each direction's order is deterministic
        a = [w for w in first.wire if w[0] == party]
        b = [w for w in second.wire if w[0] == party]
        assert a == b, f"{name}: the {party}'s messages differ between two runs from " \
                       f"the same seed (first difference at {_first_difference(a, b)})"
    declared = {m.kind: m.sender for t in PROTOCOLS.values() for m in t.messages}
    for sender, kind, *_ in first.wire:
        assert kind in declared, f"{name}: message kind {kind!r} crossed undeclared"
        assert declared[kind] in ("either", sender), \
            f"{name}: {kind!r} was sent by the {sender}, declared for the {declared[kind]}"
    assert algo.protocol.kinds & {k for _, k, *_ in first.wire}, \
        f"{name}: none of its declared message kinds crossed"
    if algo.kind == "train":
        n_test = first.bank.n_test
        assert n_test > 0 and len(first.bank.test_scores["p"]) == n_test, \
            f"{name}: the bank's predict gave no score per test row"
        assert np.all(np.isfinite(first.bank.test_scores["p"])), \
            f"{name}: predict gave non-finite scores"
        scored = first.score(bank.drop(columns=["y"]), plat, seed=3)
        assert len(scored) == first.bank.intersection and scored["score"].notna().all(), \
            f"{name}: scoring the stored parts did not score every shared row"
    if algo.explain is not None:
        rows = algo.explain(first.bank_model).get("feature_importance")
        assert isinstance(rows, list), f"{name}: explain() returned no feature_importance"
    return first


def _first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"message {i}: {x[:2]} vs {y[:2]}"
    return f"message {min(len(a), len(b))} (one run sent more)"
