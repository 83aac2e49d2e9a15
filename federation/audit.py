"""Verify and replay job transcripts (the auditor's tools).

* :func:`verify` checks one transcript (and optionally the peer's): the hash chain,
  every signature against the pinned keys, sequence completeness per direction, the
  closing record and both parties' signed outcome statements, and -- given both
  transcripts -- that they agree on every message in both directions. The first bad
  record is named (``bank.jsonl record 17``).
* :func:`replay` re-runs one party's side of the job with that party's own data, keys
  and per-job seed, feeding it the recorded incoming messages through a
  :class:`ReplayLink`, checking every message it sends against the recorded digest and
  its final model part against the signed digest.
* :func:`show` renders the timeline (rich table) or returns it as JSON.

Exit codes of the ``fedjoint audit`` commands: **0** verified (or replay matched),
**1** verification failed (the report names the first bad record), **2** could not run
(file missing, empty or truncated, unknown format version, missing keys, seed or
sidecar). See docs/audit.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.link import Envelope, Link, Payload, decode_payload, encode_payload
from federation.transcript import (
    DIRECTIONS,
    NOT_REPLAYED,
    OUTCOME_KIND,
    VERSION,
    ZERO_HASH,
    RecordMalformed,
    RunningRoot,
    SidecarReader,
    Transcript,
    TranscriptError,
    TranscriptUnreadable,
    check_statement,
    counts_in_roots,
    fingerprint,
    load,
    public_key_bytes,
    record_signing_bytes,
    sha256_hex,
    sidecar_path,
    spec_digest,
    verify_sig,
)

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
MAX_ERRORS = 20
HEX64 = frozenset("0123456789abcdef")


class CannotRun(Exception):
    """The audit could not run (exit code 2): missing file, key, seed, sidecar..."""


@dataclass
class Finding:
    """One problem, tied to a transcript file and (when known) a record index."""

    where: str              # transcript file name (or "party dir", "pipeline")
    record: int | None
    message: str

    def __str__(self) -> str:
        at = f"{self.where} record {self.record}" if self.record is not None else self.where
        return f"{at}: {self.message}"


# ------------------------------------------------------------------------------ verify


@dataclass
class VerifyReport:
    ok: bool
    exit_code: int
    errors: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)      # of the first transcript
    peer_summary: dict | None = None

    @property
    def first_bad(self) -> Finding | None:
        return self.errors[0] if self.errors else None

    @property
    def verified(self) -> bool:
        return self.ok

    @property
    def detail(self) -> str:
        """One line: the first bad record, or what was verified."""
        if self.errors:
            return str(self.errors[0])
        s = self.summary
        return (f"verified: {s.get('records', 0)} records, {s['messages']['sent']} sent / "
                f"{s['messages']['received']} received messages, status {s.get('status')}"
                if s else "verified")

    @property
    def ledger(self) -> list[dict]:
        """The disclosure ledger: [{category, to, kinds, messages, values}]."""
        return list(self.summary.get("ledger", []))

    def to_json(self) -> dict:
        return {"ok": self.ok, "exit_code": self.exit_code, "detail": self.detail,
                "errors": [{"where": e.where, "record": e.record, "message": e.message}
                           for e in self.errors],
                "warnings": self.warnings, "summary": self.summary,
                "peer_summary": self.peer_summary}


def _is_hex(s: Any, n: int | None = None) -> bool:
    return (isinstance(s, str) and (n is None or len(s) == n) and len(s) % 2 == 0
            and set(s) <= HEX64)


def normalise_pins(pinned_keys: dict | None) -> dict[str, str]:
    """name -> pinned value (lowercase hex: raw public key or its SHA-256 fingerprint;
    ``sha256:`` prefixes are accepted)."""
    out: dict[str, str] = {}
    for name, key in (pinned_keys or {}).items():
        if isinstance(key, str):
            v = key.strip().lower().removeprefix("sha256:").replace(":", "")
            if not _is_hex(v, 64):
                raise CannotRun(f"pinned key for {name!r} is not 64 hex digits "
                                "(an Ed25519 public key or its SHA-256 fingerprint)")
            out[name] = v
        else:
            out[name] = public_key_bytes(key).hex()
    return out


def _pin_matches(pin: str, key_hex: str) -> bool:
    return pin == key_hex or pin == fingerprint(key_hex)


class _Checker:
    """Checks one parsed transcript; collects findings and a summary."""

    def __init__(self, t: Transcript, pins: dict[str, str]):
        self.t, self.pins = t, pins
        self.where = t.path.name
        self.errors: list[Finding] = []
        self.warnings: list[str] = []
        self.msgs: dict[str, list[tuple[int, dict]]] = {d: [] for d in DIRECTIONS}

    def err(self, record: int | None, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(Finding(self.where, record, msg))

    def run(self) -> dict:
        t = self.t
        h = t.header
        keys = h.get("keys")
        job_id, party, peer = h.get("job_id"), h.get("party"), h.get("peer")
        if not (isinstance(job_id, str) and isinstance(party, str) and isinstance(peer, str)
                and isinstance(keys, dict) and set(keys) == {party, peer}
                and all(_is_hex(v, 64) for v in keys.values())):
            self.err(0, "job record lacks job_id, party, peer or both parties' public keys")
            return {}
        self.keys = keys
        fps = h.get("fingerprints")
        if fps != {n: fingerprint(k) for n, k in keys.items()}:
            self.err(0, "key fingerprints do not match the public keys")
        if h.get("spec_digest") != spec_digest(h.get("spec")):
            self.err(0, "spec_digest does not match the recorded job spec")
        # pinned keys
        for name, pin in self.pins.items():
            if name not in keys:
                self.err(0, f"a key is pinned for {name!r} but the transcript is between "
                            f"{party!r} and {peer!r}")
            elif not _pin_matches(pin, keys[name]):
                self.err(0, f"{name}'s signing key {fingerprint(keys[name])[:16]}... is not "
                            f"the pinned key")
        unpinned = sorted(set(keys) - set(self.pins))
        if unpinned:
            self.warnings.append(
                f"{self.where}: no pinned key for {', '.join(unpinned)}: signatures were "
                "checked against the keys in record 0 only (pin them with --pin or --config)")
        # the chain, record by record
        prev = ZERO_HASH
        roots = {d: RunningRoot() for d in DIRECTIONS}
        last_seq: dict[str, int | None] = {d: None for d in DIRECTIONS}
        outcome_msgs: dict[str, dict] = {}
        n = len(t.records)
        for i, (line, rec) in enumerate(zip(t.lines, t.records, strict=True)):
            if rec.get("v") != VERSION:
                self.err(i, f"format version {rec.get('v')!r} differs from record 0")
            if rec.get("i") != i:
                self.err(i, f"record index {rec.get('i')!r} found at position {i} "
                            "(records deleted, inserted or reordered)")
            if rec.get("prev") != prev:
                self.err(i, "hash chain broken: prev does not match the hash of record "
                            f"{i - 1} (a record before it was changed, removed or reordered)"
                         if i else "hash chain broken: record 0 must have a zero prev")
            prev = sha256_hex(line)
            self._check_signed(i, rec, party)
            typ = rec.get("type")
            if i == 0:
                continue
            if typ == "msg":
                self._check_msg(i, rec, job_id, party, peer, roots, last_seq, outcome_msgs)
            elif typ in ("outcome", "abort"):
                if i != n - 1:
                    self.err(i, f"{typ} record is not the last record")
            else:
                self.err(i, f"unknown record type {typ!r}")
        closing = t.records[-1] if n > 1 else None
        status = "incomplete"
        outcome: dict = {}
        if closing is None or closing.get("type") not in ("outcome", "abort"):
            self.err(n - 1, "the last record is not a closing (outcome/abort) record: the "
                            "transcript is incomplete (job still running, or records removed)")
        elif closing["type"] == "abort":
            status = "aborted"
        else:
            status = "done"
            outcome = self._check_outcome(n - 1, closing, job_id, party, peer, roots,
                                          outcome_msgs)
        return self._summary(status, outcome, closing)

    def _check_signed(self, i: int, rec: dict, signer: str) -> None:
        sig = rec.get("rsig")
        if not _is_hex(sig, 128) or not verify_sig(self.keys[signer], sig,
                                                   record_signing_bytes(rec)):
            self.err(i, f"{signer}'s record signature does not verify (the record was "
                        "changed, or moved with the chain rewritten)")

    def _check_msg(self, i, rec, job_id, party, peer, roots, last_seq, outcome_msgs):
        d = rec.get("dir")
        if d not in DIRECTIONS:
            self.err(i, f"message direction {d!r} is neither sent nor received")
            return
        sender = party if d == "sent" else peer
        fields_ok = (rec.get("sender") == sender and isinstance(rec.get("seq"), int)
                     and isinstance(rec.get("kind"), str) and isinstance(rec.get("ptype"), str)
                     and isinstance(rec.get("len"), int) and rec["len"] >= 0
                     and _is_hex(rec.get("sha256"), 64) and _is_hex(rec.get("sig"), 128))
        if not fields_ok:
            self.err(i, f"{d} message record is malformed (sender must be {sender!r})")
            return
        env = Envelope(job_id, rec["seq"], sender, rec["kind"], rec["ptype"], rec["len"],
                       bytes.fromhex(rec["sha256"]), bytes.fromhex(rec["sig"]))
        if not verify_sig(self.keys[sender], rec["sig"], env.signing_bytes()):
            self.err(i, f"{d} {rec['kind']} seq {rec['seq']}: {sender}'s envelope signature "
                        f"does not verify for job {job_id}")
        prev_seq = last_seq[d]
        if prev_seq is None:
            if rec["seq"] not in (0, 1):
                self.err(i, f"first {d} message has seq {rec['seq']} (messages before it "
                            "are missing)")
        elif rec["seq"] != prev_seq + 1:
            self.err(i, f"{d} seq {rec['seq']} follows seq {prev_seq}: "
                        f"{'messages missing' if rec['seq'] > prev_seq else 'out of order'}")
        last_seq[d] = rec["seq"]
        if d == "received" and not isinstance(rec.get("at"), int):
            self.err(i, "received message record has no sidecar offset")
        disc = rec.get("disc")
        if disc is not None and not (isinstance(disc, list) and len(disc) == 2
                                     and isinstance(disc[0], str) and isinstance(disc[1], int)):
            self.err(i, "malformed disclosure entry")
        if counts_in_roots(rec["kind"]):
            roots[d].add(env)
        else:
            if d in outcome_msgs:
                self.err(i, f"second {OUTCOME_KIND} message {d}")
            outcome_msgs[d] = (i, rec)
        self.msgs[d].append((i, rec))

    def _check_outcome(self, i, rec, job_id, party, peer, roots, outcome_msgs) -> dict:
        st = rec.get("statements")
        if not isinstance(st, dict) or set(st) != {party, peer}:
            self.err(i, "outcome record must hold both parties' statements")
            return {}
        for name in (party, peer):
            problem = check_statement(st[name], job_id=job_id, party=name,
                                      key_hex=self.keys[name])
            if problem:
                self.err(i, problem)
                return {}
        mine = {d: {"n": roots[d].n, "root": roots[d].root} for d in DIRECTIONS}
        own, theirs = st[party], st[peer]
        for d in DIRECTIONS:
            if own[d] != mine[d]:
                self.err(i, f"{party}'s signed statement covers {own[d]['n']} {d} messages "
                            f"but the transcript has {mine[d]['n']} (or different ones)")
        other = {"sent": "received", "received": "sent"}
        for d in DIRECTIONS:
            if theirs[d] != mine[other[d]]:
                self.err(i, f"{peer}'s signed statement says it {d} {theirs[d]['n']} "
                            f"messages; this transcript {other[d]} {mine[other[d]]['n']} "
                            "(or different ones)")
        for d, stmt in (("sent", own), ("received", theirs)):
            m = outcome_msgs.get(d)
            if m is None:
                self.err(i, f"no {OUTCOME_KIND} message {d} before the outcome record")
            elif m[1]["sha256"] != sha256_hex(encode_payload(stmt)[1]):
                self.err(m[0], f"the {OUTCOME_KIND} message {d} differs from the "
                               "statement in the outcome record")
        return {n: st[n]["model_digest"] for n in (party, peer)}

    def _summary(self, status: str, outcome: dict, closing: dict | None) -> dict:
        t, h = self.t, self.t.header
        ledger: dict[tuple[str, str], dict] = {}
        byte_counts = {d: sum(r["len"] for _, r in self.msgs[d]) for d in DIRECTIONS}
        for d in DIRECTIONS:
            to = t.peer if d == "sent" else t.party
            for _, r in self.msgs[d]:
                disc = r.get("disc")
                if isinstance(disc, list) and len(disc) == 2:
                    e = ledger.setdefault((disc[0], to), {"category": disc[0], "to": to,
                                                          "kinds": [], "messages": 0,
                                                          "values": 0})
                    e["messages"] += 1
                    e["values"] += disc[1] if isinstance(disc[1], int) else 0
                    if r["kind"] not in e["kinds"]:
                        e["kinds"].append(r["kind"])
        times = [r.get("t") for r in t.records if isinstance(r.get("t"), (int, float))]
        return {
            "file": str(t.path), "job_id": h.get("job_id"), "party": h.get("party"),
            "peer": h.get("peer"), "roles": h.get("roles", {}), "status": status,
            "reason": closing.get("reason") if closing and status == "aborted" else None,
            "records": len(t.records),
            "messages": {d: len(self.msgs[d]) for d in DIRECTIONS},
            "bytes": byte_counts,
            "duration_s": round(max(times) - min(times), 3) if times else 0.0,
            "spec_digest": h.get("spec_digest"), "protocols": h.get("protocols", {}),
            "key_sizes": h.get("key_sizes", {}),
            "fingerprints": h.get("fingerprints", {}),
            "pinned": sorted(self.pins),
            "model_digests": outcome,
            "ledger": sorted(ledger.values(), key=lambda e: (e["to"], e["category"])),
        }


def _agree(a: _Checker, b: _Checker) -> list[Finding]:
    """Both parties' transcripts of one job: same job, keys, and the same messages."""
    out: list[Finding] = []
    ha, hb = a.t.header, b.t.header
    if ha.get("job_id") != hb.get("job_id"):
        return [Finding(b.where, 0, f"transcript of job {hb.get('job_id')!r}, not "
                                    f"{ha.get('job_id')!r}")]
    if (ha.get("party"), ha.get("peer")) != (hb.get("peer"), hb.get("party")):
        return [Finding(b.where, 0, "the two transcripts are not from the two parties of "
                                    "one job (party/peer names do not mirror)")]
    for key in ("keys", "spec_digest"):
        if ha.get(key) != hb.get(key):
            out.append(Finding(b.where, 0, f"record 0 disagrees with {a.where} on {key}"))
    fields = ("seq", "sender", "kind", "ptype", "len", "sha256", "sig")
    for d, od in (("sent", "received"), ("received", "sent")):
        xs, ys = a.msgs[d], b.msgs[od]
        for k in range(max(len(xs), len(ys))):
            if k >= len(xs) or k >= len(ys):
                have, (mi, mr) = (b, ys[k]) if k >= len(xs) else (a, xs[k])
                out.append(Finding(have.where, mi, f"{mr['kind']} seq {mr['seq']} has no "
                                                   "counterpart in the other transcript"))
                break
            (ia, ra), (ib, rb) = xs[k], ys[k]
            diff = [f for f in fields if ra.get(f) != rb.get(f)]
            if diff:
                out.append(Finding(a.where, ia,
                                   f"{d} {ra.get('kind')} seq {ra.get('seq')} disagrees with "
                                   f"{b.where} record {ib} on {', '.join(diff)}"))
                break
    ca, cb = a.t.records[-1], b.t.records[-1]
    if ca.get("type") == cb.get("type") == "outcome" and \
            ca.get("statements") != cb.get("statements"):
        out.append(Finding(b.where, len(b.t.records) - 1,
                           f"outcome statements differ from {a.where}"))
    return out


