"""The client side of a secure-aggregation round (protocol: :mod:`secure_agg.secagg`).

A :class:`SecAggClient` is single-use: one round, its four stages in order, each
called once. Every stage validates what the server sent before computing anything,
and a refused stage leaves the client unusable (it sends nothing more).
"""

from __future__ import annotations

import numpy as np

from secure_agg import shamir
from secure_agg.rng import Drbg
from secure_agg.secagg_core import (
    KEY_BYTES,
    NONCE_BYTES,
    SecAggError,
    SecAggParams,
    check_client_id,
    derive_key,
    open_sealed,
    prg,
    private_key,
    public_bytes,
    quantise,
    reduce,
    seal,
    seed_commitment,
    self_mask_key,
    share_aad,
    signature_ok,
    verify_key,
)
from secure_agg.secagg_core import signing_key as signing_key_of
from secure_agg.secagg_graph import connected, masking_graph, shares_needed
from secure_agg.secagg_wire import (
    AdvertiseKeys,
    KeyList,
    MaskedInput,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    advertise_payload,
    as_message,
)

SB = shamir.SHARE_BYTES


class SecAggClient:
    """One client's state machine: ``advertise`` -> ``share_keys`` -> ``masked_input``
    -> ``unmask``. ``rng`` supplies ``random_bytes(n)`` (default: a fresh
    :class:`~secure_agg.rng.Drbg` from the OS CSPRNG). In a signed round
    (``params.signed``) ``signing_key`` is this client's long-term Ed25519 key and
    ``peer_keys`` maps every client id it will accept to that client's Ed25519 public
    key (key objects or 32 raw bytes)."""

    def __init__(self, cid: int, params: SecAggParams, rng=None, signing_key=None,
                 peer_keys=None):
        self.cid = check_client_id(cid)
        if not isinstance(params, SecAggParams):
            raise SecAggError(f"params must be SecAggParams, got {type(params).__name__}")
        self._sign = self._peers = None
        if params.signed:
            self._sign = signing_key_of(signing_key, self.who)
            if not hasattr(peer_keys, "items"):
                raise SecAggError(f"{self.who}: a signed round needs peer_keys (client "
                                  f"id -> Ed25519 public key)")
            self._peers = {check_client_id(c): verify_key(k, f"{self.who}: peer {c}")
                           for c, k in peer_keys.items()}
            self._peers.setdefault(self.cid, self._sign.public_key())
        elif signing_key is not None or peer_keys is not None:
            raise SecAggError(f"{self.who}: signing keys given but params.signed is False")
        self.params = params
        self._rng = rng if rng is not None else Drbg.fresh(f"secagg/{cid}")
        self._next = "advertise"
        self._c_sk = private_key(self._rng.random_bytes(KEY_BYTES))
        self._s_raw = self._rng.random_bytes(KEY_BYTES)
        self._s_sk = private_key(self._s_raw)
        self._keys: dict[int, AdvertiseKeys] = {}
        self._graph: dict[int, frozenset[int]] = {}
        self._need = params.threshold
        self._u2: set[int] = set()
        self._own: tuple[int, int] = (0, 0)          # own (b-share, s-share)
        self._held: dict[int, tuple[int, int]] = {}  # peer -> (b-share, s-share)

    @property
    def who(self) -> str:
        return f"client {self.cid}"

    def _stage(self, name: str, then: str) -> None:
        if self._next != name:
            raise SecAggError(f"{self.who}: {name} called out of order (next stage: "
                              f"{self._next})")
        self._next = "refused"  # until the stage succeeds
        self._then = then

    def _done(self) -> None:
        self._next = self._then

    # -- stage 0 -------------------------------------------------------------------
    def advertise(self) -> AdvertiseKeys:
        """Two fresh X25519 public keys: c (share encryption), s (mask agreement)."""
        self._stage("advertise", "share_keys")
        c_pk, s_pk = public_bytes(self._c_sk), public_bytes(self._s_sk)
        sig = b"" if self._sign is None else self._sign.sign(
            advertise_payload(self.params.session, self.cid, c_pk, s_pk))
        msg = AdvertiseKeys(self.cid, c_pk, s_pk, sig)
        self._mine = msg
        self._done()
        return msg

    # -- stage 1 -------------------------------------------------------------------
    def share_keys(self, key_list) -> ShareKeys:
        """Shamir-share the self-mask seed and the s private key to every neighbour
        (every peer of U1 in plain SecAgg), each neighbour's pair encrypted under the
        c-key agreement with it."""
        self._stage("share_keys", "masked_input")
        p, who = self.params, self.who
        key_list = as_message(key_list, KeyList, who)
        keys = key_list.by_id()
        if keys.get(self.cid) != self._mine:
            raise SecAggError(f"{who}: the key list does not carry this client's "
                              f"advertised keys")
        if not p.threshold <= len(keys) <= p.num_clients:
            raise SecAggError(f"{who}: key list has {len(keys)} clients, needs between "
                              f"threshold {p.threshold} and {p.num_clients}")
        pks = [k.c_pk for k in keys.values()] + [k.s_pk for k in keys.values()]
        if len(set(pks)) != len(pks):
            raise SecAggError(f"{who}: the key list repeats a public key")
        if self._peers is not None:
            for v, k in sorted(keys.items()):
                if v not in self._peers:
                    raise SecAggError(f"{who}: the key list names client {v}, which has "
                                      f"no known signing key")
                if not k.sig or not signature_ok(self._peers[v], k.sig, advertise_payload(
                        p.session, v, k.c_pk, k.s_pk)):
                    raise SecAggError(f"{who}: client {v}'s advertised keys fail their "
                                      f"signature check (substituted keys?)")
        self._keys = keys
        self._graph = masking_graph(key_list, p)
        self._need = shares_needed(p, self._graph)
        holders = sorted(self._graph[self.cid] | {self.cid})
        self._b = self._rng.random_bytes(KEY_BYTES)
        xs = [v + 1 for v in holders]
        rb = self._rng.random_bytes
        b_sh = shamir.split(int.from_bytes(self._b, "big"), xs, self._need, rb)
        s_sh = shamir.split(int.from_bytes(self._s_raw, "big"), xs, self._need, rb)
        out = []
        for v in holders:
            pair = (b_sh[v + 1], s_sh[v + 1])
            if v == self.cid:
                self._own = pair
                continue
            key = derive_key(self._c_sk, keys[v].c_pk, b"enc", p.session, self.cid, v,
                             f"{who} with client {v}")
            plain = pair[0].to_bytes(SB, "big") + pair[1].to_bytes(SB, "big")
            out.append((v, seal(key, rb(NONCE_BYTES), plain,
                                share_aad(p.session, self.cid, v))))
        msg = ShareKeys(self.cid, seed_commitment(p.session, self.cid, self._b),
                        tuple(out))
        self._done()
        return msg

    # -- stage 2 -------------------------------------------------------------------
    def masked_input(self, bundle, update: np.ndarray) -> MaskedInput:
        """Decrypt and keep the neighbours' shares, then send ``quantise(update)`` plus
        the self mask plus the pairwise masks with every neighbour that shared keys."""
        self._stage("masked_input", "unmask")
        p, who = self.params, self.who
        bundle = as_message(bundle, ShareBundle, who)
        if bundle.to != self.cid:
            raise SecAggError(f"{who}: received the share bundle for client {bundle.to}")
        x = np.asarray(update)
        if x.shape != (p.dim,) or x.dtype.kind not in "fiu":
            raise SecAggError(f"{who}: update must be a real vector of shape ({p.dim},), "
                              f"got {x.dtype} of shape {x.shape}")
        if not np.isfinite(x).all():
            raise SecAggError(f"{who}: update has {int((~np.isfinite(x)).sum())} "
                              f"non-finite values")
        held = {}
        for u, ct in bundle.shares:
            if u not in self._graph[self.cid]:
                raise SecAggError(f"{who}: share bundle has a share from client {u}, "
                                  f"which is not a neighbour in the key list")
            key = derive_key(self._c_sk, self._keys[u].c_pk, b"enc", p.session, u,
                             self.cid, f"{who} with client {u}")
            plain = open_sealed(key, ct, share_aad(p.session, u, self.cid))
            if plain is None:
                raise SecAggError(f"{who}: the share from client {u} fails its AES-GCM "
                                  f"check (tampered, misrouted or from another session)")
            held[u] = (int.from_bytes(plain[:SB], "big"), int.from_bytes(plain[SB:], "big"))
            if max(held[u]) >= shamir.PRIME:
                raise SecAggError(f"{who}: the share from client {u} is not a field "
                                  f"element")
        u2 = set(held) | {self.cid}
        if len(u2) < self._need:
            raise SecAggError(f"{who}: only {len(u2)} clients (itself included) shared "
                              f"keys with it, below the threshold {self._need}")
        self._held, self._u2 = held, u2
        y = quantise(x, p) + prg(self_mask_key(p.session, self.cid, self._b), p)
        for v in sorted(u2 - {self.cid}):
            mask = prg(derive_key(self._s_sk, self._keys[v].s_pk, b"mask", p.session,
                                  self.cid, v, f"{who} with client {v}"), p)
            y = y + mask if self.cid < v else y - mask
        msg = MaskedInput(self.cid, reduce(y, p).astype(p.wire_dtype))
        self._done()
        return msg

    # -- stage 3 -------------------------------------------------------------------
    def unmask(self, request, answered=None) -> UnmaskShares:
        """Reveal the b-share of each surviving neighbour and the s-key share of each
        dropped one; refuse a request naming a client as both, inconsistent with what
        this client saw of U2, or whose survivors' masking graph is disconnected.

        A client rebuilt from saved state for each message (a Flower ClientApp replaying
        its stages from its seed) must save the first request it answered and pass it
        as ``answered``: a different later request is refused. Without that, the
        single-use guarantee is lost and a server could ask twice."""
        self._stage("unmask", "done")
        p, who = self.params, self.who
        req = as_message(request, UnmaskRequest, who)
        if answered is not None:
            prev = as_message(answered, UnmaskRequest, who)
            if (set(prev.survivors), set(prev.dropped)) != (set(req.survivors),
                                                            set(req.dropped)):
                raise SecAggError(f"{who}: a second, different unmask request after "
                                  f"answering one; refused (the two could reveal both "
                                  f"shares of a peer)")
        surv, drop = set(req.survivors), set(req.dropped)
        both = surv & drop
        if both:
            raise SecAggError(f"{who}: refuses to reveal both shares of client "
                              f"{min(both)} (named as survivor and as dropped): that "
                              f"would unmask its update")
        if self.cid not in surv:
            raise SecAggError(f"{who}: unmask request does not list this client as a "
                              f"survivor")
        listed, scope = surv | drop, self._graph[self.cid] | {self.cid}
        odd = ((listed & scope) ^ self._u2) | (listed - set(self._graph))
        if odd:
            raise SecAggError(f"{who}: unmask request does not partition the clients "
                              f"that shared keys (differs at {sorted(odd)})")
        if len(surv) < p.threshold:
            raise SecAggError(f"{who}: only {len(surv)} survivors, below the threshold "
                              f"{p.threshold}")
        if not connected(surv, self._graph):
            raise SecAggError(f"{who}: the survivors' masking graph is disconnected, so "
                              f"unmasking would reveal partial sums; refused")
        held = dict(self._held)
        held[self.cid] = self._own
        msg = UnmaskShares(self.cid,
                           tuple((v, held[v][0]) for v in sorted(surv & self._u2)),
                           tuple((v, held[v][1]) for v in sorted(drop & self._u2)))
        self._done()
        return msg
