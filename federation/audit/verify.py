"""Verify one transcript, or both parties' transcripts of a job against each other.

Checks the hash chain, every record and envelope signature against the pinned keys,
sequence completeness per direction, the closing record and both signed outcome
statements; given the peer's transcript, that both agree on every message. Also sums
the disclosure ledger into the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from federation.audit.findings import (
    EXIT_CANNOT_RUN,
    EXIT_FAILED,
    EXIT_OK,
    MAX_ERRORS,
    CannotRun,
    Finding,
    Report,
    is_hex,
)
from federation.audit.pins import normalise_pins
from federation.link import Envelope, encode_payload
from federation.transcript import (
    DIRECTIONS,
    OUTCOME_KIND,
    VERSION,
    ZERO_HASH,
    RecordMalformed,
    RunningRoot,
    Transcript,
    TranscriptError,
    check_statement,
    counts_in_roots,
    fingerprint,
    load,
    record_signing_bytes,
    sha256_hex,
    spec_digest,
    verify_sig,
)
from federation.transcript.exports import ACTS, statement_bytes
from federation.transcript.restarts import CHECKPOINT, RESTART


@dataclass
class VerifyReport(Report):
    summary: dict = field(default_factory=dict)      # of the first transcript
    peer_summary: dict | None = None

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
                "errors": self.errors_json(), "warnings": self.warnings, "summary": self.summary,
                "peer_summary": self.peer_summary}


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
        self.points: list[dict] = []      # effective checkpoint records
        self.restarts: list[dict] = []

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
                and all(is_hex(v, 64) for v in keys.values())):
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
        last_seq: dict[str, int | None] = {d: None for d in DIRECTIONS}
        outcome_msgs: dict[str, dict] = {}
        n = len(t.records)
        for i, (line, rec) in enumerate(zip(t.lines, t.records, strict=True)):
            prev = self._link(i, line, rec, prev, party)
            typ = rec.get("type")
            if i == 0:
                continue
            if typ == "msg":
                self._check_msg(i, rec, job_id, party, peer, last_seq, outcome_msgs)
            elif typ == CHECKPOINT:
                self._checkpoint(i, rec)
            elif typ == RESTART:
                self._restart(i, rec, last_seq)
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
            roots = {d: RunningRoot() for d in DIRECTIONS}
            for d in DIRECTIONS:
                for _, r in self.msgs[d]:
                    if counts_in_roots(r["kind"]):
                        roots[d].add(_envelope(job_id, r))
            outcome = self._check_outcome(n - 1, closing, job_id, party, peer, roots,
                                          outcome_msgs)
        self.exports, self.export_recs = [], []
        for k, (line, rec) in enumerate(zip(t.export_lines, t.exports, strict=True)):
            prev = self._link(n + k, line, rec, prev, party)
            self._check_export(n + k, rec, job_id, party, peer, status)
        return {**self._summary(status, outcome, closing), "exports": self.exports}

    def _link(self, i: int, line: bytes, rec: dict, prev: str, party: str) -> str:
        """Record ``i``'s place in the chain and its signature; returns its hash."""
        if rec.get("v") != VERSION:
            self.err(i, f"format version {rec.get('v')!r} differs from record 0")
        if rec.get("i") != i:
            self.err(i, f"record index {rec.get('i')!r} found at position {i} "
                        "(records deleted, inserted or reordered)")
        if rec.get("prev") != prev:
            self.err(i, "hash chain broken: prev does not match the hash of record "
                        f"{i - 1} (a record before it was changed, removed or reordered)"
                     if i else "hash chain broken: record 0 must have a zero prev")
        self._check_signed(i, rec, party)
        return sha256_hex(line)

    def _check_export(self, i: int, rec: dict, job_id, party, peer, status) -> None:
        """An export record (federation.transcript.exports): after an outcome, of this
        job's model, with a reveal statement signed by the platform."""
        if status != "done":
            self.err(i, "export record after a job that did not close with an outcome")
        act, model, st = rec.get("act"), rec.get("model"), rec.get("statement")
        if act not in ACTS or not isinstance(model, str) or not isinstance(st, dict) or \
                not (model == job_id or model.startswith(f"{job_id}.")):
            self.err(i, "export record is malformed or names another job's model")
            return
        signer = party if act == "reveal" else peer
        sig = rec.get("signature")
        if not is_hex(sig, 128) or not verify_sig(self.keys[signer], sig,
                                                   statement_bytes(st)):
            self.err(i, f"the reveal statement in the export record is not signed by "
                        f"{signer}'s key")
        if st.get("model") != model or st.get("by") != signer:
            self.err(i, "the reveal statement names another model or signer")
        if act == "export" and not (isinstance(rec.get("format"), str)
                                    and is_hex(rec.get("sha256"), 64)):
            self.err(i, "export record lacks the format or the file's SHA-256")
        self.export_recs.append((i, rec))
        self.exports.append({"record": i, "act": act, "model": model,
                             "format": rec.get("format"), "sha256": rec.get("sha256"),
                             "to": rec.get("to"), "revealed_by": signer,
                             "time": rec.get("t")})

    def _check_signed(self, i: int, rec: dict, signer: str) -> None:
        sig = rec.get("rsig")
        if not is_hex(sig, 128) or not verify_sig(self.keys[signer], sig,
                                                   record_signing_bytes(rec)):
            self.err(i, f"{signer}'s record signature does not verify (the record was "
                        "changed, or moved with the chain rewritten)")

    def _checkpoint(self, i: int, rec: dict) -> None:
        """A checkpoint record: numbered in order, at the effective message counts."""
        n, s, r = rec.get("n"), rec.get("sent"), rec.get("received")
        if not (isinstance(n, int) and isinstance(s, int) and isinstance(r, int)
                and is_hex(rec.get("file"), 64)):
            self.err(i, "checkpoint record is malformed")
            return
        want = len(self.points) + 1
        if n != want:
            self.err(i, f"checkpoint {n} where checkpoint {want} was expected")
        if s != len(self.msgs["sent"]) or not 0 <= r <= len(self.msgs["received"]):
            self.err(i, f"checkpoint {n} counts {s} sent / {r} received messages; the "
                        f"transcript has {len(self.msgs['sent'])} sent / "
                        f"{len(self.msgs['received'])} received before it")
        self.points.append(rec)

    def _restart(self, i: int, rec: dict, last_seq: dict) -> None:
        """A restart record: roll the effective messages back to its checkpoint."""
        n = rec.get("checkpoint")
        point = next((p for p in self.points if p.get("n") == n), None)
        if point is None:
            self.err(i, f"restart from checkpoint {n!r}, which this transcript does not "
                        "hold (or a later restart discarded)")
            return
        if (rec.get("sent"), rec.get("received"), rec.get("file")) != \
                (point["sent"], point["received"], point["file"]):
            self.err(i, f"restart record disagrees with checkpoint {n} on its counts or "
                        "file digest")
            return
        cut = {"sent": point["sent"], "received": point["received"]}
        if rec.get("discarded") != {d: len(self.msgs[d]) - cut[d] for d in DIRECTIONS}:
            self.err(i, "restart record's discarded counts do not match the messages "
                        "recorded since the checkpoint")
        for d in DIRECTIONS:
            del self.msgs[d][cut[d]:]
            last_seq[d] = self.msgs[d][-1][1]["seq"] if self.msgs[d] else None
        self.points = [p for p in self.points if p["n"] <= n]
        self.restarts.append({"record": i, "checkpoint": n,
                              "reason": str(rec.get("reason", ""))[:200]})

    def _check_msg(self, i, rec, job_id, party, peer, last_seq, outcome_msgs):
        d = rec.get("dir")
        if d not in DIRECTIONS:
            self.err(i, f"message direction {d!r} is neither sent nor received")
            return
        sender = party if d == "sent" else peer
        fields_ok = (rec.get("sender") == sender and isinstance(rec.get("seq"), int)
                     and isinstance(rec.get("kind"), str) and isinstance(rec.get("ptype"), str)
                     and isinstance(rec.get("len"), int) and rec["len"] >= 0
                     and is_hex(rec.get("sha256"), 64) and is_hex(rec.get("sig"), 128))
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
        if not counts_in_roots(rec["kind"]):
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
        # the ledger is peer-attested: each side signs what it received, so what this
        # transcript says it disclosed must equal what the peer signed it learnt
        ledger = {d: self._disclosed(d) for d in DIRECTIONS}
        if own["disclosed"] != ledger["received"]:
            self.err(i, f"{party}'s signed statement lists disclosures received "
                        f"{own['disclosed']} but its records add up to {ledger['received']}")
        if theirs["disclosed"] != ledger["sent"]:
            self.err(i, f"{peer} signed that it received disclosures {theirs['disclosed']}; "
                        f"this transcript's records of what it sent add up to "
                        f"{ledger['sent']} (a ledger under-reported or altered)")
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

    def _disclosed(self, d: str) -> dict[str, int]:
        """Disclosed values per category in this transcript's ``d`` messages (the
        outcome exchange excluded, as in the statements)."""
        out: dict[str, int] = {}
        for _, r in self.msgs[d]:
            disc = r.get("disc")
            if counts_in_roots(r["kind"]) and isinstance(disc, list) and len(disc) == 2:
                out[disc[0]] = out.get(disc[0], 0) + int(disc[1])
        return dict(sorted(out.items()))

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
            "checkpoints": len(self.points),
            "restarts": self.restarts,
            "ledger": sorted(ledger.values(), key=lambda e: (e["to"], e["category"])),
        }


def _envelope(job_id: str, r: dict) -> Envelope:
    return Envelope(job_id, r["seq"], r["sender"], r["kind"], r["ptype"], r["len"],
                    bytes.fromhex(r["sha256"]), bytes.fromhex(r["sig"]))


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
    fields = ("seq", "sender", "kind", "ptype", "len", "sha256", "sig", "disc")
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
    # every full export the bank recorded was revealed (and recorded) by the platform
    for x, y in ((a, b), (b, a)):
        shown = [r["statement"] for _, r in getattr(y, "export_recs", [])
                 if r.get("act") == "reveal"]
        for i, r in getattr(x, "export_recs", []):
            if r.get("act") == "export" and r.get("statement") not in shown:
                out.append(Finding(x.where, i, f"export record whose reveal is not "
                                               f"recorded in {y.where}"))
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
