"""The control plane: jobs proposed to and by the peer, this node's policy check,
approval (automatic or by the platform's operator), abort and cancel.

Everything here answers or sends a control request ("job.propose", "job.decision",
"job.abort", "job.cancel", "node.hello"; the job flow is in the package docstring) and
hands approved jobs to the job runner. The peer may open job streams only for jobs
this node agreed to (:meth:`ControlPlane.job_filter`).

A job id from the peer is checked (:func:`~federation.config.limits.job_id_problem`, the
channel's own definition) before anything is logged, stored or written for it. On the
platform, ``limits.max_peer_proposals_per_minute`` and ``limits.max_peer_jobs`` are
checked before a proposal's spec is read: a refused proposal leaves no store row, seed
file, transcript or thread behind.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

from federation.admin import AdminError
from federation.channel.settings import PeerUnreachable
from federation.config import ConfigError, JobSpec, job_spec_from_dict
from federation.config.limits import job_id_problem
from federation.data import DataError
from federation.jobstore import FINAL, InvalidTransition, JobNotFound
from federation.node.context import NodeContext, NodePart, one_line
from federation.node.jobs import JobRunner
from federation.policy import NOT_OFFERED, feature_refusal, features_not_offered, policy_refusal

#: pauses (s) before the bank proposes a job again when the platform was unreachable
PROPOSE_RETRIES = (0.5, 1.5, 4.0)
POLICY_REFUSAL = "refused by this node's policy: "


def _canonical(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


class ControlPlane(NodePart):
    """This node's answers to the peer's control requests, and its own requests."""

    def __init__(self, ctx: NodeContext, jobs: JobRunner):
        super().__init__(ctx)
        self.jobs = jobs
        # proposals are decided one at a time: the per-peer limits are checked and the
        # job stored (or refused) atomically
        self._propose_lock = threading.Lock()
        self._clock = time.monotonic
        lim = self.cfg.limits
        self._tokens = float(lim.max_peer_proposals_per_minute)   # token bucket
        self._tokens_at = self._clock()

    def requests(self) -> dict:
        """The control requests this node answers: name -> handler(body) -> reply."""
        return {"job.propose": self._on_propose, "job.decision": self._on_decision,
                "job.abort": self._on_abort, "job.cancel": self._on_cancel,
                "node.hello": self._on_hello}

    def job_filter(self, job_id: str):
        """The peer may only open streams for jobs this node agreed to (or proposed)."""
        problem = job_id_problem(job_id)
        if problem:
            return problem
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return f"job {job_id} is not known to {self.cfg.name}"
        if rec.job_id != job_id or rec.state in FINAL:
            return f"job {job_id} is {rec.state} on {self.cfg.name}"
        if rec.role == "platform" and rec.state == "submitted":
            return f"job {job_id} is not approved on {self.cfg.name}"
        if rec.state == "interrupted":     # its stream reopens only once it resumes
            return f"job {job_id} is interrupted on {self.cfg.name} (it resumes from a " \
                   "checkpoint)"
        return True

    # ------------------------------------------------------------------ submit (bank)
    def submit(self, spec_dict: dict, source: str = "job.toml") -> dict:
        if self.cfg.party != "bank":
            raise AdminError("jobs are submitted at the bank's node; this node is the "
                             "platform (it approves or refuses proposals)")
        try:
            spec = job_spec_from_dict(spec_dict, source)
        except ConfigError as exc:
            raise AdminError(str(exc)) from None
        if spec.algorithm == "score":
            try:
                m = self.store.model(spec.model)
            except KeyError as exc:
                raise AdminError(str(exc.args[0])) from None
            spec.model = m["model_id"]
            spec.train_algorithm = m["algorithm"]
        reason = policy_refusal(spec, self.cfg)
        if reason:
            raise AdminError(f"refused by this node's policy: {reason}")
        reason = self._inputs_refusal(spec)
        if reason:
            raise AdminError(f"job {spec.name!r}: {reason} (see `fedjoint model list`)")
        try:
            ds = self.cfg.dataset(spec.dataset)
        except ConfigError as exc:
            raise AdminError(str(exc)) from None
        if not Path(ds.path).is_file():
            raise AdminError(f"{self.cfg.file}: datasets.{ds.name}.path: {ds.path} does not "
                             "exist (fix the path in node.toml and restart the node)")
        reason = feature_refusal(spec, self.cfg)   # the bank's own columns: named here
        if reason:
            raise AdminError(f"job {spec.name!r}: {reason}")
        job_id = f"{spec.name}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-" \
                 f"{secrets.token_hex(3)}"
        # where the bank writes scores is its own business: kept out of the agreed spec
        output, spec.output = spec.output, ""
        self.store.create(job_id, spec.name, spec.algorithm, "bank", spec.to_dict())
        if output:
            self.store.update(job_id, artifacts={"requested_output": output})
        self.log("job.submitted", {"job_id": job_id, "algorithm": spec.algorithm})
        t = threading.Thread(target=self._propose, args=(job_id, spec), daemon=True,
                             name=f"propose-{job_id}")
        self.jobs.track(job_id, {"thread": t})
        t.start()
        return {"job_id": job_id}

    def _propose(self, job_id: str, spec: JobSpec) -> None:
        body = {"job_id": job_id, "spec": spec.to_dict(), "from": self.cfg.name}
        for attempt, pause in enumerate(PROPOSE_RETRIES + (None,)):
            try:
                reply = self.channel.request("job.propose", body)
                break
            except PeerUnreachable as exc:   # a dropped connection: the platform answers
                if pause is None:            # a repeated proposal as it answered the first
                    return self._propose_failed(job_id, exc)
                self.log("job.propose_retry", {"job_id": job_id, "attempt": attempt + 1,
                                               "error": one_line(exc)}, level="warning")
                time.sleep(pause)
            except Exception as exc:  # noqa: BLE001 - reported on the job
                return self._propose_failed(job_id, exc)
        decision = reply.get("decision")
        if decision == "accept":
            self._approved(job_id)
        elif decision == "pending":
            self.store.event(job_id, "awaiting_approval",
                             {"message": f"{self.cfg.peer.name} requires manual approval; "
                                         "waiting for its operator"})
            self.log("job.awaiting_approval", {"job_id": job_id})
            self.jobs.untrack(job_id)
        else:
            reason = str(reply.get("reason") or "no reason given")[:500]
            self.jobs.fail(job_id, f"refused by {self.cfg.peer.name}'s policy: {reason}",
                           notify=False)

    def _propose_failed(self, job_id: str, exc: Exception) -> None:
        self.jobs.fail(job_id, f"could not propose the job to {self.cfg.peer.name} at "
                       f"{self.cfg.peer.address}: {one_line(exc)}", notify=False)

    def _approved(self, job_id: str) -> None:
        try:
            self.store.transition(job_id, "approved")
        except (InvalidTransition, JobNotFound) as exc:
            self.log("job.not_started", {"job_id": job_id, "why": str(exc)})
            return
        self.jobs.launch(job_id)

    # ------------------------------------------------------------------ platform side
    def _peer_limit(self) -> str:
        """Why one more proposal from the peer is over a per-peer limit, or "". The rate
        is a token bucket: a burst of ``max_peer_proposals_per_minute``, then one every
        60 / that many seconds. Called with ``_propose_lock`` held."""
        lim = self.cfg.limits
        rate = lim.max_peer_proposals_per_minute
        now = self._clock()
        self._tokens = min(float(rate), self._tokens + (now - self._tokens_at) * rate / 60)
        self._tokens_at = now
        if self._tokens < 1.0:
            return (f"too many proposals from {self.cfg.peer.name}: "
                    f"limits.max_peer_proposals_per_minute = {rate} (try again in "
                    f"{(1.0 - self._tokens) * 60 / rate:.1f} s)")
        self._tokens -= 1.0        # every proposal counts, refused or not
        open_jobs = sum(1 for r in self.store.active() if r.role == "platform")
        if open_jobs >= lim.max_peer_jobs:
            return (f"{self.cfg.peer.name} already has {open_jobs} open jobs on "
                    f"{self.cfg.name}: limits.max_peer_jobs = {lim.max_peer_jobs} (propose "
                    f"again when one ends)")
        return ""

    def _on_propose(self, body: dict) -> dict:
        job_id = body.get("job_id", "")
        problem = job_id_problem(job_id)
        if problem:
            self.log("job.refused", {"reason": f"invalid job id ({problem})"},
                     level="warning")
            return {"decision": "refuse", "reason": f"invalid job id: {problem}"}
        if self.cfg.party != "platform":
            return {"decision": "refuse", "reason": f"{self.cfg.name} is a bank node; it does "
                    "not accept proposals"}
        with self._propose_lock:
            try:
                self.store.get(job_id)
                return self._repeated_proposal(job_id, body)
            except JobNotFound:
                pass
            over = self._peer_limit()
            if over:
                self.log("job.refused", {"job_id": job_id, "reason": over}, level="warning")
                return {"decision": "refuse", "reason": over}
            return self._consider(job_id, body)

    def _consider(self, job_id: str, body: dict) -> dict:
        try:
            spec = job_spec_from_dict(body.get("spec") or {}, f"proposal {job_id}")
        except ConfigError as exc:
            return {"decision": "refuse", "reason": f"invalid job spec ({exc})"}
        reason = policy_refusal(spec, self.cfg)
        if not reason and not Path(self.cfg.datasets[spec.peer_dataset].path).is_file():
            reason = (f"dataset {spec.peer_dataset!r} is configured but its file is missing "
                      f"on {self.cfg.name} (its operator must fix node.toml)")
            self.log("dataset.missing", {"dataset": spec.peer_dataset}, level="error")
        if spec.algorithm == "score" and not reason:
            try:
                m = self.store.model(spec.model)
                if m["algorithm"] != spec.train_algorithm:
                    reason = f"model {spec.model!r} here is a {m['algorithm']} model"
            except KeyError:
                reason = f"no model {spec.model!r} on {self.cfg.name}"
        reason = reason or self._inputs_refusal(spec)
        try:
            self.store.create(job_id, spec.name, spec.algorithm, "platform", spec.to_dict())
        except ValueError:
            return {"decision": "refuse", "reason": f"job id {job_id!r} already exists"}
        if reason:
            fields = {"job_id": job_id, "reason": reason}
            if reason == NOT_OFFERED:   # which names, for this operator only
                try:
                    fields["not_offered"] = features_not_offered(spec, self.cfg)
                except DataError:
                    pass
            self.log("job.refused", fields)
            self.store.transition(job_id, "failed", f"{POLICY_REFUSAL}{reason}")
            return {"decision": "refuse", "reason": reason}
        if self.cfg.policy.require_approval:
            self.store.event(job_id, "awaiting_approval", {
                "message": "run `fedjoint job approve JOB` or `fedjoint job refuse JOB`"})
            self.log("job.awaiting_approval", {"job_id": job_id})
            return {"decision": "pending"}
        self.log("job.accepted", {"job_id": job_id, "algorithm": spec.algorithm})
        self.store.transition(job_id, "approved")
        self.jobs.launch(job_id)
        return {"decision": "accept"}

    def _repeated_proposal(self, job_id: str, body: dict) -> dict:
        """The same proposal again (the bank retries when the connection dropped before
        it had the answer): the answer the first one got, nothing launched twice and no
        limit counted again. Any other proposal under a known job id is refused."""
        rec = self.store.get(job_id)
        try:
            same = rec.role == "platform" and _canonical(rec.spec) == _canonical(
                job_spec_from_dict(body.get("spec") or {}, f"proposal {job_id}").to_dict())
        except ConfigError:
            same = False
        if not same:
            return {"decision": "refuse", "reason": f"job id {job_id!r} already exists"}
        if rec.state == "submitted":
            return {"decision": "pending"}
        if rec.state == "failed" and rec.error.startswith(POLICY_REFUSAL):
            return {"decision": "refuse", "reason": rec.error[len(POLICY_REFUSAL):]}
        if rec.state in FINAL:
            return {"decision": "refuse", "reason": f"job {job_id} is {rec.state} on "
                    f"{self.cfg.name}"}
        return {"decision": "accept"}

    def _inputs_refusal(self, spec: JobSpec) -> str:
        """Why the job's ``[inputs]`` are not this node's parts of the named outputs
        ('' if they are): each must be a stored model part (exact id) of that job."""
        from federation.pipeline import names_job
        for name, ref in sorted((spec.inputs or {}).items()):
            try:
                m = self.store.model(ref)
            except KeyError:
                m = None
            if m is None or m["model_id"] != ref or not names_job(ref, m["job_id"]):
                return f"input {name} = {ref!r}: no such output on {self.cfg.name}"
        return ""

    def decide(self, job_id: str, approve: bool, reason: str = "") -> dict:
        """The platform operator approves or refuses a pending proposal."""
        rec = self.store.get(job_id)
        if rec.role != "platform" or rec.state != "submitted":
            raise AdminError(f"job {rec.job_id} is not awaiting approval (state {rec.state})")
        if approve:
            self.store.transition(rec.job_id, "approved")
            self.jobs.launch(rec.job_id)
            self.channel.request("job.decision", {"job_id": rec.job_id, "decision": "accept"})
        else:
            reason = reason or "refused by the operator"
            self.store.transition(rec.job_id, "failed", f"refused by this node's operator: "
                                  f"{reason}")
            self.channel.request("job.decision", {"job_id": rec.job_id, "decision": "refuse",
                                                  "reason": reason})
        return {"job_id": rec.job_id, "approved": approve}

    def _on_decision(self, body: dict) -> dict:
        job_id = body.get("job_id", "")
        problem = job_id_problem(job_id)
        if problem:
            return {"ok": False, "reason": problem}
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return {"ok": False, "reason": "unknown job"}
        if rec.job_id != job_id or rec.role != "bank" or rec.state != "submitted":
            return {"ok": False, "reason": f"job not awaiting a decision ({rec.state})"}
        if body.get("decision") == "accept":
            self._approved(job_id)
        else:
            reason = str(body.get("reason") or "no reason given")[:500]
            self.jobs.fail(job_id, f"refused by {self.cfg.peer.name}'s operator: {reason}",
                           notify=False)
        return {"ok": True}

    # ------------------------------------------------------------------ abort, cancel
    def _on_abort(self, body: dict) -> dict:
        job_id = body.get("job_id", "")
        problem = job_id_problem(job_id)
        if problem:
            return {"ok": False, "reason": problem}
        reason = f"{self.cfg.peer.name} stopped the job: " + \
            str(body.get("reason") or "no reason given")[:500]
        info = self.jobs.mark(job_id, "remote_reason", reason)
        if info is not None:
            self.jobs.close_link(job_id, info, reason)
        else:
            self.jobs.fail(job_id, reason, notify=False)
        return {"ok": True}

    def cancel(self, job_id: str) -> dict:
        rec = self.store.get(job_id)
        if rec.state in FINAL:
            raise AdminError(f"job {rec.job_id} is already {rec.state}")
        why = "cancelled by this node's operator"
        # mark it cancelled here first (so the failure of our link is not reported as
        # a failure), let the peer cancel its side, then stop our runner
        info = self._cancel_local(rec.job_id, why, stop_runner=False)
        try:
            self.channel.request("job.cancel", {"job_id": rec.job_id})
        except Exception as exc:  # noqa: BLE001
            self.log("job.cancel_not_delivered", {"job_id": rec.job_id,
                                                  "error": one_line(exc)})
        if info is not None:
            self.jobs.close_link(rec.job_id, info, why)
        return {"job_id": rec.job_id, "state": "cancelled"}

    def _on_cancel(self, body: dict) -> dict:
        job_id = body.get("job_id", "")
        problem = job_id_problem(job_id)
        if problem:
            return {"ok": False, "reason": problem}
        try:
            self._cancel_local(job_id, f"cancelled by {self.cfg.peer.name}")
        except (JobNotFound, AdminError):
            pass
        return {"ok": True}

    def _cancel_local(self, job_id: str, why: str, stop_runner: bool = True):
        info = self.jobs.mark(job_id, "cancelled", True)
        try:
            self.store.transition(job_id, "cancelled")
            self.store.event(job_id, "cancelled", {"by": why})
        except InvalidTransition:
            pass
        self.log("job.cancelled", {"job_id": job_id, "by": why})
        if info is None and self.channel is not None:   # e.g. an interrupted job
            from federation import transcript
            transcript.close_interrupted(self.data_dir / "transcripts" / f"{job_id}.jsonl",
                                         self.channel.local.signing_key, "cancelled")
        if info is not None and stop_runner:
            self.jobs.close_link(job_id, info, why)
        return info

    def _on_hello(self, body: dict) -> dict:
        return {"name": self.cfg.name, "party": self.cfg.party, "time": time.time()}
