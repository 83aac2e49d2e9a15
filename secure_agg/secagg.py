"""Secure aggregation for horizontal jobs: the server learns only the sum.

The SecAgg construction of Bonawitz et al. (CCS 2017, "Practical Secure Aggregation
for Privacy-Preserving Machine Learning"), semi-honest variant with dropout recovery,
as pure message-passing state machines (:class:`SecAggClient`, :class:`SecAggServer`)
over typed messages with a byte encoding (:mod:`secure_agg.secagg_wire`). No
transport here: Flower's ServerApp / ClientApp (or :func:`run_round`, in process)
carries the bytes. numpy and ``cryptography`` only.

Protocol (``n`` clients, threshold ``t > n/2``, update length ``d``; U1 ⊇ U2 ⊇ U3 ⊇
U4 are the clients that completed stages 0..3; each needs at least ``t`` members):

0. advertise: client ``u`` draws two X25519 key pairs, ``c`` (share encryption) and
   ``s`` (mask agreement), and sends both public keys. The server broadcasts U1's.
1. share_keys: ``u`` draws a 256-bit self-mask seed ``b_u`` and splits ``b_u`` and its
   ``s`` private key into Shamir ``t``-of-|U1| shares over the P-384 prime field
   (:mod:`secure_agg.shamir`; client ``v`` holds the shares at ``x = v + 1``). The pair
   for ``v`` is sealed with AES-256-GCM under ``HKDF(X25519(c_u, c_v))``, sender,
   receiver and session as associated data. ``u`` also sends ``SHA-256(b_u)``
   (domain-separated), so a reconstructed seed can be checked. The server routes
   each ciphertext to its receiver.
2. masked_input: ``u`` decrypts its shares (an AEAD failure is refused, naming the
   sender), quantises its update to ``x_u`` and sends
   ``y_u = x_u + PRG(b_u) + sum_{v in U2, v != u} ±PRG(s_uv)  (mod 2**mod_bits)``,
   ``+`` if ``u < v``, ``-`` otherwise, ``s_uv = HKDF(X25519(s_u, s_v))`` (the same
   for ``u`` and ``v``), PRG = AES-256-CTR keystream.
3. unmask: the server sends U3 and U2 minus U3. ``u`` reveals its share of ``b_v``
   for every ``v`` in U3 and its share of ``s_v`` for every ``v`` in U2 minus U3, and
   refuses a request that names a client as both (or that does not partition U2).
   From U4's shares the server rebuilds each ``b_v`` (checked against its commitment)
   and each dropped ``s_v`` (checked against the advertised public key), subtracts
   ``PRG(b_v)`` for U3 and the dropped clients' pairwise masks with U3: the masks of
   pairs inside U3 cancel, leaving ``sum_{u in U3} x_u`` exactly.

SecAgg+ (Bell et al., CCS 2020; ``SecAggParams.neighbours = k``): the same stages,
but each client shares its secrets with and masks against only its ``k`` neighbours
on a pseudorandom k-regular (Harary) graph derived from the session and the key list
(:mod:`secure_agg.secagg_graph`); its secrets are split ``neighbour_threshold``-of-
``(k+1)`` among itself and its neighbours. Cost per client drops from O(n) to O(k).
Both sides refuse to unmask if the survivors' graph is disconnected (the server
could then read each component's sum).

Messages (bytes incl. the 6-byte header; ``w`` = 4 if ``mod_bits <= 32`` else 8; in
SecAgg+ read ``k`` for ``|U1| - 1`` and ``|U2| - 1``):

==================  =====================  =================================  ==================
stage               sender -> receiver     content                            size
==================  =====================  =================================  ==================
0 AdvertiseKeys     client -> server       id, c_pk, s_pk (+ signature)       78 (142)
0 KeyList           server -> U1 (each)    U1's ids and public keys           10 + 72 |U1|
                                           (+ signatures if signed)           (+ 64 |U1|)
1 ShareKeys         client -> server       id, seed commitment, a sealed      50 + 132 (|U1|-1)
                                           (b, s) share pair per peer
1 ShareBundle       server -> each of U2   the sealed pairs addressed to it   18 + 132 (|U2|-1)
2 MaskedInput       client -> server       id, d masked words                 19 + w d
2 UnmaskRequest     server -> U3 (each)    U3, U2 minus U3                    14 + 8 |U2|
3 UnmaskShares      client -> server       id, one 48-byte share per U2 peer  22 + 56 |U2|
==================  =====================  =================================  ==================

What each party learns. The server: U1..U4 (who dropped when), the public keys, the
ciphertexts (nothing without a c private key), the masked inputs — each uniform on
``Z_{2**mod_bits}^d`` on its own, because ``PRG(b_u)`` is a fresh pseudorandom pad
that is only removed after ``b_u`` is rebuilt, and ``b_u`` is rebuilt only for
clients whose masked input is in the sum — and the sum over U3. For a dropped client
it learns ``s_v`` (not ``b_v``), and ``v``'s masked input never arrived. A client
learns the public keys, U2 and U3 and its own shares: nothing about another update.
Fewer than ``t`` colluding clients learn nothing from their shares.

Threat model. Honest-but-curious server, any minority of curious clients. The
AES-GCM tags stop the server from reading, altering or misrouting shares (a changed
ciphertext fails at its receiver, naming the sender); the commitment and public-key
checks stop a corrupted share from silently corrupting the sum (the round fails,
naming the revealing client when leaving one share out identifies it); ``t > n/2``
plus the client's refusal to reveal both shares of one peer stop a server that sends
different survivor lists to different clients from rebuilding both secrets of one
client from honest shares (SecAgg+: ``neighbour_threshold > (k+1)/2`` within each
neighbourhood). In SecAgg+ a coalition of the server and ``neighbour_threshold`` of a
client's neighbours could rebuild both its secrets (plain SecAgg: ``t`` of all
clients); the pseudorandom graph makes such a coalition unlikely for a small corrupt
fraction when ``k`` grows like ``log n`` (Bell et al.). Unsigned rounds have no PKI
between clients — the server relays the advertised keys, so an actively malicious
server could substitute keys or simulate clients (sybils) and so unmask an update. A
signed round (``SecAggParams.signed``) closes that: each client signs its two public
keys with its long-term Ed25519 key and checks every peer's signature against keys
it was configured with out of band (e.g. the banks' node signing keys, pinned like
fedjoint's peers), refusing any other client. Flower's TLS and SuperNode
authentication authenticate each client to the SuperLink only. Bonawitz et al.'s
consistency-check round (clients sign the survivor list) is not implemented;
``t > n/2`` stands in for it against inconsistent survivor lists. Each update must be
summed by one round only: a server that completes two rounds over the same updates
with different survivor sets learns the difference of the sums (one update, if they
differ by one client). A client can send any values in range: the sum is private,
not robust to poisoning.

Quantisation. Each coordinate is clipped to ``[-clip, clip]`` and rounded to the
nearest of ``L = 2**bits`` levels, step ``D = 2 clip / (L - 1)``; the dequantised sum of
``m`` clients' unclipped updates is within ``m D / 2`` of the true sum per coordinate
(:meth:`SecAggParams.error_bound`). :class:`SecAggParams` refuses a modulus that
``n (L - 1)`` would wrap.
"""

