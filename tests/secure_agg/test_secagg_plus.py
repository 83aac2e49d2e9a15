"""SecAgg+ (neighbours = k): keys, shares and masks only along a k-regular graph.

References: scipy.sparse.csgraph's connected components (for the graph's
connectivity after every removal of k-1 clients), Python-int sums of independently
recomputed quantisation levels, scipy's chi-square for uniformity.
"""

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from support.secagg_round import Round

from secure_agg.secagg import SecAggError, SecAggParams, UnmaskRequest, quantise, run_round
from secure_agg.secagg_graph import connected, masking_graph


def _components(graph, nodes) -> int:
    nodes = sorted(nodes)
    idx = {c: i for i, c in enumerate(nodes)}
    rows, cols = [], []
    for c in nodes:
        for o in graph[c]:
            if o in idx:
                rows.append(idx[c])
                cols.append(idx[o])
    m = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes), len(nodes)))
    return connected_components(m, directed=False)[0]


def _exact(res, updates, p, ids):
    want = np.sum([quantise(updates[c], p) for c in ids], axis=0)
    assert res.included == tuple(ids)
    assert np.array_equal(res.quantised, want)


def test_graph_is_k_regular_k_connected_and_the_same_everywhere():
    r = Round(n=10, t=6, dim=4, neighbours=4)
    r.advertise()
    g = masking_graph(r.keys, r.p)
    assert all(len(v) == 4 and c not in v for c, v in g.items())
    assert all(c in g[o] for c, v in g.items() for o in v)
    for gone in itertools.combinations(range(10), 3):  # every removal of k-1 clients
        assert _components(g, set(range(10)) - set(gone)) == 1
        assert connected(set(range(10)) - set(gone), g)
    cut = set(range(10)) - set(g[0]) - {0}  # 0's neighbours gone: 0 is isolated
    assert _components(g, cut | {0}) == 2 and not connected(cut | {0}, g)
    # the clients derive the same graph; shares go to neighbours only
    r.share()
    for c in range(10):
        assert {v for v, _ in r.sent["share_keys"][c].shares} == g[c]
        assert {u for u, _ in r.bundles[c].shares} == g[c]
    # another session, another graph
    other = SecAggParams(num_clients=10, threshold=6, dim=4, neighbours=4, session=b"x")
    assert masking_graph(r.keys, other) != g


def test_sum_is_exact_with_dropouts_at_every_stage():
    p = SecAggParams(num_clients=14, threshold=8, dim=50, neighbours=6)
    rng = np.random.default_rng(3)
    ups = {c: rng.uniform(-1, 1, 50) for c in range(14)}
    drops = {0: "start", 3: "advertise", 7: "share_keys", 11: "masked_input"}
    res = run_round(ups, p, drops, rng=rng)
    _exact(res, ups, p, [1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13])
    assert res.dropped == {0: "advertise", 3: "share_keys", 7: "masked_input",
                           11: "unmask"}


def test_large_k_is_plain_secagg():
    p = SecAggParams(num_clients=5, threshold=3, dim=8, neighbours=4)
    r = Round(n=5, t=3, dim=8, neighbours=4)
    r.advertise()
    assert all(len(v) == 4 for v in masking_graph(r.keys, p).values())
    ups = {c: np.full(8, 0.1 * c) for c in range(5)}
    _exact(run_round(ups, p, {2: "share_keys"}), ups, p, [0, 1, 3, 4])


def test_messages_are_smaller_than_plain_secagg():
    st_plus, st_full = {}, {}
    ups = {c: np.zeros(16) for c in range(20)}
    run_round(ups, SecAggParams(20, 11, 16, neighbours=4), stats=st_plus)
    run_round(ups, SecAggParams(20, 11, 16), stats=st_full)
    assert set(st_plus["share_keys"]["up"].values()) == {50 + 132 * 4}
    assert set(st_full["share_keys"]["up"].values()) == {50 + 132 * 19}
    assert set(st_plus["unmask"]["up"].values()) == {22 + 56 * 5}


def test_masked_input_is_uniform():
    dim = 20_000
    r = Round(n=10, t=6, dim=dim, neighbours=2,
              updates={c: np.full(dim, 0.5) for c in range(10)})
    r.through("mask")
    y = r.sent["masked_input"][4].data.astype(np.uint64)
    counts = np.bincount((y >> np.uint64(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    q = quantise(r.updates[4], r.p)
    assert stats.chisquare(np.bincount((q >> np.uint64(8)).astype(np.int64),
                                       minlength=256)).pvalue < 1e-10


def test_disconnected_survivors_fail_the_round_and_clients_refuse():
    """With k = 2 the graph is a ring: two non-adjacent leavers split the survivors
    into two arcs whose separate sums the server could read."""
    r = Round(n=10, t=6, dim=4, neighbours=2)
    r.through("share")
    g = masking_graph(r.keys, r.p)
    a = 0
    b = next(c for c in range(10) if c != a and c not in g[a]
             and not connected(set(range(10)) - {a, c}, g))
    alive = sorted(set(range(10)) - {a, b})
    r.mask(ids=alive, close=False)
    # an honest client refuses such a request
    with pytest.raises(SecAggError, match="masking graph is disconnected"):
        r.clients[alive[0]].unmask(UnmaskRequest(tuple(alive), (a, b)))
    with pytest.raises(SecAggError, match="round failed: the masking graph of the 8 "
                                          "survivors is disconnected"):
        r.server.unmask_request()


def test_too_few_holders_of_one_clients_shares():
    """Client 0's neighbours all leave at unmask: its seed cannot be rebuilt."""
    r = Round(n=12, t=7, dim=4, neighbours=4)
    r.through("mask")
    g = masking_graph(r.keys, r.p)
    revealers = sorted(set(range(12)) - g[0] - {0})
    r.unmask(ids=revealers, close=False)
    with pytest.raises(SecAggError, match="client 0's self-mask seed: only 0 of its "
                                          "share holders revealed shares"):
        r.server.result()


@pytest.mark.parametrize("kw, match", [
    (dict(neighbours=3), "even integer"),
    (dict(neighbours=0), "even integer"),
    (dict(neighbours=4, neighbour_threshold=2), "neighbour_threshold must be"),
    (dict(neighbours=4, neighbour_threshold=6), "neighbour_threshold must be"),
    (dict(neighbour_threshold=3), "needs neighbours"),
])
def test_plus_params_are_checked(kw, match):
    with pytest.raises(SecAggError, match=match):
        SecAggParams(num_clients=10, threshold=6, dim=4, **kw)


def test_higher_neighbour_threshold():
    p = SecAggParams(num_clients=12, threshold=7, dim=8, neighbours=6,
                     neighbour_threshold=5)
    ups = {c: np.full(8, -0.25) for c in range(12)}
    _exact(run_round(ups, p, {5: "masked_input"}), ups, p, list(range(12)))
