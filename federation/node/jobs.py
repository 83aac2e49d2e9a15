"""Running one job on this node: its runner thread, state transitions, transcript
writer, and what it leaves behind (model part, PSI rows, scores, stored metrics).

A job that holds a checkpoint and whose run stops without either party failing it (the
peer vanished, this node's job process died, the peer's resume stopped it) becomes
``interrupted`` instead of failed; :mod:`federation.node.resume` resumes it.

The job runner also keeps the registry of this node's live jobs (runner and proposal
threads, their links, cancellation marks) that the control plane consults when the
peer or the operator aborts or cancels a job, and that the daemon drains on stop.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from federation.admin import write_private
from federation.config import ConfigError, JobSpec, job_spec_from_dict
from federation.config.limits import job_id_problem
from federation.data import DataError
from federation.jobstore import InvalidTransition, JobNotFound
from federation.link import PeerAborted, PeerGone, ProtocolError
from federation.node.checkpoint import ResumePlan, held, transcript_path
from federation.node.compute import JobProcessDied, run_job_process
from federation.node.context import NodeContext, NodePart, one_line
from federation.runner import JobFailed, JobResult, model_path, protocol_versions

SEED_BYTES = 32
#: the reason a job that was running (or waiting for a slot) when the node was stopped
#: fails with, in its record and its transcript's signed abort record
NODE_STOPPED = "the node stopped while the job ran"
_STAGE_STATE = {"psi": "psi", "training": "training", "evaluating": "evaluating",
                "scoring": "scoring"}


class JobRunner(NodePart):
    """This node's live jobs and the thread that runs each one."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        self._jobs: dict[str, dict] = {}          # job_id -> {"thread", "link", ...}
        self._writers: dict = {}                  # job_id -> TranscriptWriter
        self._lock = threading.RLock()
        self._slots = threading.BoundedSemaphore(self.cfg.policy.max_concurrent_jobs)
        self.stopping = threading.Event()
        #: called with (job_id, reason) when this node's own job process died and the
        #: job was interrupted (the resumer asks for a resume)
        self.on_interrupted = None

    # ------------------------------------------------------------------ registry
    def track(self, job_id: str, info: dict) -> None:
        with self._lock:
            self._jobs[job_id] = info

    def untrack(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def mark(self, job_id: str, key: str, value) -> dict | None:
        """Set ``key`` on a live job's entry; the entry, or None if the job is not live."""
        with self._lock:
            info = self._jobs.get(job_id)
            if info is not None:
                info[key] = value
        return info

    def recover(self) -> list[str]:
        """Jobs that were running when the node stopped: those holding a checkpoint are
        ``interrupted`` (returned: they resume); the others cannot continue: fail them,
        and close their transcripts with a signed abort record (they verify as failed,
        not incomplete)."""
        from federation import transcript
        from federation.keys import load_signing_key
        reason = "interrupted: the node restarted while the job ran"
        key = None
        resumable = []
        for rec in self.store.active():
            if rec.state in ("training", "evaluating", "interrupted") and \
                    held(self.data_dir, rec.job_id)[0]:
                if rec.state != "interrupted":
                    self.store.transition(rec.job_id, "interrupted", reason)
                self.log("job.interrupted", {"job_id": rec.job_id, "reason": reason})
                resumable.append(rec.job_id)
                continue
            try:
                self.store.transition(rec.job_id, "failed", reason)
            except InvalidTransition:
                continue
            path = self.data_dir / "transcripts" / f"{rec.job_id}.jsonl"
            if path.exists():
                key = key or load_signing_key(self.cfg.keys.signing_key)
                if transcript.close_interrupted(path, key, reason):
                    self.log("transcript.closed", {"job_id": rec.job_id, "reason": reason})
        return resumable

    def close_all(self, reason: str, timeout: float) -> None:
        """Stop every live job's runner and wait for the threads, ``timeout`` seconds in
        all. With ``stopping`` set (SIGTERM), a job holding a checkpoint is
        ``interrupted`` (its link fails without telling the peer, its transcript stays
        open; the restarted node resumes it); any other fails with
        :data:`NODE_STOPPED`, the peer told."""
        with self._lock:
            running = list(self._jobs.items())
        for job_id, info in running:
            link = info.get("link")
            if info.get("checkpointed") and self.stopping.is_set() and \
                    hasattr(link, "interrupt"):
                link.interrupt(reason)
            else:
                self.close_link(job_id, info, reason)
        deadline = time.monotonic() + timeout
        for _job_id, info in running:
            t = info.get("thread")
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    def recorder_for(self, job_id: str):
        """The channel asks for the job's recorder when the job's link is created
        (locally or by the peer's first message): the job's transcript writer."""
        problem = job_id_problem(job_id)
        if problem:
            raise ValueError(problem)
        with self._lock:
            w = self._writers.get(job_id)
            if w is None:
                rec = self.store.get(job_id)
                spec = job_spec_from_dict(rec.spec, f"job {job_id}")
                w = self._transcript_writer(job_id, spec)
                self._writers[job_id] = w
            return w

    # ------------------------------------------------------------------ running
    def launch(self, job_id: str, plan: ResumePlan | None = None) -> None:
        """Start the job's run; ``plan``: resume it from that checkpoint (after
        :meth:`prepare_resume`), with the job's seed from the vault."""
        problem = job_id_problem(job_id)    # the id names the seed and transcript files
        if problem:
            raise ValueError(problem)
        seed_file = self.data_dir / "vault" / f"{job_id}.seed"
        if plan is None:
            seed = os.urandom(SEED_BYTES)
            write_private(seed_file, seed)
        else:
            seed = seed_file.read_bytes()
        t = threading.Thread(target=self._run, args=(job_id, seed, plan), daemon=True,
                             name=f"job-{job_id}")
        self.track(job_id, {"thread": t, "cancelled": False,
                            "checkpointed": plan is not None})
        t.start()

    def prepare_resume(self, job_id: str, plan: ResumePlan, reason: str) -> None:
        """Reopen the job's transcript with the signed restart record and its channel
        stream at the checkpoint's counts; the job is ``training`` again."""
        from federation import transcript
        self.channel.expect_resume(job_id, plan.sent, plan.received)
        with self._lock:
            self._writers[job_id] = transcript.TranscriptWriter.reopen(
                transcript_path(self.data_dir, job_id), self.channel.local.signing_key,
                plan.checkpoint, reason)
        self.store.transition(job_id, "training")
        self.log("job.resuming", {"job_id": job_id, "checkpoint": plan.checkpoint,
                                  "reason": reason})

    def abandon_resume(self, job_id: str) -> None:
        """Undo :meth:`prepare_resume` for a run that did not start (the peer could not
        be told): the job is ``interrupted`` again; its restart record stays, and the
        next resume appends another."""
        with self._lock:
            w = self._writers.pop(job_id, None)
        if w is not None:
            w.suspend()
        try:
            self.store.transition(job_id, "interrupted", "the resume did not start")
        except (InvalidTransition, JobNotFound):
            pass

    def stop_live(self, job_id: str, reason: str, timeout: float = 30.0) -> None:
        """Stop the job's run if it is running here, so that it ends ``interrupted``
        (the peer is resuming it); waits for its runner thread."""
        info = self.mark(job_id, "interrupt", reason)
        if info is None:
            return
        link = info.get("link")
        if link is not None and hasattr(link, "interrupt"):
            link.interrupt(reason)
        t = info.get("thread")
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self, job_id: str, seed: bytes, plan: ResumePlan | None = None) -> None:
        rec = self.store.get(job_id)
        spec = job_spec_from_dict(rec.spec, f"job {job_id}")
        writer = None
        link = None
        info = self._jobs.get(job_id, {})
        with self._slots:
            if info.get("cancelled"):
                return
            if self.stopping.is_set():
                self.fail(job_id, "the node stopped before the job started", notify=False)
                with self._lock:
                    self._jobs.pop(job_id, None)
                return
            try:
                writer = self.recorder_for(job_id)
                link = self.channel.link(job_id)
                info["link"], info["writer"] = link, writer
                self.log("job.started", {"job_id": job_id, "algorithm": spec.algorithm})

                def on_stage(stage: str) -> None:
                    state = _STAGE_STATE.get(stage)
                    if state:
                        self.store.transition(job_id, state)
                        self.log("job.stage", {"job_id": job_id, "stage": stage})

                last = [0.0]

                def progress(step: str, frac: float) -> None:
                    now = time.monotonic()
                    if now - last[0] < 0.5 and frac < 1.0:
                        return
                    last[0] = now
                    self.store.update(job_id, progress={"step": step,
                                                        "fraction": round(float(frac), 4)})

                def plog(event: str, fields: dict) -> None:
                    self.log(event, {"job_id": job_id, **(fields or {})})
                    self.store.event(job_id, event, fields or {})

                def on_checkpoint(record: dict) -> None:
                    writer.checkpoint(**record)
                    info["checkpointed"] = True

                # the pipeline computes in its own process; this thread relays
                result = run_job_process(
                    rec.spec, self.cfg, link, seed, progress=progress, log=plog,
                    on_stage=on_stage, on_checkpoint=on_checkpoint,
                    resume=plan.to_dict() if plan is not None else None,
                    should_stop=lambda: bool(info.get("cancelled") or info.get("interrupt"))
                    or self.stopping.is_set())
                self._finish(job_id, spec, result, link, writer)
            except BaseException as exc:  # noqa: BLE001 - every failure ends the job
                self._job_error(job_id, exc, writer)
            finally:
                if link is not None:
                    try:
                        link.close(timeout=5.0)
                    except Exception:  # noqa: BLE001
                        pass
                with self._lock:
                    self._jobs.pop(job_id, None)
                    self._writers.pop(job_id, None)
                self.apply_retention(job_id)

    def _transcript_writer(self, job_id: str, spec: JobSpec):
        from federation import transcript
        names = {self.cfg.name: self.cfg.party, self.cfg.peer.name: self.cfg.peer_party}
        return transcript.TranscriptWriter.create(
            self.data_dir / "transcripts" / f"{job_id}.jsonl", job_id=job_id,
            party=self.cfg.name, peer=self.cfg.peer.name,
            signing_key=self.channel.local.signing_key,
            peer_public_key=self.channel.peer.signing_public_key, spec=spec.to_dict(),
            protocols=protocol_versions(spec.algorithm, spec.train_algorithm, spec.stages),
            key_sizes={"paillier": spec.evaluation.key_bits,
                       "cipher": spec.evaluation.cipher}, roles=names,
            keep_received=self.cfg.transcript.keep_received)

    def apply_retention(self, job_id: str | None = None) -> None:
        """[transcript] keep_received: drop the closed job's sidecar (``digests``) and
        prune closed jobs' sidecars past their age (``days:N``); open transcripts (a
        running or resumable job) keep theirs."""
        from federation import transcript
        keep = self.cfg.transcript.keep_received
        tdir = self.data_dir / "transcripts"
        try:
            removed = transcript.prune(tdir, keep)
            if job_id is not None and \
                    transcript.drop_after_close(tdir / f"{job_id}.jsonl", keep):
                removed.append(job_id)
        except OSError as exc:
            self.log("transcript.prune_failed", {"keep_received": keep, "error": str(exc)})
            return
        if removed:
            self.log("transcript.pruned", {"keep_received": keep, "sidecars": len(removed)})
        if job_id is None:       # node start: say which sidecars the policy may not delete
            for side in transcript.kept_open(tdir, keep):
                self.log("transcript.retention_refused", {
                    "job_id": side.with_suffix("").stem, "keep_received": keep,
                    "why": "its transcript is open: the job may resume from a checkpoint, "
                           "and resuming replays the payloads it received"})

    def _finish(self, job_id: str, spec: JobSpec, result: JobResult, link, writer) -> None:
        from federation import transcript
        jobdir = self.data_dir / "jobs" / job_id
        jobdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        requested = self.store.get(job_id).artifacts.get("requested_output", "")
        artifacts: dict = {"transcript": str(writer.path) if writer else ""}
        if result.model is not None:
            path = model_path(self.cfg, job_id)
            result.model.save(path)
            artifacts["model"] = str(path)
        for st in result.stages or []:     # a pipeline: each stage's output, by name
            st["path"] = str(model_path(self.cfg, f"{job_id}.{st['name']}"))
            st["model"].save(st["path"])
            artifacts.setdefault("models", {})[st["name"]] = st["path"]
        if result.psi_rows is not None and result.psi_rows.size:
            buf = io.BytesIO()
            np.save(buf, result.psi_rows.astype(np.int64), allow_pickle=False)
            write_private(jobdir / "intersection_rows.npy", buf.getvalue())
            artifacts["intersection_rows"] = str(jobdir / "intersection_rows.npy")
        if result.test_scores is not None:
            write_private(jobdir / "test_scores.json",
                          json.dumps(result.test_scores).encode())
            artifacts["test_scores"] = str(jobdir / "test_scores.json")
        if result.scores is not None:
            out = Path(requested) if requested else jobdir / "scores.csv"
            artifacts["scores"] = str(write_scores(out, result.scores))
        if writer is not None:
            transcript.exchange_outcome(link, writer, result.model_digest or "")
            self.apply_retention(job_id)       # before "done": a done job's sidecar is final
        if result.model is not None:
            self.store.add_model(job_id, job_id, result.model.algorithm,
                                 artifacts["model"], result.model_digest,
                                 result.peer_model_digest, metrics=result.metrics,
                                 feature_names=result.model.feature_names)
        for st in result.stages or []:
            self.store.add_model(f"{job_id}.{st['name']}", job_id, st["model"].algorithm,
                                 st["path"], st["model_digest"], st["peer_model_digest"],
                                 metrics=_jsonable(st["metrics"]),
                                 feature_names=st["model"].feature_names)
        self.store.update(job_id, metrics=_jsonable(result.metrics), history=result.history,
                          timings=result.timings, artifacts=artifacts,
                          progress={"step": "done", "fraction": 1.0},
                          checkpoint={"psi": result.psi_info,
                                      "model_digest": result.model_digest,
                                      "peer_model_digest": result.peer_model_digest})
        self.store.transition(job_id, "done")
        self.log("job.done", {"job_id": job_id, "intersection": result.intersection,
                              "seconds": round(result.timings.get("total", 0.0), 3)})

    # ------------------------------------------------------------------ failing
    def _job_error(self, job_id: str, exc: BaseException, writer) -> None:
        info = self._jobs.get(job_id, {})
        if info.get("cancelled"):
            if writer is not None:
                writer.abort("cancelled")
            return
        if self._interrupts(job_id, exc, info, writer):
            return
        peer_reason = ""
        if isinstance(exc, JobFailed):
            reason = str(exc)
            peer_reason = exc.peer_message or reason
        elif isinstance(exc, PeerGone):
            reason = f"lost contact with {self.cfg.peer.name} ({self.cfg.peer.address}) " \
                     f"during the job: {one_line(exc)}"
        elif isinstance(exc, ProtocolError):
            reason = f"protocol error: {one_line(exc)}"
            peer_reason = f"{self.cfg.name} rejected a message: {one_line(exc)}"
        elif isinstance(exc, (DataError, ConfigError)):
            reason = one_line(exc)
            peer_reason = f"{self.cfg.name} could not load its data (see its log)"
        else:
            reason = f"internal error: {type(exc).__name__}: {one_line(exc)}"
            peer_reason = f"internal error on {self.cfg.name} (see its log)"
            tb = getattr(exc, "child_traceback", None) or traceback.format_exc(limit=8)
            self.log("job.traceback", {"job_id": job_id, "traceback": tb}, level="error")
        if info.get("interrupt"):    # stopped for a resume, but nothing to resume from
            reason, peer_reason = str(info["interrupt"]), ""
        remote = self._jobs.get(job_id, {}).get("remote_reason")
        if remote and isinstance(exc, (PeerGone, ProtocolError)):
            reason = remote
            peer_reason = ""
        elif self.stopping.is_set():   # whatever the stop made the job raise
            reason = f"{NODE_STOPPED} ({self.cfg.name} was shut down)"
            peer_reason = ""       # the aborted link told the peer; no request that
            # could wait for a peer that is gone while the node shuts down
        if writer is not None:
            try:
                writer.abort(reason)
            except Exception:  # noqa: BLE001
                pass
        self.fail(job_id, reason, notify=bool(peer_reason) and not remote,
                  peer_reason=peer_reason)

    def _interrupts(self, job_id: str, exc: BaseException, info: dict, writer) -> bool:
        """Make the job ``interrupted`` instead of failed if it holds a checkpoint and
        its run stopped without either party failing it: the peer vanished or closed
        the stream, this node's job process died, a resume stopped it, or the node is
        stopping (SIGTERM)."""
        forced = info.get("interrupt")
        if not info.get("checkpointed"):
            return False
        stopped = self.stopping.is_set()
        if stopped and not isinstance(exc, PeerAborted) and not info.get("remote_reason"):
            # SIGTERM: resumable when the node starts again (close_all)
            forced = forced or f"interrupted: {self.cfg.name} was stopped while the job ran"
        lost = isinstance(exc, (PeerGone, ProtocolError, JobProcessDied)) and \
            not isinstance(exc, PeerAborted) and not info.get("remote_reason")
        if not (forced or lost):
            return False
        reason = str(forced or f"interrupted: {one_line(exc)}")
        try:
            self.store.transition(job_id, "interrupted", reason)
        except (InvalidTransition, JobNotFound):
            return False
        if writer is not None:
            writer.suspend()
        self.log("job.interrupted", {"job_id": job_id, "reason": reason}, level="warning")
        if isinstance(exc, JobProcessDied) and not forced and not stopped and \
                self.on_interrupted:
            self.on_interrupted(job_id, f"the job's process died ({one_line(exc)})")
        return True

    def fail(self, job_id: str, reason: str, *, notify: bool, peer_reason: str = "") -> None:
        try:
            self.store.transition(job_id, "failed", reason)
        except (InvalidTransition, JobNotFound):
            return
        self.log("job.failed", {"job_id": job_id, "reason": reason}, level="warning")
        if notify and self.channel is not None:
            try:
                self.channel.request("job.abort", {"job_id": job_id,
                                                   "reason": peer_reason or reason})
            except Exception:  # noqa: BLE001 - the peer may be gone; that's fine
                pass

    def close_link(self, job_id: str, info: dict, reason: str) -> None:
        """Make the job's runner thread stop: fail its link (the peer is told)."""
        link = info.get("link")
        if link is not None:
            try:
                link.abort(reason)
            except Exception:  # noqa: BLE001
                pass