from __future__ import annotations

import time

import numpy as np

from secure_agg.rng import Drbg
from secure_agg.secagg_client import SecAggClient
from secure_agg.secagg_core import (
    STAGES,
    SecAggError,
    SecAggParams,
    dequantise_sum,
    quantise,
    signing_key,
)
from secure_agg.secagg_server import SecAggResult, SecAggServer
from secure_agg.secagg_wire import (
    AdvertiseKeys,
    KeyList,
    MaskedInput,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
    encode,
)

__all__ = ["STAGES", "AdvertiseKeys", "KeyList", "MaskedInput", "SecAggClient",
           "SecAggError", "SecAggParams", "SecAggResult", "SecAggServer", "ShareBundle",
           "ShareKeys", "UnmaskRequest", "UnmaskShares", "decode_message",
           "dequantise_sum", "encode", "quantise", "run_round"]

#: values of ``run_round``'s ``drop_after``: the last stage a client completes
DROP_POINTS = ("start",) + STAGES[:-1]


def _as_drbg(rng) -> Drbg:
    if rng is None:
        return Drbg.fresh("secagg/run_round")
    if isinstance(rng, Drbg):
        return rng
    if isinstance(rng, np.random.Generator):  # tests and benchmarks only
        return Drbg(rng.bytes(32), "secagg/run_round")
    raise SecAggError(f"rng must be a Drbg, a numpy Generator or None, got "
                      f"{type(rng).__name__}")


