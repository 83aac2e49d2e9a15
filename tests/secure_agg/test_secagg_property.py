"""Property: for random parameters, updates and dropout patterns, a round either
returns exactly the Python-int sum of the survivors' quantised levels, or fails with
SecAggError for a reason that holds (too few clients at a stage; in SecAgg+ also a
split survivor graph or too few holders of one client's shares)."""

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from secure_agg.secagg import DROP_POINTS, SecAggError, SecAggParams, run_round


@st.composite
def rounds(draw):
    n = draw(st.integers(2, 7))
    t = draw(st.integers(n // 2 + 1, n))
    bits = draw(st.integers(1, 20))
    need = max(8, (n * (2**bits - 1)).bit_length())
    mod_bits = draw(st.integers(need, 64))
    k = draw(st.one_of(st.none(), st.sampled_from([2, 4, 6])))
    p = SecAggParams(num_clients=n, threshold=t, dim=draw(st.integers(1, 12)),
                     clip=draw(st.sampled_from([0.5, 1.0, 3.0])), bits=bits,
                     mod_bits=mod_bits, neighbours=k)
    drops = {c: d for c in range(n)
             if (d := draw(st.sampled_from((None,) * 6 + DROP_POINTS))) is not None}
    return p, drops, draw(st.integers(0, 2**32 - 1))


def _levels(x, p):
    top = 2**p.bits - 1
    return [min(top, round((min(max(float(v), -p.clip), p.clip) + p.clip) * top /
                           (2 * p.clip))) for v in x]


@given(rounds())
def test_round_is_exact_or_fails_for_a_true_reason(case):
    p, drops, seed = case
    rng = np.random.default_rng(seed)
    ups = {c: rng.uniform(-1.5 * p.clip, 1.5 * p.clip, p.dim) for c in range(p.num_clients)}
    completed = [[c for c in ups if c not in drops or DROP_POINTS.index(drops[c]) > i]
                 for i in range(4)]
    try:
        res = run_round(ups, p, drops, rng=rng)
    except SecAggError as e:
        short = min(len(s) for s in completed) < p.threshold
        plus = p.neighbours is not None and ("disconnected" in str(e) or
                                             "holders revealed" in str(e) or
                                             "shared keys with it" in str(e))
        assert short or plus, str(e)
        event("failed")
        return
    event("completed")
    assert min(len(s) for s in completed) >= p.threshold
    assert res.included == tuple(completed[2])
    want = [sum(col) for col in zip(*[_levels(ups[c], p) for c in completed[2]],
                                    strict=True)]
    assert res.quantised.tolist() == want
