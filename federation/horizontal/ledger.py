"""Signed transcripts of horizontal jobs: one pair per (job, bank), the fedjoint format.

Each bank keeps the transcript of its side (``party`` = the bank, ``peer`` = the
aggregator); the aggregator keeps one per bank (``party`` = the platform). Every
Flower message between them is one transcript message: ``kind`` is the Flower message
type (``<type>.reply`` for the bank's answer; the closing exchange is
``job.outcome``), the payload is :func:`parties.horizontal.wire.canonical` of the
record (so a masked update's digest is what the bank signs), and the sender's
Ed25519 envelope signature and sequence number travel beside it in ``env_sig`` /
``env_seq``. A receiver whose copy does not verify against the sender's key refuses
the message. The closing ``job.outcome`` exchange carries both signed statements, so
``fedjoint audit verify BANK_T --peer AGGREGATOR_T`` checks the pair like a vertical
job's.

Flower runs each bank message in a new process, so :func:`open_appending` reopens the
transcript after its last record, re-deriving the running roots from the records.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.link import Envelope
from federation.transcript.records import OUTCOME_KIND, TranscriptError, sha256_hex
from federation.transcript.writer import TranscriptWriter, drop_incomplete_tail

JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}\Z")


def job_dir(data_dir: Path, job_id: str) -> Path:
    """``data_dir/horizontal/<job_id>``: a job's transcripts, result and report."""
    if not JOB_ID_RE.match(job_id):
        raise ValueError(f"job id {job_id!r} is not a valid job id")
    return Path(data_dir) / "horizontal" / job_id


def _ptype(kind: str) -> str:
    """The statement of the closing exchange is JSON; every other payload bytes."""
    return "json" if kind == OUTCOME_KIND else "bin"


def open_appending(path: Path, *, job_id: str, party: str, peer: str,
                   key: Ed25519PrivateKey, peer_key_hex: str, spec: dict,
                   roles: dict) -> TranscriptWriter:
    """A writer positioned after the last record of ``path`` (created if missing)."""
    if not path.exists():
        return TranscriptWriter.create(path, job_id=job_id, party=party, peer=peer,
                                       signing_key=key, peer_public_key=peer_key_hex,
                                       spec=spec, protocols={"horizontal": "1"},
                                       roles=roles)
    lines = drop_incomplete_tail(path)
    if not lines:
        raise TranscriptError(f"{path}: empty transcript")
    w = TranscriptWriter(path, job_id=job_id, party=party, peer=peer, signing_key=key,
                         peer_key_hex=peer_key_hex, fsync=False,
                         resume_at=(len(lines), sha256_hex(lines[-1])))
    for line in lines[1:]:
        r = json.loads(line)
        if r.get("type") in ("outcome", "abort"):
            w._closed = True
        if r.get("type") != "msg":
            continue
        env = Envelope(job_id, r["seq"], r["sender"], r["kind"], r["ptype"], r["len"],
                       bytes.fromhex(r["sha256"]), bytes.fromhex(r["sig"]))
        if r["kind"] == OUTCOME_KIND:
            w._outcome_seen[r["dir"]] = True
        else:
            w._roots[r["dir"]].add(env)
    return w


class TranscriptLedger:
    """The :class:`parties.horizontal.bank.NoLedger` interface over a transcript."""

    def __init__(self, writer: TranscriptWriter, key: Ed25519PrivateKey, peer_key):
        self.w, self.key, self.peer_key = writer, key, peer_key

    def _seq(self, direction: str) -> int:
        return self.w._roots[direction].n + int(self.w._outcome_seen[direction]) + 1

    def sent(self, kind: str, payload: bytes) -> dict:
        kind = OUTCOME_KIND if kind.startswith("query.close") else kind
        env = Envelope(self.w.job_id, self._seq("sent"), self.w.party, kind, _ptype(kind),
                       len(payload), Envelope.digest(payload))
        env = dataclasses.replace(env, signature=self.key.sign(env.signing_bytes()))
        self.w.record("sent", env, payload)
        return {"env_seq": env.seq, "env_sig": env.signature}

    def received(self, kind: str, payload: bytes, env_fields: dict) -> None:
        kind = OUTCOME_KIND if kind.startswith("query.close") else kind
        seq, sig = env_fields.get("env_seq"), env_fields.get("env_sig")
        if not isinstance(seq, int) or not isinstance(sig, bytes):
            raise ValueError(f"{kind}: the message carries no envelope signature")
        env = Envelope(self.w.job_id, seq, self.w.peer, kind, _ptype(kind), len(payload),
                       Envelope.digest(payload), sig)
        if seq != self._seq("received"):
            raise ValueError(f"{kind}: envelope seq {seq}, expected {self._seq('received')}")
        try:
            self.peer_key.verify(sig, env.signing_bytes())
        except Exception:  # noqa: BLE001 - cryptography's InvalidSignature
            raise ValueError(f"{kind}: {self.w.peer}'s envelope signature does not "
                             "verify") from None
        self.w.record("received", env, payload)

    def statement(self, model_digest: str) -> dict:
        return self.w.outcome_statement(model_digest)

    def close(self, own: dict, peer: dict) -> None:
        self.w.close_outcome(own, peer, wait=1.0)

    def abort(self, reason: str) -> None:
        self.w.abort(reason)


def aggregator_ledger(platform, spec, bank: str, bank_pub) -> TranscriptLedger:
    """The aggregator's transcript with ``bank`` (``platform``: its NodeConfig)."""
    from federation.keys import load_signing_key, signing_pub_hex

    key = load_signing_key(platform.keys.signing_key)
    spec_d = {"job_id": spec.job_id, "algorithm": spec.algorithm, "columns": spec.columns,
              "params": spec.params.to_wire()}
    path = job_dir(platform.data_dir, spec.job_id) / f"{bank}.transcript.jsonl"
    # one ServerApp process writes it from start to end: a new file (a reused job id
    # is refused: append-only)
    w = TranscriptWriter.create(path, job_id=spec.job_id, party=platform.name, peer=bank,
                                signing_key=key, peer_public_key=signing_pub_hex(bank_pub),
                                spec=spec_d, protocols={"horizontal": "1"},
                                roles={platform.name: "platform", bank: "bank"})
    return TranscriptLedger(w, key, bank_pub)


def aggregator_ledgers(platform, spec, bank_cfgs: dict) -> dict:
    """In process: node id -> ledger, each bank's public key from its own config."""
    from federation.keys import load_signing_key

    return {node: aggregator_ledger(platform, spec, cfg.name,
                                    load_signing_key(cfg.keys.signing_key).public_key())
            for node, cfg in bank_cfgs.items()}
