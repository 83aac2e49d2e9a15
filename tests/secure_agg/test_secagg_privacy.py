"""The aggregator's view of one client: its masked update is uniform on Z_(2**32).

scipy's chi-square and Kolmogorov-Smirnov tests are the references. Negative
controls show the same tests reject the unmasked quantised update and an update
under a half-width mask, so these tests can fail. Seeds are fixed: the p-values are
deterministic (no flaky threshold).
"""

import numpy as np
import pytest
from scipy import stats
from support.secagg_round import Round

from secure_agg.secagg import quantise

DIM = 20_000
ALPHA = 1e-4


def _uniformity_pvalues(words: np.ndarray, bits: int = 32) -> tuple[float, float]:
    u = words.astype(np.float64) / 2.0**bits
    counts = np.bincount((words >> np.uint64(bits - 8)).astype(np.int64), minlength=256)
    return stats.chisquare(counts).pvalue, stats.kstest(u, "uniform").pvalue


@pytest.fixture(scope="module")
def rnd():
    """5 clients with very unequal updates: a constant, a spike, skewed noise."""
    rng = np.random.default_rng(7)
    ups = {0: np.full(DIM, -1.0), 1: np.full(DIM, 0.999), 2: np.zeros(DIM),
           3: rng.exponential(0.1, DIM), 4: rng.normal(0, 0.3, DIM)}
    r = Round(n=5, t=3, dim=DIM, seed=7, updates=ups)
    r.through("mask")
    return r


@pytest.mark.parametrize("cid", range(5))
def test_each_masked_update_is_uniform(rnd, cid):
    y = rnd.sent["masked_input"][cid].data.astype(np.uint64)
    chi_p, ks_p = _uniformity_pvalues(y)
    assert chi_p > ALPHA and ks_p > ALPHA, (chi_p, ks_p)


def test_masked_updates_of_opposite_inputs_are_indistinguishable(rnd):
    a = rnd.sent["masked_input"][0].data.astype(np.float64)
    b = rnd.sent["masked_input"][1].data.astype(np.float64)
    assert stats.ks_2samp(a, b).pvalue > ALPHA
    # the same test tells the unmasked updates apart
    qa, qb = (quantise(rnd.updates[c], rnd.p).astype(np.float64) for c in (0, 4))
    assert stats.ks_2samp(qa, qb).pvalue < 1e-10


def test_negative_controls_are_rejected(rnd):
    q = quantise(rnd.updates[4], rnd.p)
    chi_p, ks_p = _uniformity_pvalues(q)
    assert chi_p < 1e-10 and ks_p < 1e-10
    # a mask half as wide as the modulus is caught too
    half = np.random.default_rng(1).integers(0, 2**31, DIM, dtype=np.uint64)
    chi_p, ks_p = _uniformity_pvalues((q + half) & np.uint64(2**32 - 1))
    assert chi_p < 1e-10 and ks_p < 1e-10


def test_the_sum_is_still_exact(rnd):
    res = rnd.unmask()
    want = np.sum([quantise(rnd.updates[c], rnd.p) for c in range(5)], axis=0)
    assert np.array_equal(res.quantised, want)
