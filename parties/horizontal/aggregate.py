"""The aggregator's summation seam: one call sums one vector per bank.

:class:`PlainSum` asks each bank for its vector in the clear (one message each way; the
benchmark's baseline). :class:`SecureSum` runs one SecAgg round
(:mod:`secure_agg.secagg`) over Flower's Message API: four ``grid.send_and_receive``
stages (advertise -> share keys -> masked input -> unmask), so the aggregator learns
only the sum over the banks whose masked input arrived, and survives banks that stop
answering as long as at least the threshold remain at every stage.

A bank that answers with a Flower error, a reply that fails its checks (wrong length,
a SecAgg message that does not decode or is refused) or no reply in time is dropped
from the round, with the reason kept in :attr:`SumResult.dropped`. Fewer banks left
than ``min_banks`` (or the SecAgg threshold) is :class:`RoundFailed`, never a sum of
whatever arrived.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from parties.horizontal.wire import (
    ENV_PREFIX,
    PLAIN_TYPE,
    RECORD,
    STAGE_TYPES,
    WireError,
    bytes_vec,
    content_bytes,
    ledger_payload,
)
from secure_agg.secagg import SecAggError, SecAggParams, SecAggServer, decode_message, encode

#: SecAgg parameters of the counts phase: integers up to 2**24 summed exactly
COUNT_CLIP, COUNT_BITS, COUNT_MOD_BITS = float(2**24), 30, 48


class RoundFailed(RuntimeError):
    """A round could not produce a trustworthy sum (reason says why and who)."""


@dataclass
class SumResult:
    total: np.ndarray
    included: list[int]                       # node ids whose vector is in the sum
    dropped: dict[int, str] = field(default_factory=dict)
    up_bytes: dict[int, int] = field(default_factory=dict)     # bank -> aggregator
    down_bytes: dict[int, int] = field(default_factory=dict)   # aggregator -> bank
    seconds: float = 0.0


def _reply_error(reply: Message) -> str | None:
    if reply.has_error():
        return f"error from the bank: {reply.error.reason}"[:400]
    if RECORD not in reply.content.config_records:
        return "reply without the fedjoint record"
    return None


class _Exchange:
    """send_and_receive with per-bank bookkeeping of bytes and failures."""

    def __init__(self, grid, timeout: float, group: str, names: dict[int, str],
                 ledgers: dict | None = None):
        self.grid, self.timeout, self.group, self.names = grid, timeout, group, names
        self.ledgers = ledgers or {}
        self.up: dict[int, int] = {}
        self.down: dict[int, int] = {}
        self.dropped: dict[int, str] = {}

    def ask(self, mtype: str, contents: dict[int, dict]) -> dict[int, ConfigRecord]:
        msgs = []
        for node, cfg in contents.items():
            rec = ConfigRecord(cfg)
            if node in self.ledgers:
                rec = ConfigRecord({**cfg, **self.ledgers[node].sent(mtype, ledger_payload(mtype, rec))})
            self.down[node] = self.down.get(node, 0) + content_bytes(rec)
            msgs.append(Message(RecordDict({RECORD: rec}), dst_node_id=node,
                                message_type=mtype, group_id=self.group))
        out: dict[int, ConfigRecord] = {}
        for reply in self.grid.send_and_receive(msgs, timeout=self.timeout):
            node = reply.metadata.src_node_id
            if node not in contents:
                continue
            problem = _reply_error(reply)
            if problem:
                self.dropped[node] = f"{mtype}: {problem}"
                continue
            rec = reply.content.config_records[RECORD]
            if node in self.ledgers:
                try:
                    self.ledgers[node].received(mtype + ".reply", ledger_payload(mtype, rec), {
                        k: rec[k] for k in rec.keys() if k.startswith(ENV_PREFIX)})
                except ValueError as exc:   # no statement, or an envelope that fails
                    self.dropped[node] = f"{mtype}: {exc}"
                    continue
            self.up[node] = self.up.get(node, 0) + content_bytes(rec)
            out[node] = rec
        for node in contents:
            if node not in out and node not in self.dropped:
                self.dropped[node] = f"{mtype}: no reply within {self.timeout:g} s"
        return out

    def name(self, node: int) -> str:
        return self.names.get(node, f"node {node}")


class PlainSum:
    """Every bank's vector in the clear, summed at the aggregator."""

    secure = False

    def __init__(self, min_banks: int, timeout: float):
        self.min_banks, self.timeout = min_banks, timeout

    def total(self, grid, nodes: list[int], phase: str, inputs: dict, dim: int,
              group: str, names: dict[int, str], ledgers: dict | None = None) -> SumResult:
        t0 = time.perf_counter()
        ex = _Exchange(grid, self.timeout, group, names, ledgers)
        replies = ex.ask(PLAIN_TYPE, {n: {"phase": phase, **inputs} for n in nodes})
        vecs = {}
        for node, rec in replies.items():
            try:
                vecs[node] = bytes_vec(rec.get("vec"), dim, f"{ex.name(node)}'s {phase} vector")
            except WireError as exc:
                ex.dropped[node] = str(exc)
        _enough(vecs, self.min_banks, phase, ex)
        total = np.sum([vecs[n] for n in sorted(vecs)], axis=0)
        return SumResult(total, sorted(vecs), ex.dropped, ex.up, ex.down,
                         time.perf_counter() - t0)