def verify(transcript_path: str | Path, peer_path: str | Path | None = None,
           pinned_keys: dict | None = None) -> VerifyReport:
    """Verify a transcript (and, given ``peer_path``, the peer's and their agreement).

    ``pinned_keys`` maps a party (sender) name to its Ed25519 public key (object, raw
    bytes, or hex of the key or of its SHA-256 fingerprint).
    """
    try:
        pins = normalise_pins(pinned_keys)
    except (CannotRun, TranscriptError) as exc:
        return VerifyReport(False, EXIT_CANNOT_RUN, [Finding("input", None, str(exc))])
    loaded: list[Transcript] = []
    for p in (transcript_path, peer_path):
        if p is None:
            continue
        try:
            loaded.append(load(p))
        except RecordMalformed as exc:
            return VerifyReport(False, EXIT_FAILED, [Finding(
                Path(p).name, exc.index, str(exc).split(": ", 1)[1])])
        except TranscriptError as exc:
            return VerifyReport(False, EXIT_CANNOT_RUN, [Finding("input", None, str(exc))])
    checkers = [_Checker(t, pins) for t in loaded]
    summaries = [c.run() for c in checkers]
    errors = [e for c in checkers for e in c.errors]
    warnings = [w for c in checkers for w in c.warnings]
    if len(checkers) == 2 and not errors:
        errors += _agree(*checkers)
    elif len(checkers) == 2:
        warnings.append("the two transcripts were not compared message by message "
                        "because one failed its own checks")
    ok = not errors
    return VerifyReport(ok, EXIT_OK if ok else EXIT_FAILED, errors[:MAX_ERRORS], warnings,
                        summaries[0], summaries[1] if len(summaries) == 2 else None)


