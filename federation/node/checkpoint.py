"""Checkpoints of a running job, and resuming a job from one (docs/resume.md).

Writing. A training role calls ``ctx.checkpoint(step, state)`` after each tree / epoch,
where every message of that round has been sent and consumed by both roles. In the
job's process, :class:`Checkpointer` writes ``<data_dir>/jobs/<job>/checkpoints/<n>.json``
atomically (temporary file, fsync, rename; mode 0600): canonical JSON with the job id,
party, checkpoint number ``n`` (1, 2, ...), stage and step, the pipeline's message
counts at that point (sent, consumed) and the role's own state (its model so far;
arrays as ``.npy``). It holds nothing of the peer's beyond what this party's own model
part holds. The daemon then appends a signed ``checkpoint`` record carrying the file's
SHA-256 to the transcript (:mod:`federation.transcript.restarts`), so the transcript's
hash chain binds every checkpoint.

Why the state at a checkpoint can be restored exactly. A party's side of a job is a
deterministic function of the spec, this node's data and config, the per-job seed in
the vault (0600: the Paillier key, every DRBG stream, the obfuscator pools and numpy
generators derive from it) and the messages it received, which the transcript's
private sidecar holds. Resuming runs the pipeline again over the recorded run up to the
checkpoint, locally (:class:`ResumeLink`: nothing crosses the network; each recomputed
sent message must match its signed digest, and the recomputed checkpoint must equal the
file byte for byte and the file its signed digest), then continues live. Every DRBG
position, generator state, obfuscator pool, key and channel sequence number is then
where it was at the checkpoint, and the final model is bit-identical to an
uninterrupted run. The price is the local computation up to the checkpoint; no message
is sent twice.

Negotiation (:mod:`federation.node.resume`) picks the last checkpoint both parties hold
whose counts mirror each other (a consistent cut); the reopened stream numbers messages
from there, and the first live message each side sends is ``job.resume`` naming the
checkpoint it rolled back to (declared in :mod:`federation.job_protocol`).
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from federation import job_protocol as J
from federation.link import Link, Payload, ProtocolError
from federation.runner import JobFailed
from federation.transcript import DIRECTIONS, canonical, sha256_hex

FORMAT = "fedjoint-checkpoint"
VERSION = 1


@dataclass(frozen=True)
class ResumePlan:
    """The checkpoint a job resumes from, as this party counted it."""

    checkpoint: int
    sent: int
    received: int
    file: str          # SHA-256 of the checkpoint file (as the transcript signed it)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ResumePlan:
        return cls(int(d["checkpoint"]), int(d["sent"]), int(d["received"]),
                   str(d["file"]))


def checkpoint_dir(data_dir: str | Path, job_id: str) -> Path:
    return Path(data_dir) / "jobs" / job_id / "checkpoints"


def transcript_path(data_dir: str | Path, job_id: str) -> Path:
    return Path(data_dir) / "transcripts" / f"{job_id}.jsonl"


def encode_state(state: dict) -> dict:
    """A role's checkpoint state as JSON: arrays as base64 ``.npy``, the rest as is."""
    out = {}
    for key, value in sorted((state or {}).items()):
        if isinstance(value, np.ndarray):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
            out[str(key)] = {"npy": base64.b64encode(buf.getvalue()).decode()}
        else:
            out[str(key)] = {"json": value.item() if isinstance(value, np.generic)
                             else value}
    return out


def write_private_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) so that a crash leaves the old file or the new
    one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def held(data_dir: str | Path, job_id: str) -> tuple[list[dict], list[str]]:
    """The checkpoints this node can resume ``job_id`` from: the transcript's effective
    checkpoint records (the transcript verified, open) whose file is present and matches
    the signed digest; and why any other was refused."""
    from federation.audit.verify import verify
    from federation.transcript import load
    from federation.transcript.restarts import effective
    from federation.transcript.writer import drop_incomplete_tail
    path = transcript_path(data_dir, job_id)
    if not path.exists():
        return [], [f"job {job_id} has no transcript on this node"]
    drop_incomplete_tail(path)
    rep = verify(path)
    bad = [e for e in rep.errors if "the transcript is incomplete" not in e.message]
    if bad:
        return [], [f"the transcript does not verify: {bad[0]}"]
    t = load(path)
    if t.closing is not None:
        return [], [f"the transcript is closed ({t.closing['type']})"]
    _, points = effective(t.records)
    good, refused = [], []
    for p in points:
        f = checkpoint_dir(data_dir, job_id) / f"{p['n']}.json"
        try:
            digest = sha256_hex(f.read_bytes())
        except OSError:
            refused.append(f"checkpoint {p['n']} refused: {f} is missing")
            continue
        if digest != p["file"]:
            refused.append(f"checkpoint {p['n']} refused: {f} does not match the digest "
                           "the transcript signed (the file was changed)")
            continue
        good.append({k: p[k] for k in ("n", "stage", "step", "sent", "received", "file")})
    return good, refused


def is_count(v) -> bool:
    """A checkpoint number or message count as the peer must send it: an int >= 0."""
    return type(v) is int and v >= 0


def choose(mine: list[dict], theirs: list[dict]) -> dict | None:
    """The last checkpoint both hold whose counts mirror each other (what one sent the
    other received, both ways): this side's record of it, or None."""
    peer = {p["n"]: p for p in theirs if isinstance(p, dict) and is_count(p.get("n"))}
    for p in sorted(mine, key=lambda p: p["n"], reverse=True):
        q = peer.get(p["n"])
        if q is not None and (q.get("sent"), q.get("received"), q.get("stage"),
                              q.get("step")) == (p["received"], p["sent"], p["stage"],
                                                 p["step"]):
            return p
    return None


