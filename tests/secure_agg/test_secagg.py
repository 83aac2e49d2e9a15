"""Secure aggregation: the unmasked sum is the exact sum of the quantised updates.

References: quantisation is recomputed per element with Python's ``round`` (half to
even, like the library's ``np.rint``) and the integer sum with Python ints (no
wrapping); the float sum is numpy's sum of the true updates.
"""

from pathlib import Path

import numpy as np
import pytest
from support.secagg_round import Round

from secure_agg.rng import Drbg
from secure_agg.secagg import SecAggError, SecAggParams, encode, run_round


def _ref_levels(x: np.ndarray, p: SecAggParams) -> list[int]:
    top = 2**p.bits - 1
    return [min(top, round((min(max(float(v), -p.clip), p.clip) + p.clip) * top /
                           (2 * p.clip))) for v in x]


def _ref_sum(updates, ids, p) -> list[int]:
    cols = [_ref_levels(updates[i], p) for i in ids]
    return [sum(c) for c in zip(*cols, strict=True)]


def _updates(n, dim, seed=0, scale=0.8):
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-scale, scale, dim) for i in range(n)}


def _check(res, updates, p, included):
    assert res.included == tuple(included)
    assert res.quantised.tolist() == _ref_sum(updates, included, p)
    true = np.sum([updates[i] for i in included], axis=0)
    err = np.abs(res.total - true).max()
    assert err <= p.error_bound(len(included))


def test_no_dropout_sum_is_exact():
    p = SecAggParams(num_clients=5, threshold=3, dim=257, clip=1.0, bits=16)
    ups = _updates(5, 257)
    res = run_round(ups, p, rng=Drbg(b"s" * 32))
    _check(res, ups, p, range(5))
    assert res.dropped == {}


def test_five_clients_one_drops_before_and_one_after_sharing_keys():
    """Client 1 leaves before masked input without ever sharing keys (not in U2, so
    nobody masks with it); client 3 leaves after sharing keys, so the survivors added
    pairwise masks with it that the server removes by rebuilding its s key."""
    p = SecAggParams(num_clients=5, threshold=3, dim=100)
    ups = _updates(5, 100, seed=1)
    res = run_round(ups, p, {1: "advertise", 3: "share_keys"}, rng=Drbg(b"a" * 32))
    _check(res, ups, p, [0, 2, 4])
    assert res.dropped == {1: "share_keys", 3: "masked_input"}


def test_five_clients_one_drops_after_masked_input():
    """Client 4's masked input arrived, then it left: it is in the sum, its self-mask
    seed rebuilt from the others' shares."""
    p = SecAggParams(num_clients=5, threshold=3, dim=64)
    ups = _updates(5, 64, seed=2)
    res = run_round(ups, p, {4: "masked_input"}, rng=Drbg(b"b" * 32))
    _check(res, ups, p, range(5))
    assert res.dropped == {4: "unmask"}


def test_dropouts_at_every_stage_and_a_wide_modulus():
    p = SecAggParams(num_clients=9, threshold=5, dim=33, clip=2.0, bits=24, mod_bits=40)
    ups = _updates(9, 33, seed=3, scale=2.5)  # some values clipped
    drops = {0: "start", 2: "advertise", 5: "share_keys", 6: "masked_input"}
    res = run_round(ups, p, drops, rng=np.random.default_rng(4))
    assert res.quantised.tolist() == _ref_sum(ups, [1, 3, 4, 6, 7, 8], p)
    assert res.dropped == {0: "advertise", 2: "share_keys", 5: "masked_input",
                           6: "unmask"}
    clipped = np.sum([np.clip(ups[i], -2, 2) for i in (1, 3, 4, 6, 7, 8)], axis=0)
    assert np.abs(res.total - clipped).max() <= p.error_bound(6)


def test_64_bit_modulus():
    p = SecAggParams(num_clients=3, threshold=2, dim=16, bits=40, mod_bits=64)
    ups = _updates(3, 16, seed=5)
    res = run_round(ups, p, {2: "share_keys"}, rng=Drbg(b"c" * 32))
    assert res.quantised.tolist() == _ref_sum(ups, [0, 1], p)


def test_too_few_survivors_fails_the_round_cleanly():
    p = SecAggParams(num_clients=5, threshold=3, dim=8)
    ups = _updates(5, 8)
    with pytest.raises(SecAggError, match="only 2 clients completed stage masked_input"):
        run_round(ups, p, {0: "share_keys", 1: "advertise", 2: "share_keys"})


@pytest.mark.parametrize("kw, match", [
    (dict(num_clients=5, threshold=2, dim=4), "threshold must be"),
    (dict(num_clients=5, threshold=6, dim=4), "threshold must be"),
    (dict(num_clients=3, threshold=2, dim=0), "dim must be"),
    (dict(num_clients=3, threshold=2, dim=4, clip=float("nan")), "clip must be"),
    (dict(num_clients=2, threshold=2, dim=4, bits=32, mod_bits=32), "wraps modulo"),
    (dict(num_clients=3, threshold=2, dim=4, mod_bits=65), "mod_bits must be"),
    (dict(num_clients=3, threshold=2, dim=4, session="x"), "session must be"),
])
def test_params_are_checked(kw, match):
    with pytest.raises(SecAggError, match=match):
        SecAggParams(**kw)


def test_largest_non_wrapping_sum():
    """2 clients of 31-bit levels fit 2**32; the all-top sum is still exact."""
    p = SecAggParams(num_clients=2, threshold=2, dim=4, bits=31, mod_bits=32)
    ups = {0: np.full(4, 5.0), 1: np.full(4, 1.0)}
    res = run_round(ups, p)
    assert res.quantised.tolist() == [2 * (2**31 - 1)] * 4
    assert np.allclose(res.total, 2.0)


def test_the_docs_python_block_runs():
    """docs/secure_aggregation.md's API example, as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "secure_aggregation.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    env: dict = {}
    exec(compile(block, "secure_aggregation.md", "exec"), env)  # noqa: S102 - our own docs
    assert env["res"].included == (0, 1, 2, 3, 4)
    assert np.allclose(env["res"].total, sum(env["updates"].values()), atol=1e-4)


def test_a_client_replays_bit_for_bit_from_its_seed():
    """Same seeds, same updates: every message of the round is the same bytes (what
    an auditor or a stateless ClientApp relies on); another seed changes them all."""
    def transcript(seed):
        r = Round(n=4, t=3, dim=16, seed=seed)
        r.through("mask")
        r.unmask()
        return [encode(m) for st in r.sent.values() for m in st.values()]

    a, b, c = transcript(1), transcript(1), transcript(2)
    assert a == b
    assert all(x != y for x, y in zip(a, c, strict=True))