# ------------------------------------------------------------------------------ replay


class ReplayMismatch(Exception):
    """The replayed side diverged from the recorded exchange (deliberately not a
    ProtocolError, so protocol code cannot swallow it)."""

    def __init__(self, finding: Finding):
        super().__init__(str(finding))
        self.finding = finding


class ReplayLink(Link):
    """A :class:`Link` that plays one party's recorded exchange back.

    ``recv`` returns the recorded received payloads in order (read from the sidecar and
    checked against the signed digests); ``send`` checks each payload the replayed side
    produces against the digest of the corresponding recorded sent message. Control
    messages in ``NOT_REPLAYED`` (``job.outcome``) are skipped. The first divergence raises
    :class:`ReplayMismatch` naming the record and is kept in :attr:`mismatch`.
    """

    def __init__(self, t: Transcript, sidecar: SidecarReader):
        self.job_id, self.party, self.peer = t.job_id, t.party, t.peer
        self._where = t.path.name
        self._sidecar = sidecar
        self._queues = {d: [(i, r) for i, r in enumerate(t.records)
                            if r.get("type") == "msg" and r.get("dir") == d
                            and r.get("kind") not in NOT_REPLAYED]
                        for d in DIRECTIONS}
        self._pos = {d: 0 for d in DIRECTIONS}
        self.mismatch: Finding | None = None
        self.status: dict[int, str] = {}      # record index -> "matched" | "fed" | ...
        self.elapsed: dict[int, float] = {}
        self._t0 = time.monotonic()

    def _fail(self, record: int | None, msg: str) -> ReplayMismatch:
        f = Finding(self._where, record, msg)
        if self.mismatch is None:
            self.mismatch = f
            if record is not None:
                self.status[record] = "MISMATCH"
        return ReplayMismatch(self.mismatch)

    def _next(self, d: str, kind: str) -> tuple[int, dict]:
        if self.mismatch is not None:
            raise ReplayMismatch(self.mismatch)
        q, k = self._queues[d], self._pos[d]
        if k >= len(q):
            raise self._fail(None, f"the replayed {self.party} {'sent' if d == 'sent' else 'expected'}"
                                   f" {kind} but the transcript records only {len(q)} {d} "
                                   "messages")
        self._pos[d] = k + 1
        return q[k]

    def send(self, kind: str, payload: Payload) -> None:
        ptype, data = encode_payload(payload)
        i, rec = self._next("sent", kind)
        if rec["kind"] != kind:
            raise self._fail(i, f"replay sent {kind} where the transcript records "
                                f"{rec['kind']} seq {rec['seq']}")
        digest = hashlib.sha256(data).hexdigest()
        if ptype != rec["ptype"] or len(data) != rec["len"] or digest != rec["sha256"]:
            raise self._fail(i, f"sent {kind} seq {rec['seq']} differs from the record: "
                                f"replayed {len(data)} bytes sha256 {digest[:16]}..., "
                                f"recorded {rec['len']} bytes sha256 {rec['sha256'][:16]}...")
        self.status[i] = "matched"
        self.elapsed[i] = time.monotonic() - self._t0

    def recv(self, kind: str, timeout: float | None = None) -> Payload:
        i, rec = self._next("received", kind)
        if rec["kind"] != kind:
            raise self._fail(i, f"replay expected {kind} where the transcript records "
                                f"{rec['kind']} seq {rec['seq']} (the replayed side diverged)")
        data = self._sidecar.read(rec)
        if data is None:
            raise self._fail(i, f"received {kind} seq {rec['seq']}: payload missing from the "
                                "sidecar or not matching the signed digest")
        self.status[i] = "fed"
        self.elapsed[i] = time.monotonic() - self._t0
        return decode_payload(rec["ptype"], data)

    def leftover(self) -> Finding | None:
        """The first recorded message the replay did not reach, if any."""
        for d in DIRECTIONS:
            q, k = self._queues[d], self._pos[d]
            if k < len(q):
                i, rec = q[k]
                return Finding(self._where, i, f"replay finished but the transcript records "
                                               f"more {d} messages, starting with "
                                               f"{rec['kind']} seq {rec['seq']}")
        return None


