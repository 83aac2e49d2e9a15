"""The append-only, thread-safe writer of one party's transcript of one job.

The node creates a :class:`TranscriptWriter` when a job starts and hands it to the
channel as the job's recorder; :func:`exchange_outcome` sends and receives the signed
outcome statements and writes the closing record (or :meth:`TranscriptWriter.abort`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.link import DISCLOSURES, Envelope, Link, decode_payload
from federation.transcript.records import (
    DIRECTIONS,
    FORMAT,
    OUTCOME_KIND,
    VERSION,
    ZERO_HASH,
    RunningRoot,
    TranscriptError,
    canonical,
    check_statement,
    counts_in_roots,
    public_key_bytes,
    record_signing_bytes,
    sha256_hex,
    sidecar_path,
    spec_digest,
    statement_signing_bytes,
)
from federation.transcript.restarts import CHECKPOINT, RESTART, effective
from federation.transcript.retention import parse_keep_received


class TranscriptWriter:
    """Append-only writer of one party's transcript of one job (thread-safe).

    Create it with :meth:`create` before the first message of the job crosses; pass it
    to the channel as the job's MessageRecorder; close it with :func:`exchange_outcome`
    (or :meth:`close_outcome`) or :meth:`abort`.
    """

    def __init__(self, path: Path, *, job_id: str, party: str, peer: str,
                 signing_key: Ed25519PrivateKey, peer_key_hex: str, fsync: bool,
                 resume_at: tuple[int, str] | None = None):
        self.path = path
        self.sidecar_path = sidecar_path(path)
        self.job_id, self.party, self.peer = job_id, party, peer
        self._key = signing_key
        self.own_key_hex = public_key_bytes(signing_key).hex()
        self.peer_key_hex = peer_key_hex
        self._fsync = fsync
        self._lock = threading.Condition()
        # a new transcript starts at record 0; close_interrupted appends to an existing
        # one after its last record (index, hash of that line)
        self._index, self._prev = resume_at or (0, ZERO_HASH)
        self._closed = False
        self._roots = {d: RunningRoot() for d in DIRECTIONS}
        self._outcome_seen = {d: False for d in DIRECTIONS}
        #: disclosed values this party received, per ledger category (its statement
        #: signs them, so the sender cannot under-report what it disclosed)
        self._received_disc: dict[str, int] = {}
        self._fh = _open_private(path, existing=resume_at is not None)
        self._side = _open_private(self.sidecar_path, existing=resume_at is not None)
        self._side_off = self._side.tell() if resume_at is not None else 0
        self.bytes_written = 0
        self.late_messages = 0   # messages handed over after the closing record

    # -- lifecycle ----------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, job_id: str, party: str, peer: str,
               signing_key: Ed25519PrivateKey,
               peer_public_key: Ed25519PublicKey | bytes | str,
               spec: dict | None = None, protocols: dict | None = None,
               key_sizes: dict | None = None, roles: dict | None = None,
               fsync: bool = False, keep_received: str = "full") -> TranscriptWriter:
        """Start ``path`` (must not exist) and write the signed job record.

        ``spec`` is the job spec as a JSON-able dict (stored, and bound by its digest);
        ``protocols`` e.g. ``{"psi": "ecdh-x25519-v1", "secureboost": "1"}``;
        ``key_sizes`` e.g. ``{"paillier": 2048}``; ``roles`` maps the two sender names
        to their roles, e.g. ``{"bank-a": "bank", "platform-b": "platform"}``.
        ``party``/``peer`` are the sender names the channel puts in envelopes.
        ``keep_received`` (:mod:`.retention`): other than ``"full"``, the job record
        says how long the sidecar is kept (``storage.keep``).
        """
        path = Path(path)
        if path.exists():
            raise TranscriptError(f"{path}: transcript already exists (append-only)")
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise TranscriptError("signing_key must be an Ed25519PrivateKey")
        if party == peer:
            raise TranscriptError("party and peer must differ")
        peer_hex = public_key_bytes(peer_public_key).hex()
        w = cls(path, job_id=job_id, party=party, peer=peer, signing_key=signing_key,
                peer_key_hex=peer_hex, fsync=fsync)
        spec = spec if spec is not None else {}
        header = {
            "type": "job", "format": FORMAT, "job_id": job_id, "party": party,
            "peer": peer,
            "keys": {party: w.own_key_hex, peer: peer_hex},
            "fingerprints": {party: sha256_hex(bytes.fromhex(w.own_key_hex)),
                             peer: sha256_hex(bytes.fromhex(peer_hex))},
            "spec": spec, "spec_digest": spec_digest(spec),
            "protocols": protocols or {}, "key_sizes": key_sizes or {},
            "roles": roles or {},
            "storage": {"received": "sidecar", "sidecar": w.sidecar_path.name,
                        "sent": "digest"},
        }
        try:
            parse_keep_received(keep_received)
        except ValueError as exc:
            raise TranscriptError(f"keep_received = {exc}") from None
        if keep_received != "full":
            header["storage"]["keep"] = keep_received
        with w._lock:
            w._append(header)
        return w

    @classmethod
    def reopen(cls, path: str | Path, signing_key: Ed25519PrivateKey, checkpoint: int,
               reason: str, fsync: bool = False) -> TranscriptWriter:
        """Reopen an interrupted job's transcript to resume it from ``checkpoint`` (one
        of its effective checkpoint records): drop a last line cut by a crash, roll the
        running roots and received-disclosure counts back to the checkpoint's messages,
        and append the signed ``restart`` record (:mod:`.restarts`). Raises
        TranscriptError if the transcript is closed or has no such checkpoint."""
        path = Path(path)
        lines = drop_incomplete_tail(path)
        records = [_record_json(line) for line in lines]
        if not records or records[0].get("type") != "job":
            raise TranscriptError(f"{path}: not a transcript")
        if records[-1].get("type") in ("outcome", "abort"):
            raise TranscriptError(f"{path}: the transcript is closed "
                                  f"({records[-1]['type']} record)")
        head = records[0]
        msgs, points = effective(records)
        point = next((p for p in points if p.get("n") == checkpoint), None)
        if point is None:
            raise TranscriptError(f"{path}: no checkpoint {checkpoint} in the transcript")
        peer = str(head.get("peer", ""))
        w = cls(path, job_id=str(head.get("job_id", "")), party=str(head.get("party", "")),
                peer=peer, signing_key=signing_key,
                peer_key_hex=str(head.get("keys", {}).get(peer, "")), fsync=fsync,
                resume_at=(len(lines), sha256_hex(lines[-1])))
        keep = {"sent": point["sent"], "received": point["received"]}
        for d in DIRECTIONS:
            for _, rec in msgs[d][:keep[d]]:
                if not counts_in_roots(rec["kind"]):
                    continue
                w._roots[d].add(Envelope(w.job_id, rec["seq"], rec["sender"], rec["kind"],
                                         rec["ptype"], rec["len"], bytes.fromhex(rec["sha256"]),
                                         bytes.fromhex(rec["sig"])))
                disc = rec.get("disc")
                if d == "received" and isinstance(disc, list) and len(disc) == 2:
                    w._received_disc[disc[0]] = w._received_disc.get(disc[0], 0) + disc[1]
        with w._lock:
            w._append({"type": RESTART, "checkpoint": checkpoint, "sent": keep["sent"],
                       "received": keep["received"], "reason": str(reason)[:500],
                       "file": point.get("file", ""),
                       "discarded": {d: len(msgs[d]) - keep[d] for d in DIRECTIONS}})
        return w

    @property
    def closed(self) -> bool:
        return self._closed

    def checkpoint(self, n: int, stage: str, step: int, sent: int, received: int,
                   file: str) -> None:
        """Record checkpoint ``n`` (:mod:`.restarts`): the pipeline's message counts at
        the end of a tree / epoch and the digest of the checkpoint file written then."""
        with self._lock:
            if not self._closed:
                self._append({"type": CHECKPOINT, "n": int(n), "stage": str(stage),
                              "step": int(step), "sent": int(sent),
                              "received": int(received), "file": str(file)})

    # -- the MessageRecorder hook -------------------------------------------------
    def record(self, direction: str, envelope: Envelope, payload: bytes) -> None:
        """Record one message (called by the channel for every envelope it sends or
        delivers). ``payload`` must be the encoded bytes the envelope describes."""
        if direction not in DIRECTIONS:
            raise TranscriptError(f"direction must be 'sent' or 'received', not {direction!r}")
        expected_sender = self.party if direction == "sent" else self.peer
        if envelope.sender != expected_sender:
            raise TranscriptError(f"{direction} envelope from {envelope.sender!r}, "
                                  f"expected {expected_sender!r}")
        if envelope.job_id != self.job_id:
            raise TranscriptError(f"envelope for job {envelope.job_id!r} handed to the "
                                  f"transcript of job {self.job_id!r}")
        payload = bytes(payload)
        if len(payload) != envelope.length or Envelope.digest(payload) != envelope.sha256:
            raise TranscriptError(f"payload of {envelope.kind} seq {envelope.seq} does not "
                                  "match its envelope (length or digest)")
        rec: dict[str, Any] = {
            "type": "msg", "dir": direction, "seq": envelope.seq,
            "sender": envelope.sender, "kind": envelope.kind, "ptype": envelope.ptype,
            "len": envelope.length, "sha256": envelope.sha256.hex(),
            "sig": envelope.signature.hex(),
        }
        disc = DISCLOSURES.get(envelope.kind)
        if disc is not None:
            try:
                n = int(disc.count(decode_payload(envelope.ptype, payload)))
            except Exception:  # noqa: BLE001 - a bad payload is the protocol's error
                n = 1
            rec["disc"] = [disc.category, n]
        with self._lock:
            if self._closed:
                # e.g. the peer kept sending before it learnt that this side aborted:
                # not part of the closed record, and no reason to fail the channel
                self.late_messages += 1
                return
            if direction == "received":
                rec["at"] = self._side_off
                self._side.write(payload)
                self._side.flush()
                self._side_off += len(payload)
            self._append(rec)
            if counts_in_roots(envelope.kind):
                self._roots[direction].add(envelope)
                if direction == "received" and "disc" in rec:
                    cat, n = rec["disc"]
                    self._received_disc[cat] = self._received_disc.get(cat, 0) + n
            else:
                self._outcome_seen[direction] = True
            self._lock.notify_all()

    # -- closing ------------------------------------------------------------------
    def outcome_statement(self, model_digest: str) -> dict:
        """This party's signed statement: its model-part digest and what it exchanged.

        Deterministic for a given key, model digest and message stream (Ed25519
        signatures are deterministic), so a replayed run reproduces it bit for bit.
        """
        with self._lock:
            stmt = {
                "job_id": self.job_id, "party": self.party, "model_digest": model_digest,
                "sent": {"n": self._roots["sent"].n, "root": self._roots["sent"].root},
                "received": {"n": self._roots["received"].n,
                             "root": self._roots["received"].root},
                "disclosed": dict(sorted(self._received_disc.items())),
            }
        stmt["sig"] = self._key.sign(statement_signing_bytes(stmt)).hex()
        return stmt

    def close_outcome(self, own: dict, peer: dict, wait: float = 30.0) -> None:
        """Write the closing outcome record once both ``job.outcome`` messages have
        been recorded. Raises TranscriptError (and writes an abort record instead) if
        the peer's statement is not valid or disagrees with what was recorded."""
        deadline = time.monotonic() + wait
        with self._lock:
            while not all(self._outcome_seen.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
        problem = check_statement(peer, job_id=self.job_id, party=self.peer,
                                  key_hex=self.peer_key_hex)
        if problem is None:
            mine = {d: (self._roots[d].n, self._roots[d].root) for d in DIRECTIONS}
            theirs = {d: (peer[d]["n"], peer[d]["root"]) for d in DIRECTIONS}
            if theirs["sent"] != mine["received"] or theirs["received"] != mine["sent"]:
                problem = ("the peer's outcome statement disagrees with this transcript "
                           f"(peer sent {theirs['sent'][0]}, received {theirs['received'][0]}; "
                           f"we received {mine['received'][0]}, sent {mine['sent'][0]})")
        if problem is None and not all(self._outcome_seen.values()):
            problem = "job.outcome messages were not both recorded by the channel"
        if problem is not None:
            self.abort(f"outcome rejected: {problem}")
            raise TranscriptError(f"job {self.job_id}: {problem}")
        with self._lock:
            self._append({"type": "outcome", "statements": {self.party: own, self.peer: peer}})
            self._finish()

    def abort(self, reason: str) -> None:
        """Close a failed or cancelled job's transcript (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._append({"type": "abort", "reason": str(reason)[:500]})
            self._finish()

    def suspend(self) -> None:
        """Close the files without a closing record: the job was interrupted and may
        resume (:meth:`reopen`), or be closed later by ``close_interrupted``."""
        with self._lock:
            if not self._closed:
                self._finish()

    # -- internals ----------------------------------------------------------------
    def _append(self, body: dict) -> None:
        rec = {"v": VERSION, "i": self._index, "prev": self._prev,
               "t": round(time.time(), 6), **body}
        rec["rsig"] = self._key.sign(record_signing_bytes(rec)).hex()
        line = canonical(rec)
        self._fh.write(line + b"\n")
        self._fh.flush()
        self.bytes_written += len(line) + 1
        self._prev = sha256_hex(line)
        self._index += 1

    def _finish(self) -> None:
        self._closed = True
        if self._fsync:
            os.fsync(self._fh.fileno())
            os.fsync(self._side.fileno())
        self._fh.close()
        self._side.close()
        self._lock.notify_all()


def drop_incomplete_tail(path: Path) -> list[bytes]:
    """The transcript's complete lines; an incomplete last line (cut by a crash while it
    was written) is truncated away."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()
    if tail:
        with open(path, "r+b") as fh:
            fh.truncate(len(data) - len(tail))
    return lines


