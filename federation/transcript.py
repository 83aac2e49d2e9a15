"""Signed, hash-chained transcripts: the evidence of what crossed in one job.

Each node writes one transcript per job. The node creates a :class:`TranscriptWriter`
when the job starts, hands it to the channel as the job's
:class:`federation.link.MessageRecorder` (the channel calls
:meth:`TranscriptWriter.record` for every envelope sent or received), and when the
job's pipeline has produced its model part it calls :func:`exchange_outcome`, which
sends this party's signed outcome statement to the peer as message kind
``job.outcome``, receives the peer's, checks it and writes the closing record. A job
that fails is closed with :meth:`TranscriptWriter.abort`.

Format (``fedjoint-transcript``, version 1) -- see docs/audit.md for the auditor's view:

* One JSON object per line, canonical JSON (sorted keys, ``(",", ":")`` separators,
  UTF-8, no NaN), each line ending in ``\\n``. A line that does not re-serialise to
  exactly its own bytes is a modified record.
* Every record has ``v`` (format version, 1), ``i`` (record index from 0), ``type``,
  ``t`` (Unix time, seconds), ``prev`` (hex SHA-256 of the previous line's bytes
  without its newline; 64 zeros for record 0): the hash chain, and ``rsig``: the
  writer's Ed25519 signature over the record without ``rsig``
  (:func:`record_signing_bytes`). Because each record signs ``prev``, a changed,
  removed, inserted or reordered record is pinpointed even if someone rewrites the
  chain after it.
* Record 0, ``type = "job"``, binds the job: ``format``, ``job_id``, ``party`` (the
  writer), ``peer``, ``keys`` (both parties' raw Ed25519 public keys, hex),
  ``fingerprints`` (their SHA-256, hex), ``spec_digest`` and ``spec`` (the canonical job
  spec), ``protocols`` (protocol versions), ``key_sizes``, ``roles`` (sender name ->
  bank/platform), ``storage`` (how received
  payloads are kept).
* ``type = "msg"``: one message. ``dir`` (``sent``/``received``), ``seq``, ``sender``,
  ``kind``, ``ptype``, ``len``, ``sha256`` -- the envelope fields -- and ``sig``, the
  *sender's* Ed25519 signature over :meth:`Envelope.signing_bytes` (the job id comes
  from record 0). Received payloads also carry ``at``: the byte offset of the payload
  in the sidecar file (below). Disclosure-ledger kinds carry ``disc = [category, n]``.
* The last record closes the transcript; its ``prev`` is the head of the chain, so
  its signature covers every byte before it:

  - ``type = "outcome"``: ``statements``, both parties' outcome statements (job id,
    party, model-part digest, and for each direction the number of messages and a
    running digest ``root`` of their envelopes), each signed by its owner;
  - ``type = "abort"``: ``reason`` (the job failed or was cancelled).

Payload storage: the transcript holds digests only, so it can be handed to an auditor
or to the peer without carrying any data. Every payload this party *received* is
appended to a private sidecar ``<transcript>.recv`` (mode 0600, in the party's own data
directory): replay feeds these bytes back to the pipeline, checked against the signed
digests. Nothing of what this party *sent* is kept beyond its digest: replay re-derives
it from the party's data, keys and per-job seed and compares digests.

Disclosure ledger: protocol modules declare which message kinds carry values that
cross in the clear or under the receiver's own key, with :func:`declare_disclosures`::

    declare_disclosures({"sb.partition": ("partition", lambda p: int(p.size))})

The writer counts these values as the messages cross (``disc`` in the record); the
auditor sums them per category and receiver.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from federation.link import (
    DISCLOSURES,
    Envelope,
    Link,
    Payload,
    PeerGone,
    ProtocolError,
    check_kind,
    declare_disclosures,
    decode_payload,
    encode_payload,
)

FORMAT = "fedjoint-transcript"
VERSION = 1
ZERO_HASH = "0" * 64
RECORD_DOMAIN = b"fedjoint-transcript-v1\n"
STATEMENT_DOMAIN = b"fedjoint-outcome-v1\n"
OUTCOME_KIND = "job.outcome"
#: Message kinds exchanged by the node around the per-party pipeline (the outcome
#: statements). They are recorded and verified like any other message, but replay does
#: not feed or expect them: everything else in the transcript is the pipeline's.
NOT_REPLAYED = frozenset({OUTCOME_KIND})
SIDECAR_SUFFIX = ".recv"
DIRECTIONS = ("sent", "received")


class TranscriptError(Exception):
    """A transcript could not be written or read as asked."""


# --------------------------------------------------------------------------- helpers


def canonical(obj: Any) -> bytes:
    """The one JSON serialisation used for records, statements and specs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_digest(spec: dict) -> str:
    """Digest of a job spec given as a JSON-able dict (canonical JSON)."""
    return sha256_hex(canonical(spec))


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str) -> bytes:
    """Raw 32-byte Ed25519 public key from a key object, raw bytes or hex."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            raise TranscriptError("public key must be 64 hex characters") from None
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise TranscriptError("an Ed25519 public key must be 32 raw bytes")


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str) -> str:
    """SHA-256 (hex) of the raw Ed25519 public key."""
    return sha256_hex(public_key_bytes(key))


def verify_sig(public_hex: str, sig_hex: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(sig_hex), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def record_signing_bytes(record: dict) -> bytes:
    """What the writer signs for every record: all its fields but ``rsig``."""
    return RECORD_DOMAIN + canonical({k: v for k, v in record.items() if k != "rsig"})


def statement_signing_bytes(stmt: dict) -> bytes:
    return STATEMENT_DOMAIN + canonical({k: v for k, v in stmt.items() if k != "sig"})


def envelope_leaf(env: Envelope) -> bytes:
    return hashlib.sha256(env.signing_bytes() + env.signature).digest()


class RunningRoot:
    """Running digest over the envelopes of one direction: r_k = H(r_{k-1} || leaf_k)."""

    def __init__(self) -> None:
        self.n = 0
        self._h = bytes(32)

    def add(self, env: Envelope) -> None:
        self._h = hashlib.sha256(self._h + envelope_leaf(env)).digest()
        self.n += 1

    @property
    def root(self) -> str:
        return self._h.hex()


def counts_in_roots(kind: str) -> bool:
    """Outcome messages are exchanged after the statements are made: not in the roots."""
    return kind != OUTCOME_KIND


declare_disclosures({"job.outcome": ("model-part digest", lambda p: 1)})


# ----------------------------------------------------------------------------- writer


class TranscriptWriter:
    """Append-only writer of one party's transcript of one job (thread-safe).

    Create it with :meth:`create` before the first message of the job crosses; pass it
    to the channel as the job's MessageRecorder; close it with :func:`exchange_outcome`
    (or :meth:`close_outcome`) or :meth:`abort`.
    """

    def __init__(self, path: Path, *, job_id: str, party: str, peer: str,
                 signing_key: Ed25519PrivateKey, peer_key_hex: str, fsync: bool):
        self.path = path
        self.sidecar_path = sidecar_path(path)
        self.job_id, self.party, self.peer = job_id, party, peer
        self._key = signing_key
        self.own_key_hex = public_key_bytes(signing_key).hex()
        self.peer_key_hex = peer_key_hex
        self._fsync = fsync
        self._lock = threading.Condition()
        self._index = 0
        self._prev = ZERO_HASH
        self._closed = False
        self._roots = {d: RunningRoot() for d in DIRECTIONS}
        self._outcome_seen = {d: False for d in DIRECTIONS}
        self._fh = _open_private(path)
        self._side = _open_private(self.sidecar_path)
        self._side_off = 0
        self.bytes_written = 0
        self.late_messages = 0   # messages handed over after the closing record

    # -- lifecycle ----------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, job_id: str, party: str, peer: str,
               signing_key: Ed25519PrivateKey,
               peer_public_key: Ed25519PublicKey | bytes | str,
               spec: dict | None = None, protocols: dict | None = None,
               key_sizes: dict | None = None, roles: dict | None = None,
               fsync: bool = False) -> TranscriptWriter:
        """Start ``path`` (must not exist) and write the signed job record.

        ``spec`` is the job spec as a JSON-able dict (stored, and bound by its digest);
        ``protocols`` e.g. ``{"psi": "ecdh-x25519-v1", "secureboost": "1"}``;
        ``key_sizes`` e.g. ``{"paillier": 2048}``; ``roles`` maps the two sender names
        to their roles, e.g. ``{"bank-a": "bank", "platform-b": "platform"}``.
        ``party``/``peer`` are the sender names the channel puts in envelopes.
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
        with w._lock:
            w._append(header)
        return w

    @property
    def closed(self) -> bool:
        return self._closed

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