@dataclass
class ReplayReport:
    ok: bool
    exit_code: int
    errors: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    party: str = ""
    job_id: str = ""
    model_digest: str | None = None       # of the replayed model part
    signed_digest: str | None = None      # from the transcript's outcome record
    timeline: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def first_bad(self) -> Finding | None:
        return self.errors[0] if self.errors else None

    def to_json(self) -> dict:
        return {"ok": self.ok, "exit_code": self.exit_code, "party": self.party,
                "job_id": self.job_id,
                "errors": [{"where": e.where, "record": e.record, "message": e.message}
                           for e in self.errors],
                "warnings": self.warnings, "model_digest": self.model_digest,
                "signed_digest": self.signed_digest, "seconds": round(self.seconds, 3),
                "timeline": self.timeline}


@dataclass
class ReplaySide:
    """What a replay runner needs: the party's config, spec and seed."""

    node_cfg: Any
    spec: Any
    seed: bytes
    signing_public_hex: str


#: runner(side: ReplaySide, link: ReplayLink) -> model-part digest (hex str)
SideRunner = Callable[[ReplaySide, ReplayLink], str]


def find_node_config(party_dir: str | Path, party: str) -> Path:
    """The node.toml of ``party`` (its sender name) in ``party_dir``: the path itself
    if it is a file, else ``DIR/node.toml``, else the one ``DIR/*.toml`` whose
    ``[node] name`` is ``party``."""
    from federation import config

    p = Path(party_dir)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CannotRun(f"{party_dir}: no such directory")
    if (p / "node.toml").is_file():
        return p / "node.toml"
    for cand in sorted(p.glob("*.toml")):
        try:
            if config.load_node_config(cand).name == party:
                return cand
        except (config.ConfigError, OSError):
            continue
    raise CannotRun(f"{party_dir}: no node.toml for {party!r} (pass the party's directory "
                    "holding its node.toml, or the node.toml itself)")


