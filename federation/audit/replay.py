"""Replay one party's side of a job and compare it with the signed transcript.

The party's pipeline runs again from its own data, keys and per-job seed over a
:class:`ReplayLink`, which feeds it the recorded received payloads (from the sidecar,
checked against the signed digests) and checks every message it sends against the
recorded digest; the final model part must match the signed outcome digest.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.audit.findings import (
    EXIT_CANNOT_RUN,
    EXIT_FAILED,
    EXIT_OK,
    CannotRun,
    Finding,
    Report,
)
from federation.audit.pins import load_signing_public_hex, pins_from_cli
from federation.audit.show import timeline
from federation.audit.verify import verify
from federation.link import Link, Payload, decode_payload, encode_payload
from federation.transcript import (
    DIRECTIONS,
    NOT_REPLAYED,
    SidecarReader,
    Transcript,
    TranscriptError,
    TranscriptUnreadable,
    fingerprint,
    load,
    sidecar_path,
)
from federation.transcript.restarts import effective


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
    messages in ``NOT_REPLAYED`` (``job.outcome``, ``job.resume``) are skipped, and so
    are the messages a restart record discarded. The first divergence raises
    :class:`ReplayMismatch` naming the record and is kept in :attr:`mismatch`.
    """

    def __init__(self, t: Transcript, sidecar: SidecarReader,
                 upto: dict[str, int] | None = None):
        """``upto``: play only the first so many effective sent / received messages (a
        resumed job's run up to its checkpoint, :mod:`federation.node.checkpoint`)."""
        self.job_id, self.party, self.peer = t.job_id, t.party, t.peer
        self._where = t.path.name
        self._sidecar = sidecar
        msgs, _ = effective(t.records)    # a resumed job's restarts applied
        played = {d: [(k, i, r) for k, (i, r) in enumerate(msgs[d][:(upto or {}).get(d)])
                      if r.get("kind") not in NOT_REPLAYED] for d in DIRECTIONS}
        self._queues = {d: [(i, r) for _, i, r in played[d]] for d in DIRECTIONS}
        self._effective_at = {d: [k for k, _, _ in played[d]] for d in DIRECTIONS}
        self._pos = {d: 0 for d in DIRECTIONS}
        #: per direction, how many effective messages (played or skipped) are behind
        self.reached = {d: 0 for d in DIRECTIONS}
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
        self.reached[d] = self._effective_at[d][k] + 1
        return q[k]

    def remaining(self, d: str) -> int:
        """Recorded ``d`` messages not played yet."""
        return len(self._queues[d]) - self._pos[d]

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
class ReplayReport(Report):
    party: str = ""
    job_id: str = ""
    model_digest: str | None = None       # of the replayed model part
    signed_digest: str | None = None      # from the transcript's outcome record
    timeline: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"ok": self.ok, "exit_code": self.exit_code, "party": self.party,
                "job_id": self.job_id, "errors": self.errors_json(), "warnings": self.warnings,
                "model_digest": self.model_digest,
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


def _protocol_mismatch(t, side: ReplaySide) -> str:
    """Why this fedjoint cannot replay the job (other protocol versions), or ""."""
    from federation import runner

    recorded = t.header.get("protocols") or {}
    if not recorded:
        return ""
    spec = side.spec
    current = runner.protocol_versions(spec.algorithm, getattr(spec, "train_algorithm", ""),
                                       getattr(spec, "stages", None))
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
            pinned_keys = pins_from_cli((), str(find_node_config(party_dir, t.party)))
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
        storage = t.header.get("storage")
        keep = storage.get("keep") if isinstance(storage, dict) else None
        sidecar = SidecarReader(sidecar_path(t.path), keep=str(keep) if keep else None)
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