def sidecar_path(transcript: str | Path) -> Path:
    transcript = Path(transcript)
    return transcript.with_name(transcript.name + SIDECAR_SUFFIX)


def _open_private(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    return os.fdopen(fd, "ab")


def check_statement(stmt: Any, *, job_id: str, party: str, key_hex: str) -> str | None:
    """None if ``stmt`` is a well-formed outcome statement of ``party`` for ``job_id``
    signed by ``key_hex``; otherwise what is wrong."""
    if not isinstance(stmt, dict):
        return "outcome statement is not an object"
    try:
        ok_shape = (set(stmt) == {"job_id", "party", "model_digest", "sent", "received", "sig"}
                    and all(isinstance(stmt[d], dict) and set(stmt[d]) == {"n", "root"}
                            and isinstance(stmt[d]["n"], int) and isinstance(stmt[d]["root"], str)
                            for d in DIRECTIONS)
                    and isinstance(stmt["model_digest"], str) and isinstance(stmt["sig"], str))
    except TypeError:
        ok_shape = False
    if not ok_shape:
        return "outcome statement is malformed"
    if stmt["job_id"] != job_id:
        return f"outcome statement is for job {stmt['job_id']!r}, not {job_id!r}"
    if stmt["party"] != party:
        return f"outcome statement is from {stmt['party']!r}, expected {party!r}"
    if not verify_sig(key_hex, stmt["sig"], statement_signing_bytes(stmt)):
        return f"{party}'s signature on its outcome statement does not verify"
    return None


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


# ----------------------------------------------------------------------------- reader


@dataclass
class Transcript:
    """A parsed transcript (structure only; :mod:`federation.audit` verifies it)."""

    path: Path
    lines: list[bytes]
    records: list[dict]

    @property
    def header(self) -> dict:
        return self.records[0]

    @property
    def job_id(self) -> str:
        return self.header["job_id"]

    @property
    def party(self) -> str:
        return self.header["party"]

    @property
    def peer(self) -> str:
        return self.header["peer"]

    def messages(self, direction: str | None = None) -> list[dict]:
        return [r for r in self.records if r.get("type") == "msg"
                and (direction is None or r.get("dir") == direction)]

    @property
    def closing(self) -> dict | None:
        last = self.records[-1]
        return last if last.get("type") in ("outcome", "abort") else None


class TranscriptUnreadable(TranscriptError):
    """The file cannot be read as a transcript at all (exit code 2)."""


class RecordMalformed(TranscriptError):
    """A line in the middle of the file is not a canonical record (exit code 1)."""

    def __init__(self, index: int, msg: str):
        super().__init__(f"record {index}: {msg}")
        self.index = index


def load(path: str | Path) -> Transcript:
    """Parse a transcript. Raises TranscriptUnreadable (missing, empty, truncated, not
    a transcript, unknown version) or RecordMalformed (a line was modified)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TranscriptUnreadable(f"{path}: cannot read transcript ({exc.strerror})") from None
    if not raw:
        raise TranscriptUnreadable(f"{path}: empty file, not a transcript")
    parts = raw.split(b"\n")
    tail = parts.pop()
    records: list[dict] = []
    for i, line in enumerate(parts):
        rec = _parse_line(path, i, line)
        if i == 0:
            _check_header_format(path, rec)
        records.append(rec)
    if tail:
        # the last line has no newline: the file was cut while being written (or the
        # final byte changed). Say which record is incomplete.
        raise TranscriptUnreadable(
            f"{path}: truncated: record {len(parts)} is incomplete (no end of line); "
            f"{len(parts)} complete record(s) before it")
    return Transcript(path, parts, records)


def _parse_line(path: Path, i: int, line: bytes) -> dict:
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if i == 0:
            raise TranscriptUnreadable(f"{path}: record 0 is not JSON: not a fedjoint "
                                       "transcript, or its first line is damaged") from None
        raise RecordMalformed(i, f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(rec, dict):
        raise RecordMalformed(i, "not a JSON object")
    try:
        again = canonical(rec)
    except ValueError:
        again = b""
    if again != line:
        raise RecordMalformed(i, "not in canonical form (the line was modified)")
    return rec


def _check_header_format(path: Path, rec: dict) -> None:
    if rec.get("format") != FORMAT or rec.get("type") != "job":
        raise TranscriptUnreadable(f"{path}: not a fedjoint transcript (record 0 has no "
                                   f"format {FORMAT!r})")
    if rec.get("v") != VERSION:
        raise TranscriptUnreadable(f"{path}: transcript format version {rec.get('v')!r} is "
                                   f"not supported (this fedjoint reads version {VERSION})")


class SidecarReader:
    """Reads received payloads back from a transcript's sidecar, checking digests."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise TranscriptUnreadable(
                f"{self.path}: received-payload sidecar not readable ({exc.strerror}); "
                "replay needs it next to the transcript") from None

    def read(self, rec: dict) -> bytes | None:
        """The payload of a received message record, or None if it is missing or does
        not match the recorded digest."""
        at, n = rec.get("at"), rec.get("len")
        if not isinstance(at, int) or not isinstance(n, int) or at < 0 or n < 0:
            return None
        self._fh.seek(at)
        data = self._fh.read(n)
        if len(data) != n or sha256_hex(data) != rec.get("sha256"):
            return None
        return data

    def close(self) -> None:
        self._fh.close()