def load_party(party_dir: str | Path, t: Transcript) -> ReplaySide:
    """Read the party's node.toml, signing key and per-job seed from ``party_dir``."""
    from federation import config

    cfg_path = find_node_config(party_dir, t.party)
    try:
        cfg = config.load_node_config(cfg_path)
    except (config.ConfigError, OSError) as exc:
        raise CannotRun(str(exc)) from None
    if cfg.name != t.party:
        raise CannotRun(f"{cfg_path} is {cfg.name!r}'s config; the transcript was written "
                        f"by {t.party!r}")
    pub_hex = load_signing_public_hex(cfg.keys.signing_key)
    try:
        spec = config.job_spec_from_dict(t.header.get("spec") or {}, f"{t.path.name} record 0")
    except config.ConfigError as exc:
        raise CannotRun(f"the job spec in the transcript is not usable: {exc}") from None
    seed_path = Path(cfg.data_dir) / "vault" / f"{t.job_id}.seed"
    try:
        seed = seed_path.read_bytes()
    except OSError:
        raise CannotRun(f"{seed_path}: the job's seed is not in the party's vault") from None
    return ReplaySide(cfg, spec, seed, pub_hex)


def load_signing_public_hex(path: str | Path) -> str:
    """Public half (hex) of an Ed25519 signing key file (PEM/PKCS8 or 32 raw bytes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CannotRun(f"{path}: signing key not readable ({exc.strerror})") from None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(raw, password=None)
        elif len(raw) == 32:
            key = Ed25519PrivateKey.from_private_bytes(raw)
        else:
            key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError):
        raise CannotRun(f"{path}: not an unencrypted Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CannotRun(f"{path}: not an Ed25519 private key")
    return public_key_bytes(key).hex()


def _protocol_mismatch(t, side: ReplaySide) -> str:
    """Why this fedjoint cannot replay the job (other protocol versions), or ""."""
    from federation import runner

    recorded = t.header.get("protocols") or {}
    if not recorded:
        return ""
    spec = side.spec
    current = runner.protocol_versions(spec.algorithm, getattr(spec, "train_algorithm", ""))
    diff = [f"{k} {recorded.get(k)!r} (this fedjoint speaks {current.get(k)!r})"
            for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    if not diff:
        return ""
    return ("the job ran other protocol versions: " + ", ".join(diff) +
            "; replay it with the fedjoint version that ran the job")


def default_runner(side: ReplaySide, link: ReplayLink) -> str:
    """Run the party's pipeline (federation.runner.run_job_side) over the replay link."""
    from federation import runner

    result = runner.run_job_side(side.spec, side.node_cfg, link, side.seed)
    return model_digest_of(result)


