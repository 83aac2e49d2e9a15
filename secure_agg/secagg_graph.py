"""The masking graph of a round: who shares keys and masks with whom.

Plain SecAgg (``neighbours`` unset, or at least |U1| - 1): the complete graph on U1.
SecAgg+ (Bell et al., CCS 2020): a Harary graph H(|U1|, k) on a pseudorandom order of
U1 -- each client's ``k/2`` successors and predecessors on a ring -- so a client
shares with and masks against only ``k`` peers. The order is derived from a hash of
the session and the key list (sorted by id), so the server and every client compute
the same graph without another message, and the server cannot pick it without
changing the keys themselves. H(m, k) is k-connected: fewer than k leavers cannot
split the survivors; :func:`connected` lets both sides check that they did not.
"""

from __future__ import annotations

import hashlib

from secure_agg.rng import Drbg
from secure_agg.secagg_core import DOMAIN, SecAggParams
from secure_agg.secagg_wire import KeyList, encode

Graph = dict[int, frozenset[int]]


def masking_graph(keys: KeyList, params: SecAggParams) -> Graph:
    ids = sorted(k.cid for k in keys.keys)
    m, k = len(ids), params.neighbours
    if k is None or k >= m - 1:
        return {c: frozenset(ids) - {c} for c in ids}
    canon = encode(KeyList(tuple(sorted(keys.keys, key=lambda a: a.cid))))
    s = params.session
    seed = hashlib.sha256(DOMAIN + b"/graph/" + bytes([len(s)]) + s + canon).digest()
    rng = Drbg(seed, "secagg/graph")
    order = list(ids)
    for i in range(m - 1, 0, -1):  # Fisher-Yates
        j = rng.randbelow(i + 1)
        order[i], order[j] = order[j], order[i]
    nb: dict[int, set[int]] = {c: set() for c in ids}
    for i, c in enumerate(order):
        for d in range(1, k // 2 + 1):
            o = order[(i + d) % m]
            nb[c].add(o)
            nb[o].add(c)
    return {c: frozenset(v) for c, v in nb.items()}


def shares_needed(params: SecAggParams, graph: Graph) -> int:
    """Shamir threshold of each client's secrets: ``threshold`` on the complete graph,
    else ``neighbour_threshold`` of its ``k + 1`` holders (itself and its neighbours)."""
    m = len(graph)
    if params.neighbours is None or params.neighbours >= m - 1:
        return params.threshold
    return params.holder_threshold


def connected(nodes, graph: Graph) -> bool:
    """Whether ``nodes`` induce a connected subgraph (an empty set is not)."""
    nodes = set(nodes)
    if not nodes:
        return False
    start = min(nodes)
    seen, todo = {start}, [start]
    while todo:
        for o in graph[todo.pop()] & nodes:
            if o not in seen:
                seen.add(o)
                todo.append(o)
    return seen == nodes