def write_scores(path: Path, scores: dict) -> Path:
    """The bank's scoring output (mode 0600): ``id,score`` per scored row (then the
    model's extra columns, e.g. a scorecard's ``points,platform_points,reason_1..``), or for a
    multiclass model ``id,class,p_<class>...`` (the predicted class, then each class's
    probability in the model's class order)."""
    if "classes" in scores:
        head = ",".join(["id", "class"] + [f"p_{c}" for c in scores["classes"]])
        lines = [head] + [",".join([str(i), str(c)] + [f"{v:.6f}" for v in row])
                          for i, c, row in zip(scores["ids"], scores["pred"], scores["p"],
                                               strict=True)]
    else:
        extra = scores.get("columns") or {}   # e.g. points, reason_1.. of a scorecard
        lines = [",".join(["id", "score", *extra])] + [
            ",".join([str(i), f"{v:.6f}", *(_cell(col[r]) for col in extra.values())])
            for r, (i, v) in enumerate(zip(scores["ids"], scores["p"], strict=True))]
    write_private(Path(path), ("\n".join(lines) + "\n").encode())
    return Path(path)


def _cell(v) -> str:
    """One extra scoring column's cell: numbers to 6 decimals, text quoted if needed."""
    if isinstance(v, float):
        return f"{v:.6f}"
    text = str(v)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))
