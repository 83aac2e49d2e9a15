"""The server side of a secure-aggregation round (protocol: :mod:`secure_agg.secagg`).

The server collects each stage's messages (``receive_*``), then closes the stage
(``key_list``, ``share_bundles``, ``unmask_request``, ``result``). A ``receive_*`` that
raises :class:`SecAggError` records nothing, so the caller may treat that client as
dropped and carry on; closing a stage with fewer than ``threshold`` clients fails the
round (every later call raises).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from secure_agg import shamir
from secure_agg.secagg_core import (
    STAGES,
    SecAggError,
    SecAggParams,
    check_client_id,
    dequantise_sum,
    derive_key,
    prg,
    private_key,
    public_bytes,
    reduce,
    seed_commitment,
    self_mask_key,
    signature_ok,
    verify_key,
)
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


@dataclass(frozen=True)
class SecAggResult:
    """A round's outcome: ``total`` is the dequantised float sum of the updates of
    ``included`` (U3, the clients whose masked input arrived); ``quantised`` the exact
    integer sum of their quantised updates; ``dropped`` maps each client that left to
    the first stage it did not complete."""
    total: np.ndarray
    quantised: np.ndarray
    included: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)


class SecAggServer:
    """The aggregator's state machine. ``clients``, if given, is the set of ids allowed
    to join (any other id is refused); otherwise any ``num_clients`` distinct ids. In
    a signed round, ``peer_keys`` (client id -> Ed25519 public key), if given, lets
    the server refuse a badly signed advertisement early; the clients check anyway."""

    def __init__(self, params: SecAggParams, clients=None, peer_keys=None):
        self.params = params
        if not isinstance(params, SecAggParams):
            raise SecAggError(f"params must be SecAggParams, got {type(params).__name__}")
        self._peers = None if peer_keys is None else {
            check_client_id(c): verify_key(k, f"server: peer {c}")
            for c, k in peer_keys.items()}
        self._allowed = None if clients is None else {check_client_id(c) for c in clients}
        if self._allowed is not None and len(self._allowed) > params.num_clients:
            raise SecAggError(f"{len(self._allowed)} allowed clients, more than "
                              f"num_clients {params.num_clients}")
        self.stage = "advertise"
        self._why = ""
        self._keys: dict[int, AdvertiseKeys] = {}
        self._shares: dict[int, ShareKeys] = {}
        self._masked: set[int] = set()   # masked inputs are summed as they arrive
        self._acc = np.zeros(params.dim, dtype=np.uint64)
        self._unmask: dict[int, UnmaskShares] = {}
        self._u1: tuple[int, ...] = ()
        self._u2: tuple[int, ...] = ()
        self._u3: tuple[int, ...] = ()
        self._closed: list[str] = []
        self._graph: dict[int, frozenset[int]] = {}
        self._need = params.threshold
        self._revealed: dict[int, tuple[dict[int, int], dict[int, int]]] = {}

    # -- bookkeeping ---------------------------------------------------------------
    def _expect(self, stage: str) -> None:
        if self.stage == "failed":
            raise SecAggError(f"round failed earlier: {self._why}")
        if self.stage != stage:
            raise SecAggError(f"server is at stage {self.stage}, not {stage}")

    def _sender(self, cid: int, eligible, got, stage: str) -> None:
        if cid in got:
            raise SecAggError(f"client {cid} sent its {stage} message twice")
        if cid not in eligible:
            raise SecAggError(f"client {cid} is unknown at stage {stage} (not among "
                              f"the clients that completed the previous stage)")

    def _close(self, stage: str, ids) -> tuple[int, ...]:
        self._closed.append(stage)
        ids = tuple(sorted(ids))
        if len(ids) < self.params.threshold:
            self._why = (f"only {len(ids)} clients completed stage {stage}, below the "
                         f"threshold {self.params.threshold}")
            self.stage = "failed"
            raise SecAggError(f"round failed: {self._why}")
        self.stage = STAGES[STAGES.index(stage) + 1] if stage != "unmask" else "done"
        return ids

    @property
    def dropped(self) -> dict[int, str]:
        """Each client that left, mapped to the first stage it did not complete."""
        eligible = {"advertise": self._allowed or set(), "share_keys": self._u1,
                    "masked_input": self._u2, "unmask": self._u3}
        got = {"advertise": self._keys, "share_keys": self._shares,
               "masked_input": self._masked, "unmask": self._unmask}
        out: dict[int, str] = {}
        for st in self._closed:
            out.update({c: st for c in eligible[st] if c not in got[st] and c not in out})
        return out

    # -- stage 0 -------------------------------------------------------------------
    def receive_advertise(self, msg) -> None:
        self._expect("advertise")
        msg = as_message(msg, AdvertiseKeys, "server")
        if msg.cid in self._keys:
            raise SecAggError(f"client {msg.cid} sent its advertise message twice")
        if self._allowed is not None and msg.cid not in self._allowed:
            raise SecAggError(f"client {msg.cid} is unknown (not an allowed client)")
        if len(self._keys) >= self.params.num_clients:
            raise SecAggError(f"client {msg.cid} would exceed num_clients "
                              f"{self.params.num_clients}")
        if self.params.signed != bool(msg.sig):
            raise SecAggError(f"client {msg.cid}'s advertise is "
                              f"{'signed' if msg.sig else 'unsigned'} in a "
                              f"{'signed' if self.params.signed else 'unsigned'} round")
        if self._peers is not None and (msg.cid not in self._peers or not signature_ok(
                self._peers[msg.cid], msg.sig,
                advertise_payload(self.params.session, msg.cid, msg.c_pk, msg.s_pk))):
            raise SecAggError(f"client {msg.cid}'s advertised keys fail their signature "
                              f"check")
        used = {k for a in self._keys.values() for k in (a.c_pk, a.s_pk)}
        if msg.c_pk == msg.s_pk or {msg.c_pk, msg.s_pk} & used:
            raise SecAggError(f"client {msg.cid} advertises a public key already in use")
        self._keys[msg.cid] = msg

    def key_list(self) -> KeyList:
        """Close stage 0: the advertised keys, broadcast to every client of U1."""
        self._expect("advertise")
        self._u1 = self._close("advertise", self._keys)
        out = KeyList(tuple(self._keys[c] for c in self._u1))
        self._graph = masking_graph(out, self.params)
        self._need = shares_needed(self.params, self._graph)
        return out

    # -- stage 1 -------------------------------------------------------------------
    def receive_share_keys(self, msg) -> None:
        self._expect("share_keys")
        msg = as_message(msg, ShareKeys, "server")
        self._sender(msg.cid, self._u1, self._shares, "share_keys")
        to = {v for v, _ in msg.shares}
        want = self._graph[msg.cid]
        if to != want:
            raise SecAggError(f"client {msg.cid}'s shares are addressed to "
                              f"{sorted(to)}, expected its neighbours in U1 "
                              f"{sorted(want)}")
        self._shares[msg.cid] = msg

    def share_bundles(self) -> dict[int, ShareBundle]:
        """Close stage 1: for each client of U2, the ciphertexts the others of U2
        addressed to it."""
        self._expect("share_keys")
        self._u2 = self._close("share_keys", self._shares)
        routed: dict[int, list] = {v: [] for v in self._u2}
        for u in self._u2:
            for v, ct in self._shares[u].shares:
                if v in routed:
                    routed[v].append((u, ct))
        return {v: ShareBundle(v, tuple(r)) for v, r in routed.items()}

    # -- stage 2 -------------------------------------------------------------------
    def receive_masked_input(self, msg) -> None:
        self._expect("masked_input")
        p = self.params
        msg = as_message(msg, MaskedInput, "server")
        self._sender(msg.cid, self._u2, self._masked, "masked_input")
        d = msg.data
        if d.dtype != p.wire_dtype or d.shape != (p.dim,):
            raise SecAggError(f"client {msg.cid}'s masked input is {d.dtype} of shape "
                              f"{d.shape}, expected {p.wire_dtype} of shape ({p.dim},)")
        if p.mod_bits % 32 and int(d.max()) >= p.modulus:
            raise SecAggError(f"client {msg.cid}'s masked input has a value >= the "
                              f"modulus 2**{p.mod_bits}")
        self._masked.add(msg.cid)
        self._acc += d

    def unmask_request(self) -> UnmaskRequest:
        """Close stage 2: U3 (masked inputs received) and U2 minus U3, broadcast to
        every client of U3."""
        self._expect("masked_input")
        self._u3 = self._close("masked_input", self._masked)
        if not connected(self._u3, self._graph):
            self.stage, self._why = "failed", (
                f"the masking graph of the {len(self._u3)} survivors is disconnected "
                f"(too many neighbours left): unmasking would reveal partial sums")
            raise SecAggError(f"round failed: {self._why}")
        return UnmaskRequest(self._u3, tuple(c for c in self._u2 if c not in self._u3))

    # -- stage 3 -------------------------------------------------------------------
    def receive_unmask(self, msg) -> None:
        self._expect("unmask")
        msg = as_message(msg, UnmaskShares, "server")
        self._sender(msg.cid, self._u3, self._unmask, "unmask")
        b, s = {v for v, _ in msg.b_shares}, {v for v, _ in msg.s_shares}
        if b & s:
            raise SecAggError(f"client {msg.cid} reveals both shares for client "
                              f"{min(b & s)}; refused (that would unmask its update)")
        view = (self._graph[msg.cid] & set(self._u2)) | {msg.cid}
        want_b = view & set(self._u3)
        want_s = view - want_b
        if b != want_b or s != want_s:
            raise SecAggError(f"client {msg.cid} reveals b-shares for {sorted(b)} and "
                              f"s-shares for {sorted(s)}, expected b-shares for "
                              f"{sorted(want_b)} and s-shares for {sorted(want_s)}")
        self._unmask[msg.cid] = msg
        self._revealed[msg.cid] = (dict(msg.b_shares), dict(msg.s_shares))

    def _secret(self, owner: int, kind: str) -> bytes:
        """Reconstruct ``owner``'s seed (``kind`` "b") or s private key ("s") and check
        it against its commitment / advertised public key; if it fails, name the
        revealing client whose share is to blame when leaving one out identifies it."""
        idx = 0 if kind == "b" else 1
        pts = {u + 1: shares[idx][owner] for u, shares in self._revealed.items()
               if owner in shares[idx]}
        name = "self-mask seed" if kind == "b" else "s private key"
        if len(pts) < self._need:
            raise SecAggError(f"client {owner}'s {name}: only {len(pts)} of its share "
                              f"holders revealed shares ({sorted(x - 1 for x in pts)}), "
                              f"{self._need} needed")
        got = self._reconstruct(owner, kind, pts)
        if got is not None:
            return got
        culprits = [x - 1 for x in pts if len(pts) > self._need and
                    self._reconstruct(owner, kind, {k: y for k, y in pts.items()
                                                    if k != x}) is not None]
        blame = (f"client {culprits[0]}'s share is corrupted" if len(culprits) == 1 else
                 "the corrupted share cannot be attributed")
        raise SecAggError(f"client {owner}'s {name} reconstructed from the shares of "
                          f"clients {sorted(x - 1 for x in pts)} fails its check "
                          f"({'commitment' if kind == 'b' else 'advertised public key'}):"
                          f" {blame}")

    def _reconstruct(self, owner: int, kind: str, pts: dict[int, int]) -> bytes | None:
        p = self.params
        try:
            val = shamir.reconstruct(pts, self._need)
        except shamir.ShamirError:
            return None
        if val >= 2**256:
            return None
        raw = val.to_bytes(32, "big")
        if kind == "b":
            ok = seed_commitment(p.session, owner, raw) == self._shares[owner].b_commit
        else:
            ok = public_bytes(private_key(raw)) == self._keys[owner].s_pk
        return raw if ok else None

    def result(self) -> SecAggResult:
        """Close stage 3: reconstruct the survivors' seeds and the dropped clients'
        s keys, remove every mask and return the sum of U3's updates."""
        self._expect("unmask")
        self._close("unmask", self._unmask)
        try:
            total = self._unmasked_sum()
        except SecAggError as e:
            self.stage, self._why = "failed", str(e)
            raise
        return SecAggResult(dequantise_sum(total, len(self._u3), self.params), total,
                            self._u3, self.dropped)

    def _unmasked_sum(self) -> np.ndarray:
        p = self.params
        total = self._acc.copy()
        for u in self._u3:
            total -= prg(self_mask_key(p.session, u, self._secret(u, "b")), p)
        for v in self._u2:
            if v in self._u3:
                continue
            sk = private_key(self._secret(v, "s"))
            for u in sorted(self._graph[v] & set(self._u3)):
                mask = prg(derive_key(sk, self._keys[u].s_pk, b"mask", p.session, v, u,
                                      f"server for dropped client {v} with {u}"), p)
                # u added +mask if u < v, else -mask: undo it
                total = total - mask if u < v else total + mask
        return reduce(total, p)