def model_digest_of(result: Any) -> str:
    for attr in ("model_digest",):
        v = getattr(result, attr, None)
        if isinstance(v, str) and v:
            return v
    model = getattr(result, "model", None)
    if model is not None and hasattr(model, "digest"):
        return model.digest()
    if hasattr(result, "digest"):
        return result.digest()
    raise TypeError(f"cannot find a model-part digest on {type(result).__name__}")


def replay(transcript_path: str | Path, party_dir: str | Path | None = None, *,
           side: ReplaySide | None = None, runner: SideRunner | None = None,
           pinned_keys: dict | None = None) -> ReplayReport:
    """Re-run one party's side of a job from its transcript and compare.

    The transcript is verified first, against the signing keys pinned in the party's
    node.toml (or ``pinned_keys``). ``party_dir`` is that party's directory (its
    node.toml names data, keys and data_dir, whose vault holds the job seed); tests may
    pass ``side`` and ``runner`` directly.
    """
    t0 = time.monotonic()
    rep = ReplayReport(False, EXIT_FAILED)
    if pinned_keys is None and party_dir is not None and side is None:
        # pin both signing keys from the party's own node.toml
        try:
            t = load(transcript_path)
            pinned_keys = _pins_from_cli((), str(find_node_config(party_dir, t.party)))
        except (TranscriptError, CannotRun):
            pinned_keys = None    # verify/load_party below report what is wrong
    v = verify(transcript_path, pinned_keys=pinned_keys)
    if v.exit_code == EXIT_CANNOT_RUN:
        rep.exit_code, rep.errors = EXIT_CANNOT_RUN, v.errors
        return rep
    rep.warnings += v.warnings
    if not v.ok:
        rep.errors = [*v.errors]
        return rep
    t = load(transcript_path)
    rep.party, rep.job_id = t.party, t.job_id
    closing = t.records[-1]
    if closing.get("type") != "outcome":
        rep.exit_code = EXIT_CANNOT_RUN
        rep.errors = [Finding(t.path.name, len(t.records) - 1, "the job did not finish "
                              f"({closing.get('reason', 'no outcome')}); nothing to compare")]
        return rep
    rep.signed_digest = closing["statements"][t.party]["model_digest"]
    try:
        if side is None:
            if party_dir is None:
                raise CannotRun("replay needs the party's directory (--party-dir)")
            side = load_party(party_dir, t)
        sidecar = SidecarReader(sidecar_path(t.path))
    except (CannotRun, TranscriptUnreadable) as exc:
        rep.exit_code = EXIT_CANNOT_RUN
        rep.errors = [Finding("party dir", None, str(exc))]
        return rep
    if runner is None:
        stale = _protocol_mismatch(t, side)
        if stale:
            rep.exit_code = EXIT_CANNOT_RUN
            rep.errors = [Finding(t.path.name, 0, stale)]
            sidecar.close()
            return rep
    if side.signing_public_hex != t.header["keys"][t.party]:
        rep.errors = [Finding(t.path.name, 0, f"the party directory's signing key "
                              f"({fingerprint(side.signing_public_hex)[:16]}...) is not "
                              f"{t.party}'s key in the transcript "
                              f"({fingerprint(t.header['keys'][t.party])[:16]}...)")]
        sidecar.close()
        return rep
    link = ReplayLink(t, sidecar)
    digest: str | None = None
    try:
        digest = (runner or default_runner)(side, link)
    except ReplayMismatch:
        pass
    except Exception as exc:  # noqa: BLE001 - any pipeline failure is a replay failure
        if link.mismatch is None:
            reached = _reached(link)
            rep.errors.append(Finding("pipeline", reached,
                                      f"the replayed side failed: {type(exc).__name__}: "
                                      f"{exc}"))
    finally:
        sidecar.close()
    if link.mismatch is not None:
        rep.errors.insert(0, link.mismatch)
    elif digest is not None:
        left = link.leftover()
        if left is not None:
            rep.errors.append(left)
        rep.model_digest = digest
        if digest != rep.signed_digest:
            rep.errors.append(Finding(t.path.name, len(t.records) - 1,
                                      f"replayed model part digest {digest[:16]}... differs "
                                      f"from the signed digest {rep.signed_digest[:16]}..."))
    rep.timeline = timeline(t, link.status, link.elapsed)
    rep.ok = not rep.errors
    rep.exit_code = EXIT_OK if rep.ok else EXIT_FAILED
    rep.seconds = time.monotonic() - t0
    return rep


def _reached(link: ReplayLink) -> int | None:
    done = [i for i in link.status]
    return max(done) if done else None


# ---------------------------------------------------------------------- show/timeline


