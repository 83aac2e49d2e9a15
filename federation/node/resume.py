"""Resuming an interrupted job: who asks, what the two nodes agree on, what each writes.

A job is ``interrupted`` when it holds at least one checkpoint and its run stopped
without either party failing it (:mod:`federation.node.jobs`): the node was killed (found
at restart), its job process died, or the peer vanished. It resumes automatically when
the node restarts or its job process dies, or by ``fedjoint job resume ID``.

The bank drives every resume, so two nodes never resume one job twice; the platform
asks it to (control request ``job.resume``, phase ``drive``). Driving, over control
requests ``job.resume``:

1. ``query`` {checkpoints}: the platform stops its run of the job if it still runs (the
   party it talked to is gone) and answers with the checkpoints it holds (each file's
   digest checked against its verified transcript, :func:`~federation.node.checkpoint.held`);
2. the bank picks the last checkpoint both hold whose message counts mirror each other
   (:func:`~federation.node.checkpoint.choose`), appends the signed ``restart`` record to
   its transcript and reopens the job's stream at the checkpoint's counts;
3. ``go`` {checkpoint, counts}: the platform checks the counts against its own record of
   that checkpoint, does the same and starts its run; then the bank starts its run.
   Each run plays its recorded run back up to the checkpoint and opens the live stream
   with the declared ``job.resume`` message naming it.

A job that cannot resume (no checkpoint both hold, a transcript or checkpoint that does
not verify) fails on both nodes with a signed abort record (phase ``fail``). A job whose
data, policy or code changed fails when its run does not reproduce the recorded one.
Nothing in these requests is data: checkpoint numbers, message counts and digests.
"""

from __future__ import annotations

import threading
import time

from federation.admin import AdminError
from federation.config.limits import job_id_problem
from federation.jobstore import FINAL, InvalidTransition, JobNotFound
from federation.node.checkpoint import ResumePlan, choose, held, is_count, transcript_path
from federation.node.context import NodeContext, NodePart, one_line
from federation.node.jobs import JobRunner

REQUEST = "job.resume"
RETRY_S = 2.0          # automatic resume: retry while the peer cannot be reached ...
RETRY_FOR_S = 300.0    # ... for this long (then `fedjoint job resume` does it)
REQUEST_TIMEOUT_S = 120.0


class ResumeRefused(Exception):
    """The job cannot resume now; the message says why."""


def _plan(p: dict) -> ResumePlan:
    return ResumePlan(p["n"], p["sent"], p["received"], p["file"])