def run_round(updates: dict[int, np.ndarray], params: SecAggParams,
              drop_after: dict[int, str] | None = None, rng=None,
              stats: dict | None = None) -> SecAggResult:
    """One round in process, every message through its byte encoding (tests and
    benchmarks; production carries the bytes over Flower; a signed round gets fresh
    Ed25519 keys per client from ``rng``). ``drop_after[cid]`` is the
    last stage that client completes before leaving (one of :data:`DROP_POINTS`).
    ``stats``, if given, is filled per stage with the clients' and the server's
    CPU seconds and the bytes each client sent and received."""
    drop_after = dict(drop_after or {})
    for cid, stage in drop_after.items():
        if cid not in updates or stage not in DROP_POINTS:
            raise SecAggError(f"drop_after[{cid!r}] = {stage!r}: expected a client of "
                              f"updates and one of {DROP_POINTS}")
    base = _as_drbg(rng)
    sign = {c: signing_key(base.child(f"sign/{c}").random_bytes(32), "run_round")
            for c in updates} if params.signed else {}
    pubs = {c: k.public_key() for c, k in sign.items()} if params.signed else None
    server = SecAggServer(params, clients=updates, peer_keys=pubs)
    clients = {c: SecAggClient(c, params, base.child(f"client/{c}"), sign.get(c), pubs)
               for c in updates}
    st = stats if stats is not None else {}
    for name in STAGES:
        st[name] = {"client_s": {}, "server_s": 0.0, "up": {}, "down": {}}

    def alive(stage: str) -> list[int]:
        return [c for c in clients if c not in drop_after or
                DROP_POINTS.index(drop_after[c]) > STAGES.index(stage)]

    def step(stage, call, downlink, close):
        rec = st[stage]
        for c in alive(stage):
            t0 = time.process_time()
            wire = encode(call(c, decode_message(downlink[c]) if downlink else None))
            rec["client_s"][c] = time.process_time() - t0
            rec["up"][c] = len(wire)
            rec["down"][c] = len(downlink[c]) if downlink else 0
            t0 = time.process_time()
            getattr(server, f"receive_{stage}")(decode_message(wire))
            rec["server_s"] += time.process_time() - t0
        t0 = time.process_time()
        out = close()
        rec["server_s"] += time.process_time() - t0
        return out

    keys = step("advertise", lambda c, _: clients[c].advertise(), None,
                lambda: encode(server.key_list()))
    bundles = step("share_keys", lambda c, m: clients[c].share_keys(m),
                   dict.fromkeys(clients, keys),
                   lambda: {v: encode(b) for v, b in server.share_bundles().items()})
    req = step("masked_input", lambda c, m: clients[c].masked_input(m, updates[c]),
               bundles, lambda: encode(server.unmask_request()))
    return step("unmask", lambda c, m: clients[c].unmask(m),
                dict.fromkeys(clients, req), server.result)