def timeline(t: Transcript, status: dict[int, str] | None = None,
             elapsed: dict[int, float] | None = None) -> list[dict]:
    """Rounds of the exchange from this party's view: a round is a run of messages it
    sent followed by the run of messages it received next. Each round lists its kinds
    with counts and bytes; with replay status, whether every message matched."""
    rounds: list[dict] = []
    cur: dict | None = None
    t_start = t.header.get("t", 0.0)
    for i, r in enumerate(t.records):
        if r.get("type") != "msg":
            continue
        d = r.get("dir")
        if cur is None or (d == "sent" and cur["_last"] == "received"):
            cur = {"round": len(rounds) + 1, "first_record": i,
                   "t": round(float(r.get("t", t_start)) - float(t_start), 3),
                   "sent": {}, "received": {}, "bytes": {"sent": 0, "received": 0},
                   "_st": []}
            rounds.append(cur)
        cur["_last"] = d
        k = r.get("kind", "?")
        cur[d][k] = cur[d].get(k, 0) + 1
        cur["bytes"][d] += int(r.get("len", 0))
        cur["last_record"] = i
        if status is not None:
            control = k in NOT_REPLAYED
            cur["_st"].append("skipped" if control else status.get(i, "not reached"))
    for c in rounds:
        c.pop("_last", None)
        st = c.pop("_st")
        if status is not None:
            if "MISMATCH" in st:
                c["replay"] = "MISMATCH"
            elif all(s in ("matched", "fed", "skipped") for s in st):
                c["replay"] = "ok"
            else:
                c["replay"] = "not reached"
    return rounds


def show(transcript_path: str | Path) -> dict:
    """Everything ``fedjoint audit show`` prints: summary, per-record rows, rounds."""
    t = load(transcript_path)
    v = verify(transcript_path)
    t0 = t.header.get("t", 0.0)
    rows = []
    for i, r in enumerate(t.records):
        row = {"i": i, "type": r.get("type"), "t": round(float(r.get("t", t0)) - t0, 3)}
        if r.get("type") == "msg":
            row.update({k: r.get(k) for k in ("dir", "seq", "kind", "ptype", "len")})
            row["sha256"] = r.get("sha256")
            if r.get("disc"):
                row["disclosure"] = r["disc"]
        elif r.get("type") == "outcome":
            row["model_digests"] = {n: s.get("model_digest")
                                    for n, s in r.get("statements", {}).items()}
        elif r.get("type") == "abort":
            row["reason"] = r.get("reason")
        rows.append(row)
    return {"summary": v.summary, "verified": v.ok,
            "errors": [str(e) for e in v.errors], "records": rows, "rounds": timeline(t)}


# ------------------------------------------------------------------------------ the CLI

def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def _print_summary(console, s: dict) -> None:
    if not s:
        return
    console.print(f"[bold]{s['file']}[/]  job {s['job_id']}  written by {s['party']} "
                  f"(peer {s['peer']})  status {s['status']}"
                  + (f" ({s['reason']})" if s.get("reason") else ""))
    console.print(f"  messages sent {s['messages']['sent']} ({_human(s['bytes']['sent'])}), "
                  f"received {s['messages']['received']} ({_human(s['bytes']['received'])}), "
                  f"duration {s['duration_s']:.1f} s")
    for name, fp in s.get("fingerprints", {}).items():
        pin = "pinned" if name in s.get("pinned", []) else "NOT pinned"
        console.print(f"  signing key {name}: {_fmt_fp(fp)}  ({pin})")
    for name, dg in s.get("model_digests", {}).items():
        console.print(f"  model part {name}: {dg}")
    if s.get("ledger"):
        from rich.table import Table

        tab = Table(title="disclosure ledger", title_justify="left")
        for col in ("to", "category", "messages", "values", "kinds"):
            tab.add_column(col)
        for e in s["ledger"]:
            tab.add_row(e["to"], e["category"], str(e["messages"]), str(e["values"]),
                        ", ".join(e["kinds"]))
        console.print(tab)


def _fmt_fp(hex_fp: str) -> str:
    """Fingerprints as `fedjoint keys init` prints them (AB:CD:...)."""
    try:
        return ":".join(hex_fp[i:i + 2] for i in range(0, len(hex_fp), 2)).upper()
    except TypeError:
        return str(hex_fp)


def _pins_from_cli(pins: tuple[str, ...], config_path: str | None) -> dict:
    out: dict[str, str] = {}
    for p in pins:
        if "=" not in p:
            raise CannotRun(f"--pin {p!r}: expected NAME=KEY (hex public key or "
                            "sha256 fingerprint)")
        name, key = p.split("=", 1)
        out[name.strip()] = key.strip()
    if config_path:
        from federation import config

        try:
            cfg = config.load_node_config(config_path)
        except (config.ConfigError, OSError) as exc:
            raise CannotRun(str(exc)) from None
        out.setdefault(cfg.name, load_signing_public_hex(cfg.keys.signing_key))
        peer_key = cfg.peer.signing_public_key.strip()
        if not peer_key:
            raise CannotRun(f"{config_path}: [peer] signing_public_key is empty: no key to "
                            f"pin for {cfg.peer.name}")
        if not _is_hex(peer_key.lower().removeprefix("sha256:"), 64):
            kp = Path(peer_key)
            if not kp.is_absolute():
                kp = Path(config_path).resolve().parent / kp
            peer_key = _read_public_key_file(kp)
        out.setdefault(cfg.peer.name, peer_key)
    return out