def _enough(included, need: int, phase: str, ex: _Exchange) -> None:
    if len(included) < need:
        why = "; ".join(f"{ex.name(n)}: {r}" for n, r in sorted(ex.dropped.items()))
        raise RoundFailed(f"{phase} round: {len(included)} bank(s) left, fewer than the "
                          f"{need} required ({why or 'no banks'})")


def session_id(job_id: str, group: str) -> bytes:
    """The SecAgg session of one sum: bound into every key and ciphertext of it."""
    return hashlib.sha256(f"fedjoint-horizontal\n{job_id}\n{group}".encode()).digest()


def secagg_params(n: int, min_banks: int, dim: int, phase: str, clip: float, bits: int,
                  session: bytes, signed: bool = False) -> SecAggParams:
    t = max(min_banks, n // 2 + 1)
    if phase == "counts":
        clip, bits, mod_bits = COUNT_CLIP, COUNT_BITS, COUNT_MOD_BITS
    else:
        mod_bits = min(64, bits + max(1, int(np.ceil(np.log2(n + 1)))) + 1)
    return SecAggParams(num_clients=n, threshold=min(t, n), dim=dim, clip=float(clip),
                        bits=int(bits), mod_bits=mod_bits, session=session, signed=signed)


class SecureSum:
    """One SecAgg round per sum; banks are SecAgg clients 0..n-1 by node order."""

    secure = True

    def __init__(self, job_id: str, min_banks: int, clip: float, bits: int, timeout: float,
                 signed: bool = False):
        self.job_id, self.min_banks, self.clip, self.bits = job_id, min_banks, clip, bits
        self.timeout, self.signed = timeout, signed

    def total(self, grid, nodes: list[int], phase: str, inputs: dict, dim: int,
              group: str, names: dict[int, str], ledgers: dict | None = None) -> SumResult:
        t0 = time.perf_counter()
        ex = _Exchange(grid, self.timeout, group, names, ledgers)
        if len(nodes) < max(2, self.min_banks):
            raise RoundFailed(f"{phase} round: {len(nodes)} bank(s), fewer than the "
                              f"{max(2, self.min_banks)} required")
        cid = {node: i for i, node in enumerate(sorted(nodes))}
        node_of = {i: n for n, i in cid.items()}
        params = secagg_params(len(nodes), self.min_banks, dim, phase, self.clip,
                               self.bits, session_id(self.job_id, group), self.signed)
        server = SecAggServer(params, clients=set(cid.values()))
        head = {"phase": phase, "cid": 0, "n": params.num_clients, "t": params.threshold,
                "dim": dim, "clip": params.clip, "bits": params.bits,
                "mod_bits": params.mod_bits, "session": params.session,
                "signed": self.signed,
                "names": json.dumps([names.get(node_of[i], "") for i in range(len(nodes))])}

        def stage(name: str, per_node: dict[int, dict], receive) -> list[int]:
            replies = ex.ask(STAGE_TYPES[name], per_node)
            for node, rec in sorted(replies.items()):
                try:
                    msg = decode_message(rec.get("msg"))
                    if getattr(msg, "cid", None) != cid[node]:
                        raise SecAggError(f"reply names client {getattr(msg, 'cid', None)}")
                    receive(msg)
                except (SecAggError, TypeError) as exc:
                    ex.dropped[node] = f"{STAGE_TYPES[name]}: {exc}"
            return sorted(n for n in per_node if n not in ex.dropped)

        try:
            alive = stage("advertise", {n: {**head, "cid": cid[n]} for n in nodes},
                          server.receive_advertise)
            keys = encode(server.key_list())
            alive = stage("share_keys", {n: {"msg": keys} for n in alive},
                          server.receive_share_keys)
            bundles = server.share_bundles()
            alive = stage("masked_input",
                          {n: {"msg": encode(bundles[cid[n]]), **inputs}
                           for n in alive if cid[n] in bundles},
                          server.receive_masked_input)
            req = encode(server.unmask_request())
            stage("unmask", {n: {"msg": req} for n in alive}, server.receive_unmask)
            res = server.result()
        except SecAggError as exc:
            why = "; ".join(f"{ex.name(n)}: {r}" for n, r in sorted(ex.dropped.items()))
            raise RoundFailed(f"{phase} round: secure aggregation failed: {exc}"
                              + (f" (dropped: {why})" if why else "")) from None
        included = sorted(node_of[c] for c in res.included)
        _enough(included, self.min_banks, phase, ex)
        for c, st in res.dropped.items():
            ex.dropped.setdefault(node_of[c], f"left the SecAgg round at {st}")
        return SumResult(np.asarray(res.total, dtype=np.float64), included, ex.dropped,
                         ex.up, ex.down, time.perf_counter() - t0)