class Resumer(NodePart):
    """This node's side of resuming jobs (see the module docstring)."""

    def __init__(self, ctx: NodeContext, jobs: JobRunner):
        super().__init__(ctx)
        self.jobs = jobs
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        jobs.on_interrupted = self.resume_later

    # ------------------------------------------------------------------ entry points
    def command(self, job_id: str) -> dict:
        """``fedjoint job resume ID`` (admin API): resume an interrupted job now."""
        problem = job_id_problem(job_id)
        if problem:
            raise AdminError(problem)
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            raise AdminError(f"no job {job_id!r} on {self.cfg.name}") from None
        if rec.state == "done":
            raise AdminError(f"job {job_id} finished (done): nothing to resume")
        if rec.state in FINAL:
            raise AdminError(f"job {job_id} is {rec.state} ({rec.error or 'no reason'}): "
                             "its transcript is closed and it cannot resume")
        if rec.state != "interrupted":
            raise AdminError(f"job {job_id} is {rec.state}, not interrupted: only an "
                             "interrupted job resumes")
        try:
            return self.resume(job_id, "resumed by the operator (fedjoint job resume)")
        except ResumeRefused as exc:
            raise AdminError(f"job {job_id} did not resume: {exc}") from None

    def resume(self, job_id: str, reason: str, stop_live: bool = False) -> dict:
        if self.cfg.party == "bank":
            return self._drive(job_id, reason, stop_live)
        reply = self._ask({"job_id": job_id, "phase": "drive", "reason": reason})
        if not reply.get("ok"):
            raise ResumeRefused(str(reply.get("reason", "the bank did not resume it"))[:500])
        return reply

    def resume_later(self, job_id: str, reason: str) -> None:
        """Resume in the background, retrying while the job is still interrupted here
        (the peer unreachable or busy) for up to :data:`RETRY_FOR_S`."""
        def attempt() -> None:
            deadline = time.monotonic() + RETRY_FOR_S
            while not self.jobs.stopping.is_set():
                try:
                    reply = self.resume(job_id, reason, stop_live=True)
                    if reply.get("ok"):
                        self.log("job.resumed", {"job_id": job_id, **reply})
                        return
                    why = str(reply.get("reason", ""))
                except Exception as exc:  # noqa: BLE001 - refused, or the peer unreachable
                    why = one_line(exc)
                try:
                    still = self.store.get(job_id).state == "interrupted"
                except JobNotFound:
                    still = False
                if not still or time.monotonic() > deadline:
                    self.log("job.not_resumed", {"job_id": job_id, "why": why},
                             level="warning")
                    return
                self.log("job.resume_retry", {"job_id": job_id, "why": why})
                self.jobs.stopping.wait(RETRY_S)
        threading.Thread(target=attempt, daemon=True, name=f"resume-{job_id}").start()

    # ------------------------------------------------------------------ the bank drives
    def _drive(self, job_id: str, reason: str, stop_live: bool) -> dict:
        with self._lock:
            if job_id in self._busy:
                return {"ok": False, "reason": f"{self.cfg.name} is already resuming it"}
            self._busy.add(job_id)
        try:
            if stop_live:
                self.jobs.stop_live(job_id, reason)
            if self.store.get(job_id).state != "interrupted":
                raise ResumeRefused(f"job {job_id} is {self.store.get(job_id).state} on "
                                    f"{self.cfg.name}")
            try:
                mine = self._held(job_id)
            except ResumeRefused as exc:
                self._tell_fail(job_id, f"cannot resume: {exc}")
                raise
            reply = self._ask({"job_id": job_id, "phase": "query", "checkpoints": mine})
            if reply.get("ok") is not True:
                why = f"{self.cfg.peer.name}: {str(reply.get('reason', ''))[:500]}"
                if reply.get("final"):
                    self._close(job_id, f"cannot resume: {why}")
                raise ResumeRefused(why)
            theirs = reply.get("checkpoints")
            theirs = theirs if isinstance(theirs, list) else []
            point = choose(mine, theirs)
            if point is None:
                why = (f"cannot resume: no checkpoint both parties hold (here "
                       f"{[p['n'] for p in mine]}, at {self.cfg.peer.name} "
                       f"{[p.get('n') for p in theirs if isinstance(p, dict)][:20]})")
                self._tell_fail(job_id, why)
                raise ResumeRefused(why)
            plan = _plan(point)
            self.jobs.prepare_resume(job_id, plan, reason)
            try:
                reply = self._ask({"job_id": job_id, "phase": "go",
                                   "checkpoint": plan.checkpoint, "sent": plan.received,
                                   "received": plan.sent})
            except Exception:
                self.jobs.abandon_resume(job_id)    # interrupted again: a retry resumes
                raise
            if reply.get("ok") is not True:
                why = f"{self.cfg.peer.name}: {str(reply.get('reason', ''))[:500]}"
                self._close(job_id, f"cannot resume: {why}")
                raise ResumeRefused(why)
            self.jobs.launch(job_id, plan)
            return {"ok": True, "job_id": job_id, "checkpoint": plan.checkpoint,
                    "stage": point["stage"], "step": point["step"]}
        finally:
            with self._lock:
                self._busy.discard(job_id)

    # ------------------------------------------------------------------ the peer asks
    def on_request(self, body: dict) -> dict:
        try:
            return self._on_request(body)
        except Exception as exc:  # noqa: BLE001 - answered, and logged with its traceback
            import traceback
            self.log("job.resume_error", {"job_id": str(body.get("job_id", ""))[:80],
                                          "traceback": traceback.format_exc(limit=8)},
                     level="error")
            return {"ok": False, "reason": f"internal error on {self.cfg.name}: "
                                           f"{type(exc).__name__}: {one_line(exc)}"}

    def _on_request(self, body: dict) -> dict:
        job_id = str(body.get("job_id", ""))
        problem = job_id_problem(job_id)
        if problem:
            return {"ok": False, "final": True, "reason": problem}
        phase = body.get("phase")
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return {"ok": False, "final": True,
                    "reason": f"job {job_id} is not known to {self.cfg.name}"}
        try:
            if phase == "drive" and self.cfg.party == "bank":
                return self._drive(job_id, f"{self.cfg.peer.name} asked: "
                                   f"{str(body.get('reason', ''))[:200]}", stop_live=True)
            if self.cfg.party != "platform" or phase not in ("query", "go", "fail"):
                return {"ok": False, "reason": f"unexpected {REQUEST} phase {phase!r}"}
            if phase == "fail":
                self._close(job_id, str(body.get("reason", "cannot resume"))[:500])
                return {"ok": True}
            if phase == "query":
                self.jobs.stop_live(job_id, f"{self.cfg.peer.name} is resuming the job")
                rec = self.store.get(job_id)
            if rec.state != "interrupted":
                return {"ok": False, "final": rec.state in FINAL,
                        "reason": f"job {job_id} is {rec.state} on {self.cfg.name}"}
            mine = self._held(job_id)
            if phase == "query":
                return {"ok": True, "checkpoints": mine}
            return self._go(job_id, body, mine)
        except ResumeRefused as exc:
            return {"ok": False, "final": True, "reason": str(exc)}

    def _go(self, job_id: str, body: dict, mine: list[dict]) -> dict:
        named = [body.get(k) for k in ("checkpoint", "sent", "received")]
        point = next((p for p in mine if p["n"] == named[0]), None) \
            if all(is_count(v) for v in named) else None
        if point is None or (point["sent"], point["received"]) != tuple(named[1:]):
            why = (f"checkpoint {body.get('checkpoint')!r} with the counts "
                   f"{self.cfg.peer.name} names is not one {self.cfg.name} holds")
            self._close(job_id, f"cannot resume: {why}")
            return {"ok": False, "reason": why}
        plan = _plan(point)
        self.jobs.prepare_resume(job_id, plan, f"{self.cfg.peer.name} resumed the job "
                                 f"from checkpoint {plan.checkpoint}")
        self.jobs.launch(job_id, plan)
        return {"ok": True}

    # ------------------------------------------------------------------ helpers
    def _ask(self, body: dict) -> dict:
        reply = self.channel.request(REQUEST, body, timeout=REQUEST_TIMEOUT_S)
        return reply if isinstance(reply, dict) else {}

    def _held(self, job_id: str) -> list[dict]:
        """This node's usable checkpoints; none: the job is closed as failed here."""
        good, refused = held(self.data_dir, job_id)
        for why in refused:
            self.log("checkpoint.refused", {"job_id": job_id, "why": why}, level="warning")
        if not good:
            why = "; ".join(refused) or "no checkpoint"
            self._close(job_id, f"cannot resume: {why} on {self.cfg.name}")
            raise ResumeRefused(f"{why} on {self.cfg.name}")
        return good

    def _tell_fail(self, job_id: str, why: str) -> None:
        try:
            self._ask({"job_id": job_id, "phase": "fail", "reason": why})
        except Exception:  # noqa: BLE001 - the peer closes it when it asks next time
            pass
        self._close(job_id, why)

    def _close(self, job_id: str, reason: str) -> None:
        """Fail the job here and close its transcript with a signed abort record."""
        from federation import transcript
        reason = reason[:500]     # may quote the peer's reply
        try:
            self.store.transition(job_id, "failed", reason)
        except (InvalidTransition, JobNotFound):
            return
        path = transcript_path(self.data_dir, job_id)
        if path.exists():
            transcript.close_interrupted(path, self.channel.local.signing_key, reason)
        self.log("job.failed", {"job_id": job_id, "reason": reason}, level="warning")
