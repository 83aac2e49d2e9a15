"""Horizontal jobs through Flower's Message API in one process (fedjoint.run_horizontal).

The reference is the same torch model trained centrally on the pooled rows; the
federated test AUC is computed on the pooled test rows of the five banks and compared
with parties.common.metrics.auc (itself tested against scikit-learn).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import job
from sklearn.metrics import roc_auc_score

import fedjoint
from parties.horizontal.aggregate import RoundFailed
from parties.horizontal.model import predict, split_rows, train_central
from parties.horizontal.params import HorizontalParams


def pooled(banks, params: HorizontalParams) -> dict[str, pd.DataFrame]:
    parts = {"train": [], "valid": [], "test": []}
    for df in banks.values():
        for k, idx in split_rows(len(df), params).items():
            parts[k].append(df.iloc[idx])
    return {k: pd.concat(v) for k, v in parts.items()}


@pytest.mark.parametrize("algorithm,rounds,secure", [("horizontal_lr", 8, True),
                                                     ("horizontal_mlp", 30, False)])
def test_federated_auc_within_001_of_central(banks, columns, algorithm, rounds, secure):
    """LR through SecAgg sums; the MLP (30 rounds) with plain sums to save test time
    (SecAgg's sum equals the plain one within quantisation: the next test)."""
    spec = job(columns, algorithm, rounds=rounds, patience=5, secure_aggregation=secure)
    res = fedjoint.run_horizontal(spec, banks)
    p = res.job.params
    assert p.secure_aggregation == secure and len(res.result.joined) == 5
    P = pooled(banks, p)
    central, _ = train_central(algorithm, P["train"][columns].to_numpy(), P["train"].y.to_numpy(),
                               P["valid"][columns].to_numpy(), P["valid"].y.to_numpy(), p)
    yt = P["test"].y.to_numpy()
    auc_fed = roc_auc_score(yt, res.score(P["test"]))
    auc_central = roc_auc_score(yt, predict(central, P["test"][columns].to_numpy()))
    assert auc_central > 0.69
    assert abs(auc_fed - auc_central) <= 0.01, (auc_fed, auc_central)
    # the aggregator's federated test log loss is the pooled one (sum of weighted parts)
    pf = np.clip(res.score(P["test"]), 1e-15, 1 - 1e-15)
    pooled_loss = float(-np.mean(yt * np.log(pf) + (1 - yt) * np.log(1 - pf)))
    assert res.metrics["test_log_loss"] == pytest.approx(pooled_loss, abs=1e-4)


def test_secure_sum_equals_plain_sum_and_survives_a_drop(banks, columns):
    """One bank stops answering after sharing its keys in the first fit round: the
    round completes with the other four, and the model equals a plain-sum run in which
    that bank never took part in fit rounds."""
    spec = job(columns, rounds=2, patience=0)
    sec = fedjoint.run_horizontal(spec, banks, drop={"bank-2": ("train.sa_masked", 2)})
    r = sec.result
    assert sorted(sec.job.banks[n] for n in r.joined) == ["bank-0", "bank-1", "bank-3", "bank-4"]
    assert "bank-2" in {sec.job.banks[n] for n in r.dropped}
    assert [h["banks"] for h in r.history] == [4, 4]
    # the same run without the bank in fit rounds, sums in the clear
    plain_spec = job(columns, rounds=2, patience=0, secure_aggregation=False)
    rest = {k: v for k, v in banks.items() if k != "bank-2"}
    plain = fedjoint.run_horizontal(plain_spec, rest | {"bank-2": banks["bank-2"]},
                                    drop={"bank-2": ("train.plain", 2)})
    assert sorted(plain.job.banks[n] for n in plain.result.joined) == \
        sorted(sec.job.banks[n] for n in r.joined)
    # quantisation: 24 bits over clip 4 -> per-coordinate error <= 5 * 2.4e-7 per round
    np.testing.assert_allclose(sec.theta, plain.theta, atol=1e-5)


def test_bad_inputs_fail_cleanly(banks, columns):
    # a bank without one of the job's columns: refused with the column named
    short = dict(banks)
    short["bank-4"] = banks["bank-4"].drop(columns=[columns[3]])
    res = fedjoint.run_horizontal(job(columns, rounds=1), short)
    why = {res.job.banks[n]: w for n, w in res.result.refused.items()}
    assert list(why) == ["bank-4"] and columns[3] in why["bank-4"]
    # a bank whose column is text, not float: refused (never coerced into the sum)
    typed = dict(banks)
    typed["bank-0"] = banks["bank-0"].assign(**{columns[0]: "n/a"})
    res = fedjoint.run_horizontal(job(columns, rounds=1), typed)
    assert len(res.result.refused) == 1
    # fewer banks than min_banks: a clean failure naming them
    with pytest.raises(RoundFailed, match="fewer than min_banks = 3"):
        fedjoint.run_horizontal(job(columns, rounds=1),
                                {k: short[k] for k in ("bank-3", "bank-4")})
    # two of four banks leave mid-round: below the SecAgg threshold 3, the round fails
    with pytest.raises(RoundFailed, match="secure aggregation failed|fewer than"):
        fedjoint.run_horizontal(job(columns, rounds=1), {k: banks[k] for k in list(banks)[:4]},
                                drop={"bank-0": ("train.sa_masked", 2),
                                      "bank-1": ("train.sa_masked", 2)})


def test_dp_sgd_epsilon_reported(banks, columns):
    """params.dp_noise_multiplier: each bank trains with Opacus DP-SGD and reports its
    epsilon over all rounds: Opacus' RDP accountant on (sigma, q = 1 / batches per
    pass, steps = rounds x batches) for its own row count; more noise, smaller epsilon."""
    import math

    from opacus.accountants import RDPAccountant
    small = {k: v.iloc[:1500] for k, v in list(banks.items())[:3]}
    eps = {}
    for sigma in (1.0, 4.0):
        res = fedjoint.run_horizontal(job(columns, rounds=2, patience=0, min_banks=2,
                                          secure_aggregation=False,
                                          dp_noise_multiplier=sigma), small)
        p = res.job.params
        for name, df in small.items():
            n_train = len(split_rows(len(df), p)["train"])
            batches = math.ceil(n_train / p.batch_size)
            acc = RDPAccountant()
            acc.history = [(sigma, 1 / batches, batches)] * p.rounds
            rep = res.bank_reports[name]["metrics"]
            assert rep["dp_epsilon"] == pytest.approx(acc.get_epsilon(p.dp_delta), rel=1e-9)
            assert rep["dp_delta"] == p.dp_delta and 0 <= rep["auc"] <= 1
        eps[sigma] = res.bank_reports["bank-0"]["metrics"]["dp_epsilon"]
    assert eps[4.0] < eps[1.0]
