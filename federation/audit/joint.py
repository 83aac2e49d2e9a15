"""Joint replay: both parties' sides of a job regenerated together, with no sidecar.

An auditor holding both parties' vaults (each party's node.toml with its datasets and
signing key, its per-job seed in ``<data_dir>/vault/<job>.seed``, its transcript) runs
the bank's and the platform's pipelines (:func:`federation.runner.run_job_side`) in one
process, in two threads, over a :class:`JointLink` pair. Nothing crosses a network and
no sidecar is read: what one party received is what the other party's replay sends.

Every message a replayed side sends is checked *before* the other side sees it, against
the sender's transcript (its next effective ``sent`` record) and the receiver's (its
next effective ``received`` record): kind, payload type, length and SHA-256, bit for bit.
Only a message matching both is delivered. The final model parts must equal the digests
both parties signed in their outcome statements, and every recorded message must be
regenerated. ``job.outcome`` / ``job.resume`` (control messages the node sends, not the
pipeline) and the messages a restart record discarded are not replayed.

Who is named: every input a replayed side consumes has been checked, so the first
message that differs is sent by a party whose *own* inputs (dataset, seed, node.toml,
fedjoint version) are not those of the recorded run; the finding names that party, the
message (kind, sequence number) and its record index in both transcripts.

What each party learns: nothing (it is local). The auditor sees both datasets and both
seeds, so joint replay is for someone both parties trust with their vaults (or both
operators together on one machine). It works whatever ``[transcript] keep_received``
says, and is the only replay left when a node kept digests only.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from federation.audit.findings import (
    EXIT_CANNOT_RUN,
    EXIT_FAILED,
    EXIT_OK,
    CannotRun,
    Finding,
    Report,
)
from federation.audit.pins import pins_from_cli
from federation.audit.replay import (
    ReplayMismatch,
    ReplaySide,
    _protocol_mismatch,
    find_node_config,
    load_party,
    model_digest_of,
)
from federation.audit.verify import verify
from federation.link import Link, Payload, PeerGone, decode_payload, encode_payload
from federation.transcript import (
    DIRECTIONS,
    NOT_REPLAYED,
    Transcript,
    TranscriptError,
    fingerprint,
    load,
)
from federation.transcript.restarts import effective

_STOP = object()


class _Exchange:
    """Both transcripts' effective messages, the delivery queues and the first
    divergence, shared by the two :class:`JointLink` ends."""

    def __init__(self, transcripts: dict[str, Transcript]):
        self.t = transcripts
        self.msgs = {}
        for p, t in transcripts.items():
            msgs, _ = effective(t.records)
            self.msgs[p] = {d: [(i, r) for i, r in msgs[d] if r.get("kind") not in NOT_REPLAYED]
                            for d in DIRECTIONS}
        self.pos = {p: {d: 0 for d in DIRECTIONS} for p in transcripts}
        self.inbox = {p: queue.Queue() for p in transcripts}
        self.lock = threading.Lock()
        self.mismatch: Finding | None = None
        self.diverged: dict | None = None
        self.checked = 0

    def fail(self, finding: Finding, diverged: dict) -> ReplayMismatch:
        with self.lock:
            if self.mismatch is None:
                self.mismatch, self.diverged = finding, diverged
        self.stop()
        return ReplayMismatch(self.mismatch)

    def stop(self) -> None:
        for q in self.inbox.values():
            q.put((_STOP, "", b""))

    def take(self, party: str, d: str) -> tuple[int, dict] | None:
        k = self.pos[party][d]
        if k >= len(self.msgs[party][d]):
            return None
        self.pos[party][d] = k + 1
        return self.msgs[party][d][k]

    def leftover(self) -> Finding | None:
        for p, t in self.t.items():
            for d in DIRECTIONS:
                k = self.pos[p][d]
                if k < len(self.msgs[p][d]):
                    i, rec = self.msgs[p][d][k]
                    return Finding(f"{t.path.name} ({p})", i, f"joint replay finished but {p}'s "
                                   f"transcript records more {d} messages, starting with "
                                   f"{rec['kind']} seq {rec['seq']}")
        return None


class JointLink(Link):
    """One party's end of a joint replay: ``send`` checks the regenerated payload
    against both transcripts and delivers it to the other end; ``recv`` takes the next
    delivered payload (no timeout: the other side is computing the same run here)."""

    def __init__(self, ex: _Exchange, party: str, peer: str, job_id: str):
        self._ex, self.party, self.peer, self.job_id = ex, party, peer, job_id

    def send(self, kind: str, payload: Payload) -> None:
        ex = self._ex
        ptype, data = encode_payload(payload)
        digest = hashlib.sha256(data).hexdigest()
        with ex.lock:
            if ex.mismatch is not None:
                raise ReplayMismatch(ex.mismatch)
            mine, theirs = ex.take(self.party, "sent"), ex.take(self.peer, "received")
        records = {self.party: mine[0] if mine else None,
                   self.peer: theirs[0] if theirs else None}
        diverged = {"party": self.party, "kind": kind, "records": records}
        for owner, got in ((self.party, mine), (self.peer, theirs)):
            where = f"{ex.t[owner].path.name} ({owner})"
            d = "sent" if owner == self.party else "received"
            if got is None:
                raise ex.fail(Finding(where, None, f"the replayed {self.party} sent {kind} "
                                      f"but {owner}'s transcript records only "
                                      f"{len(ex.msgs[owner][d])} {d} messages"), diverged)
            i, rec = got
            diverged["seq"] = rec.get("seq")
            if rec["kind"] != kind:
                raise ex.fail(Finding(where, i, f"the replayed {self.party} sent {kind} "
                                      f"where {owner}'s transcript records {rec['kind']} "
                                      f"seq {rec['seq']}"), diverged)
            if ptype != rec["ptype"] or len(data) != rec["len"] or digest != rec["sha256"]:
                other = self.peer if owner == self.party else self.party
                raise ex.fail(Finding(where, i, f"{self.party} sent {kind} seq {rec['seq']} "
                                      f"differs from the record: regenerated {len(data)} "
                                      f"bytes sha256 {digest[:16]}..., recorded "
                                      f"{rec['len']} bytes sha256 {rec['sha256'][:16]}... "
                                      f"({other}'s transcript: record {records[other]})"),
                              diverged)
        with ex.lock:
            ex.checked += 1
        ex.inbox[self.peer].put((kind, ptype, data))

    def recv(self, kind: str, timeout: float | None = None) -> Payload:
        got, ptype, data = self._ex.inbox[self.party].get()
        if got is _STOP:
            self._ex.inbox[self.party].put((_STOP, "", b""))
            if self._ex.mismatch is not None:
                raise ReplayMismatch(self._ex.mismatch)
            raise PeerGone(f"the replayed {self.peer} stopped while {kind!r} was expected")
        if got != kind:
            where = f"{self._ex.t[self.party].path.name} ({self.party})"
            raise self._ex.fail(Finding(where, None, f"the replayed {self.party} "
                                        f"expected {kind} where {self.peer} sent {got} "
                                        f"(the replayed {self.party} diverged)"),
                                {"party": self.party, "kind": kind, "records": {}})
        return decode_payload(ptype, data)


@dataclass
class JointReplayReport(Report):
    job_id: str = ""
    parties: list[str] = field(default_factory=list)
    #: party -> {"replayed": digest, "signed": digest}
    model_digests: dict = field(default_factory=dict)
    messages: int = 0                 # messages regenerated and matched in both records
    diverged: dict | None = None      # the first differing message: party, kind, seq, records
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"ok": self.ok, "exit_code": self.exit_code, "job_id": self.job_id,
                "parties": self.parties, "errors": self.errors_json(),
                "warnings": self.warnings, "model_digests": self.model_digests,
                "messages": self.messages, "diverged": self.diverged,
                "seconds": round(self.seconds, 3)}


def _cannot(rep: JointReplayReport, where: str, msg: str, record: int | None = None):
    rep.exit_code, rep.errors = EXIT_CANNOT_RUN, [Finding(where, record, msg)]
    return rep


def joint_replay(transcript: str | Path, party_dir: str | Path,
                 peer_transcript: str | Path, peer_dir: str | Path, *,
                 pinned_keys: dict | None = None) -> JointReplayReport:
    """Regenerate every message of a job from both parties' seeds and datasets and
    check each against both transcripts (see the module docstring).

    ``transcript`` / ``party_dir``: one party's transcript and directory (its node.toml,
    or the node.toml itself); ``peer_transcript`` / ``peer_dir``: the other party's.
    Both transcripts are verified first (with ``--peer``), against the keys pinned in
    the first party's node.toml (or ``pinned_keys``).
    """
    t0 = time.monotonic()
    rep = JointReplayReport(False, EXIT_FAILED)
    if pinned_keys is None:
        try:
            t = load(transcript)
            pinned_keys = pins_from_cli((), str(find_node_config(party_dir, t.party)))
        except (TranscriptError, CannotRun):
            pass                              # verify / load_party say what is wrong
    v = verify(transcript, peer_transcript, pinned_keys=pinned_keys)
    rep.warnings += v.warnings
    if not v.ok:
        rep.exit_code, rep.errors = v.exit_code, [*v.errors]
        return rep
    ts = {tr.party: tr for tr in (load(transcript), load(peer_transcript))}
    a, b = list(ts)
    rep.job_id, rep.parties = ts[a].job_id, [a, b]
    for tr in ts.values():
        closing = tr.records[-1]
        if closing.get("type") != "outcome":
            return _cannot(rep, tr.path.name, f"the job did not finish "
                           f"({closing.get('reason', 'no outcome')}); nothing to compare",
                           len(tr.records) - 1)
    sides: dict[str, ReplaySide] = {}
    try:
        for p, d in ((a, party_dir), (b, peer_dir)):
            sides[p] = load_party(d, ts[p])
    except CannotRun as exc:
        return _cannot(rep, "party dir", str(exc))
    for p, side in sides.items():
        tr = ts[p]
        stale = _protocol_mismatch(tr, side)
        if stale:
            return _cannot(rep, tr.path.name, stale, 0)
        if side.signing_public_hex != tr.header["keys"][p]:
            rep.errors = [Finding(tr.path.name, 0, f"{p}'s directory holds the signing key "
                                  f"{fingerprint(side.signing_public_hex)[:16]}..., not "
                                  f"{p}'s key in the transcript "
                                  f"({fingerprint(tr.header['keys'][p])[:16]}...)")]
            return rep
    _run(rep, ts, sides)
    rep.ok = not rep.errors
    rep.exit_code = EXIT_OK if rep.ok else EXIT_FAILED
    rep.seconds = time.monotonic() - t0
    return rep


def _run(rep: JointReplayReport, ts: dict[str, Transcript],
         sides: dict[str, ReplaySide]) -> None:
    from federation import runner

    a, b = rep.parties
    ex = _Exchange(ts)
    links = {a: JointLink(ex, a, b, rep.job_id), b: JointLink(ex, b, a, rep.job_id)}
    digests: dict[str, str] = {}
    failed: dict[str, BaseException] = {}

    def side(p: str):
        try:
            digests[p] = model_digest_of(runner.run_job_side(sides[p].spec, sides[p].node_cfg,
                                                             links[p], sides[p].seed))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed[p] = exc
            ex.stop()                 # the other side stops at its next recv
        else:                         # a side still waiting for more fails, not hangs
            ex.inbox[links[p].peer].put((_STOP, "", b""))

    threads = [threading.Thread(target=side, args=(p,), daemon=True) for p in (a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rep.messages = ex.checked
    if ex.mismatch is not None:
        rep.errors, rep.diverged = [ex.mismatch], ex.diverged
        return
    for p, exc in failed.items():
        if not isinstance(exc, PeerGone):
            rep.errors.append(Finding("pipeline", None, f"the replayed {p} failed: "
                                      f"{type(exc).__name__}: {exc}"))
    if failed and not rep.errors:     # one side finished, the other expected more
        rep.errors.append(Finding("pipeline", None, "; ".join(
            f"{e} (the replayed {p} waited for it)" for p, e in failed.items())))
    if rep.errors:
        return
    left = ex.leftover()
    if left is not None:
        rep.errors.append(left)
    statements = ts[a].records[-1]["statements"]
    for p in (a, b):
        signed = statements[p]["model_digest"]
        rep.model_digests[p] = {"replayed": digests[p], "signed": signed}
        if digests[p] != signed:
            rep.errors.append(Finding(f"{ts[p].path.name} ({p})", len(ts[p].records) - 1,
                                      f"{p}'s replayed model part digest {digests[p][:16]}... "
                                      f"differs from the signed digest {signed[:16]}..."))