# ------------------------------------------------------- a signed, recorded local link


class RecordedLocalLink(Link):
    """One end of an in-memory link that behaves like the channel towards the
    transcript: it signs each envelope with the sender's Ed25519 key, checks the
    signature on receipt and hands every message to ``recorder``. For tests and for
    running both parties in one process; production traffic uses federation.channel."""

    def __init__(self, job_id: str, party: str, peer: str, signing_key: Ed25519PrivateKey,
                 peer_key: Ed25519PublicKey, inbox, outbox):
        self.job_id, self.party, self.peer = job_id, party, peer
        self._key, self._peer_key = signing_key, peer_key
        self._inbox, self._outbox = inbox, outbox
        self._seq = 0
        self.recorder: Any = None
        self.bytes_sent = 0

    def send(self, kind: str, payload: Payload) -> None:
        ptype, data = encode_payload(payload)
        self._seq += 1
        env = Envelope(self.job_id, self._seq, self.party, check_kind(kind), ptype,
                       len(data), Envelope.digest(data))
        env = Envelope(**{**env.__dict__, "signature": self._key.sign(env.signing_bytes())})
        if self.recorder is not None:
            self.recorder.record("sent", env, data)
        self.bytes_sent += len(data) + len(env.signing_bytes()) + len(env.signature)
        self._outbox.put((env, data))

    def recv(self, kind: str, timeout: float | None = 60.0) -> Payload:
        try:
            env, data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PeerGone(f"no message {kind!r} from {self.peer} within {timeout}s") from None
        try:
            self._peer_key.verify(env.signature, env.signing_bytes())
        except InvalidSignature:
            raise ProtocolError(f"bad signature on {env.kind} seq {env.seq}") from None
        if self.recorder is not None:
            self.recorder.record("received", env, data)
        if env.kind != kind:
            raise ProtocolError(f"expected message {kind!r} from {self.peer}, got {env.kind!r}")
        return decode_payload(env.ptype, data)


def recorded_local_link_pair(job_id: str, a: str, key_a: Ed25519PrivateKey, b: str,
                             key_b: Ed25519PrivateKey
                             ) -> tuple[RecordedLocalLink, RecordedLocalLink]:
    """Two connected :class:`RecordedLocalLink` ends; set ``.recorder`` on each."""
    q_ab: queue.Queue = queue.Queue()
    q_ba: queue.Queue = queue.Queue()
    return (RecordedLocalLink(job_id, a, b, key_a, key_b.public_key(), q_ba, q_ab),
            RecordedLocalLink(job_id, b, a, key_b, key_a.public_key(), q_ab, q_ba))