class ResumeLink(Link):
    """The job process's link. Resuming, it first plays the recorded run back up to the
    checkpoint (received messages from the sidecar, sent ones checked against their
    signed digests; nothing crosses), then confirms the checkpoint with the peer
    (``job.resume``) and continues over the live link. Counts every message."""

    def __init__(self, live: Link, data_dir: str | Path, plan: ResumePlan | None):
        self._live, self.plan = live, plan
        self.job_id, self.party, self.peer = live.job_id, live.party, live.peer
        self._upto = {"sent": plan.sent if plan else 0,
                      "received": plan.received if plan else 0}
        self._n = {d: 0 for d in DIRECTIONS}          # live messages
        self._replay = None
        self._confirmed = plan is None
        if plan is not None:
            from federation.audit.replay import ReplayLink
            from federation.transcript import SidecarReader, load, sidecar_path
            path = transcript_path(data_dir, live.job_id)
            self._replay = ReplayLink(load(path), SidecarReader(sidecar_path(path)),
                                      upto=self._upto)

    @property
    def replaying(self) -> bool:
        return self._replay is not None and any(self._replay.remaining(d)
                                                for d in DIRECTIONS)

    def count(self, d: str) -> int:
        """Messages of direction ``d`` behind the pipeline (played back and live)."""
        if self._replay is not None and self._replay.remaining(d):
            return self._replay.reached[d]
        return self._upto[d] + self._n[d]

    def send(self, kind: str, payload: Payload) -> None:
        if self._replay is not None and self._replay.remaining("sent"):
            return self._played(self._replay.send, kind, payload)
        self._go_live()
        self._live.send(kind, payload)
        self._n["sent"] += 1

    def recv(self, kind: str, timeout: float | None = None) -> Payload:
        if self._replay is not None and self._replay.remaining("received"):
            return self._played(self._replay.recv, kind)
        self._go_live()
        out = self._live.recv(kind, timeout) if timeout is not None else \
            self._live.recv(kind)
        self._n["received"] += 1
        return out

    def _played(self, fn, *args):
        from federation.audit.replay import ReplayMismatch
        try:
            return fn(*args)
        except ReplayMismatch as exc:
            raise JobFailed(f"cannot resume: running the job again up to checkpoint "
                            f"{self.plan.checkpoint} did not reproduce its recorded run "
                            f"({exc.finding}); this node's data, node.toml or fedjoint "
                            "changed since the job started") from None

    def _go_live(self) -> None:
        if self._confirmed:
            return
        self._confirmed = True
        p = self.plan
        self._live.send(J.K_RESUME, {"checkpoint": p.checkpoint, "sent": p.sent,
                                     "received": p.received, "file": p.file})
        self._n["sent"] += 1
        theirs = self._live.recv_json(J.K_RESUME)
        self._n["received"] += 1
        if (theirs.get("checkpoint"), theirs.get("sent"), theirs.get("received")) != \
                (p.checkpoint, p.received, p.sent):
            raise ProtocolError(f"{J.K_RESUME}: the peer resumed from checkpoint "
                                f"{theirs.get('checkpoint')!r} ({theirs.get('sent')!r} sent,"
                                f" {theirs.get('received')!r} received), this side from "
                                f"{p.checkpoint} ({p.sent} sent, {p.received} received)")


class Checkpointer:
    """The job process's ``checkpoint(stage, step, state)`` hook (run_job_side)."""

    def __init__(self, link: ResumeLink, data_dir: str | Path, party: str,
                 record: Callable[[dict], None],
                 log: Callable[[str, dict], None] | None = None):
        self.link, self.party, self.record = link, party, record
        self.log = log or (lambda event, fields: None)
        self.dir = checkpoint_dir(data_dir, link.job_id)
        self.n = 0
        self._t0 = time.monotonic()

    def __call__(self, stage: str, step: int, state: dict) -> None:
        self.n += 1
        body = {"format": FORMAT, "v": VERSION, "job_id": self.link.job_id,
                "party": self.party, "n": self.n, "stage": stage, "step": int(step),
                "sent": self.link.count("sent"), "received": self.link.count("received"),
                "state": encode_state(state)}
        data = canonical(body)
        plan = self.link.plan
        path = self.dir / f"{self.n}.json"
        if plan is not None and self.n <= plan.checkpoint:
            if self.n == plan.checkpoint:
                self._check(path, data, plan)
                self.log("resume.caught_up", {
                    "checkpoint": plan.checkpoint, "stage": stage, "step": int(step),
                    "seconds": round(time.monotonic() - self._t0, 3)})
            return
        write_private_atomic(path, data)
        self.record({"n": self.n, "stage": stage, "step": int(step), "sent": body["sent"],
                     "received": body["received"], "file": sha256_hex(data)})

    def _check(self, path: Path, data: bytes, plan: ResumePlan) -> None:
        try:
            stored = path.read_bytes()
        except OSError:
            raise JobFailed(f"cannot resume: checkpoint file {path} is gone") from None
        if sha256_hex(stored) != plan.file:
            raise JobFailed(f"cannot resume: checkpoint file {path} does not match the "
                            "digest the transcript signed (it was changed)")
        if stored != data:
            raise JobFailed(f"cannot resume: the state recomputed at checkpoint "
                            f"{plan.checkpoint} differs from {path}")