def _read_public_key_file(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CannotRun(f"{path}: peer signing key not readable ({exc.strerror})") from None
    text = raw.strip()
    if _is_hex(text.decode("ascii", "replace").lower(), 64):
        return text.decode().lower()
    try:
        key = (serialization.load_pem_public_key(raw) if text.startswith(b"-----BEGIN")
               else Ed25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise CannotRun(f"{path}: not an Ed25519 public key") from None
    return public_key_bytes(key).hex()


def _cli():
    import click

    @click.group("audit", help="Verify, replay and show job transcripts (exit codes: 0 "
                               "verified, 1 verification failed, 2 could not run).")
    def audit_group() -> None:
        pass

    @audit_group.command("verify")
    @click.argument("transcript")
    @click.option("--peer", "peer", default=None, help="the other party's transcript")
    @click.option("--pin", "pins", multiple=True,
                  help="NAME=KEY: pin a party's Ed25519 key (hex or sha256 fingerprint)")
    @click.option("--config", "config_path", default=None,
                  help="node.toml: pin this node's and its peer's signing keys")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable report")
    def verify_cmd(transcript, peer, pins, config_path, as_json) -> None:
        """Check a transcript's hash chain, signatures, sequences and outcome (and,
        with --peer, that both parties' transcripts agree on every message)."""
        try:
            pinned = _pins_from_cli(pins, config_path)
        except (CannotRun, TranscriptError) as exc:
            _die(str(exc), as_json)
        rep = verify(transcript, peer, pinned)
        _emit_verify(rep, as_json)
        sys.exit(rep.exit_code)

    @audit_group.command("replay")
    @click.argument("transcript")
    @click.option("--party-dir", required=True, help="the party's directory (node.toml)")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable report")
    def replay_cmd(transcript, party_dir, as_json) -> None:
        """Re-run this party's side from its own data, keys and seed; check every sent
        message and the final model part against the signed record."""
        rep = replay(transcript, party_dir)
        _emit_replay(rep, as_json)
        sys.exit(rep.exit_code)

    @audit_group.command("show")
    @click.argument("transcript")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable timeline")
    def show_cmd(transcript, as_json) -> None:
        """Print the transcript as a timeline (rich table) or as JSON."""
        try:
            data = show(transcript)
        except TranscriptError as exc:
            _die(str(exc), as_json, code=EXIT_CANNOT_RUN if isinstance(
                exc, TranscriptUnreadable) else EXIT_FAILED)
        if as_json:
            click.echo(json.dumps(data, indent=1))
        else:
            _print_show(data)
        sys.exit(EXIT_OK if data["verified"] else EXIT_FAILED)

    return audit_group


def _die(msg: str, as_json: bool, code: int = EXIT_CANNOT_RUN):
    import click

    if as_json:
        click.echo(json.dumps({"ok": False, "exit_code": code, "errors": [msg]}))
    else:
        click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, emoji=False,
                   width=None if sys.stdout.isatty() else 160)


def _emit_verify(rep: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rep.to_json(), indent=1))
        return
    c = _console()
    _print_summary(c, rep.summary)
    if rep.peer_summary:
        _print_summary(c, rep.peer_summary)
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/] {w}")
    if rep.ok:
        c.print("[green]VERIFIED[/]" + (": both transcripts agree on every message"
                                        if rep.peer_summary else ""))
    else:
        label = "CANNOT RUN" if rep.exit_code == EXIT_CANNOT_RUN else "FAILED"
        c.print(f"[red]{label}[/]: {rep.first_bad}")
        for e in rep.errors[1:]:
            c.print(f"  also: {e}")


def _emit_replay(rep: ReplayReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rep.to_json(), indent=1))
        return
    c = _console()
    if rep.timeline:
        from rich.table import Table

        tab = Table(title=f"replay of {rep.party}'s side of job {rep.job_id}",
                    title_justify="left")
        for col in ("round", "t (s)", "records", "sent", "received", "bytes", "replay"):
            tab.add_column(col)
        for r in rep.timeline:
            tab.add_row(str(r["round"]), f"{r['t']:.2f}",
                        f"{r['first_record']}-{r['last_record']}", _kinds(r["sent"]),
                        _kinds(r["received"]),
                        f"{_human(r['bytes']['sent'])} / {_human(r['bytes']['received'])}",
                        r.get("replay", ""))
        c.print(tab)
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/] {w}")
    if rep.ok:
        c.print(f"[green]REPLAYED[/]: every message {rep.party} sent matched the record; "
                f"model part {rep.model_digest} matches the signed digest")
    else:
        label = "CANNOT RUN" if rep.exit_code == EXIT_CANNOT_RUN else "FAILED"
        c.print(f"[red]{label}[/]: {rep.first_bad}")
        for e in rep.errors[1:]:
            c.print(f"  also: {e}")


def _kinds(d: dict) -> str:
    return ", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in d.items())


def _print_show(data: dict) -> None:
    from rich.table import Table

    c = _console()
    _print_summary(c, data["summary"])
    tab = Table(title="records", title_justify="left")
    for col in ("#", "t (s)", "type", "dir", "seq", "kind", "bytes", "sha256", "ledger"):
        tab.add_column(col)
    for r in data["records"]:
        disc = r.get("disclosure")
        tab.add_row(str(r["i"]), f"{r['t']:.3f}", r["type"] or "", r.get("dir", ""),
                    str(r.get("seq", "")), r.get("kind", ""),
                    _human(r["len"]) if "len" in r else "",
                    (r.get("sha256") or "")[:16],
                    f"{disc[0]} x{disc[1]}" if disc else "")
    c.print(tab)
    if data["verified"]:
        c.print("[green]verified[/]")
    else:
        c.print(f"[red]verification failed[/]: {data['errors'][0] if data['errors'] else ''}")


audit = _cli()