def _record_json(line: bytes) -> dict:
    import json
    try:
        rec = json.loads(line)
    except ValueError:
        raise TranscriptError("a transcript record is not JSON") from None
    if not isinstance(rec, dict):
        raise TranscriptError("a transcript record is not a JSON object")
    return rec


def close_interrupted(path: str | Path, signing_key: Ed25519PrivateKey, reason: str) -> bool:
    """Close the transcript of a job that was interrupted (the node was killed or
    restarted while it ran) with a signed ``abort`` record, so it verifies as failed,
    not incomplete. An incomplete last line (cut by the crash) is dropped first, and the
    reason says so. Returns False if there is nothing to close (no file, no record, or
    already closed)."""
    import json
    path = Path(path)
    if not path.exists():
        return False
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()                     # b"" when the file ends with a newline
    if not lines:
        return False
    try:
        last = json.loads(lines[-1])
    except ValueError:
        return False
    if not isinstance(last, dict) or last.get("type") in ("outcome", "abort"):
        return False
    if tail:
        reason += f" (an incomplete last record of {len(tail)} bytes was dropped)"
        with open(path, "r+b") as fh:
            fh.truncate(len(data) - len(tail))
    head = json.loads(lines[0]) if lines[0] else {}
    w = TranscriptWriter(path, job_id=str(head.get("job_id", "")),
                         party=str(head.get("party", "")), peer=str(head.get("peer", "")),
                         signing_key=signing_key, peer_key_hex="", fsync=True,
                         resume_at=(len(lines), sha256_hex(lines[-1])))
    w.abort(reason)
    return True


def _open_private(path: Path, existing: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if existing else os.O_CREAT | os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, "ab")


def exchange_outcome(link: Link, writer: TranscriptWriter | None, model_digest: str,
                     *, signing_key: Ed25519PrivateKey | None = None,
                     timeout: float | None = 120.0) -> dict:
    """Send this party's signed outcome statement as ``job.outcome``, receive the
    peer's, and close ``writer`` with the outcome record. Returns the peer's statement.

    Call after the pipeline (``run_job_side``) has returned, with the digest of this
    party's model part. Both parties call it; each sends first, then receives.
    """
    if writer is None:
        raise TranscriptError("exchange_outcome needs the job's TranscriptWriter")
    own = writer.outcome_statement(model_digest)
    link.send(OUTCOME_KIND, own)
    peer = link.recv_json(OUTCOME_KIND, timeout)
    writer.close_outcome(own, peer)
    return peer
