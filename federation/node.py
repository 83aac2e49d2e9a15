"""The party node daemon: peer channel, admin endpoint, job runner threads, job store.

One :class:`Node` per party. ``fedjoint node start --config node.toml`` builds one
and runs it until SIGINT/SIGTERM.

Job flow::

    bank: `fedjoint job submit` -> admin "submit" -> store(submitted)
          -> control "job.propose" {job_id, spec} to the platform's node
    platform: checks its policy -> reply accept | refuse(reason) | pending (manual
          approval; the operator later runs `fedjoint job approve|refuse`, which sends
          control "job.decision" to the bank)
    both: store(approved) -> runner thread: run_job_side over channel.link(job_id),
          transcript writer as the link's recorder, states psi/training/... as the
          pipeline reaches them -> exchange outcome statements -> store(done)
    failure on either side: store(failed, reason); control "job.abort" tells the peer
          (with a reason fit for the peer: policy reasons verbatim, internal errors as
          "internal error on <node>") so it fails fast instead of waiting for the
          deadline; cancellation likewise ("job.cancel").

Logs are JSON lines (``data_dir/node.log`` and stderr): ``ts``, ``level``, ``event``,
``node`` and event fields. They never contain keys, tokens, seeds or data values.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from federation.admin import AdminError, AdminServer, write_private
from federation.config import (
    TRAINING_ALGORITHMS,
    ConfigError,
    JobSpec,
    NodeConfig,
    job_spec_from_dict,
    parse_address,
)
from federation.data import DataError
from federation.jobstore import FINAL, InvalidTransition, JobNotFound, JobStore
from federation.link import PeerGone, ProtocolError
from federation.runner import (
    JobFailed,
    JobResult,
    model_path,
    policy_refusal,
    protocol_versions,
    run_job_side,
)

SEED_BYTES = 32
_STAGE_STATE = {"psi": "psi", "training": "training", "evaluating": "evaluating",
                "scoring": "scoring"}


class JsonLog:
    """One JSON object per line; thread-safe. Never pass secrets or data values."""

    _SECRET_WORDS = ("token", "seed", "private", "secret", "password")

    def __init__(self, node: str, path: Path | None, stream=sys.stderr, quiet: bool = False):
        self.node = node
        self._lock = threading.Lock()
        self._fh = None
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._stream = None if quiet else stream
        self.listeners: list[Callable[[dict], None]] = []

    def __call__(self, event: str, fields: dict | None = None, level: str = "info") -> None:
        rec = {"ts": round(time.time(), 3), "level": level, "event": event, "node": self.node}
        for k, v in (fields or {}).items():
            if any(w in k.lower() for w in self._SECRET_WORDS):
                continue
            rec[k] = v
        line = json.dumps(rec, default=str, separators=(",", ":"))
        with self._lock:
            if self._fh:
                self._fh.write(line + "\n")
                self._fh.flush()
            if self._stream:
                try:
                    self._stream.write(line + "\n")
                    self._stream.flush()
                except (ValueError, OSError):
                    pass

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None


class Node:
    def __init__(self, cfg: NodeConfig, *, quiet: bool = False, offline: bool = False):
        """``offline``: only read the job store (CLI queries while the node is stopped)."""
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in ("vault", "models", "transcripts", "jobs"):
            (self.data_dir / sub).mkdir(exist_ok=True, mode=0o700)
        self.log = JsonLog(cfg.name, None if offline else self.data_dir / "node.log",
                           quiet=quiet)
        self.store = JobStore(self.data_dir / "jobs.db")
        self.channel = None
        self.admin: AdminServer | None = None
        self._jobs: dict[str, dict] = {}          # job_id -> {"thread", "link", ...}
        self._writers: dict = {}                  # job_id -> TranscriptWriter
        self._lock = threading.RLock()
        self._slots = threading.BoundedSemaphore(cfg.policy.max_concurrent_jobs)
        self._stopping = threading.Event()
        self._log_bridge: logging.Handler | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Node:
        self._recover()
        self._log_bridge = _LogBridge(self.log)
        chlog = logging.getLogger("fedjoint.channel")
        if chlog.level == logging.NOTSET:
            chlog.setLevel(logging.INFO)
        chlog.addHandler(self._log_bridge)
        self.channel = make_channel(self.cfg, recorder_factory=self._recorder_for,
                                    job_filter=self._job_filter)
        self.channel.on_request("job.propose", self._on_propose)
        self.channel.on_request("job.decision", self._on_decision)
        self.channel.on_request("job.abort", self._on_abort)
        self.channel.on_request("job.cancel", self._on_cancel)
        self.channel.on_request("node.hello", self._on_hello)
        try:
            self.channel.start()
        except OSError as exc:
            raise ConfigError(f"{self.cfg.file}: node.listen = {self.cfg.listen!r}: {exc}") \
                from None
        host, port = parse_address(self.cfg.admin, str(self.cfg.file), "node.admin",
                                   loopback=True)
        self.admin = AdminServer(host, port, self.data_dir, self._admin_handlers(), self.log)
        self.admin.start()
        self.log("node.started", {"party": self.cfg.party, "listen": self.channel_address,
                                  "admin": self.admin.address, "peer": self.cfg.peer.name,
                                  "peer_address": self.cfg.peer.address})
        return self

    @property
    def channel_address(self) -> str:
        port = getattr(self.channel, "port", None)
        if port:
            host = self.cfg.listen.rpartition(":")[0]
            return f"{host}:{port}"
        return self.cfg.listen

    def _job_filter(self, job_id: str):
        """The peer may only open streams for jobs this node agreed to (or proposed)."""
        try:
            rec = self.store.get(job_id)
        except JobNotFound:
            return f"job {job_id} is not known to {self.cfg.name}"
        if rec.job_id != job_id or rec.state in FINAL:
            return f"job {job_id} is {rec.state} on {self.cfg.name}"
        if rec.role == "platform" and rec.state == "submitted":
            return f"job {job_id} is not approved on {self.cfg.name}"
        return True

    def _recorder_for(self, job_id: str):
        """The channel asks for the job's recorder when the job's link is created
        (locally or by the peer's first message): the job's transcript writer."""
        with self._lock:
            w = self._writers.get(job_id)
            if w is None:
                rec = self.store.get(job_id)
                spec = job_spec_from_dict(rec.spec, f"job {job_id}")
                w = self._transcript_writer(job_id, spec)
                self._writers[job_id] = w
            return w

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self.admin:
            self.admin.stop()
            self.admin = None
        with self._lock:
            running = list(self._jobs.items())
        for job_id, info in running:
            self._close_link(job_id, info, "the node is shutting down")
        for _job_id, info in running:
            t = info.get("thread")
            if t is not None:
                t.join(timeout)
        if self.channel is not None:
            self.channel.stop()
            self.channel = None
        logging.getLogger("fedjoint.channel").removeHandler(self._log_bridge)
        self.log("node.stopped", {})
        self.log.close()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _recover(self) -> None:
        """Jobs that were running when the node stopped cannot continue: fail them."""
        for rec in self.store.active():
            try:
                self.store.transition(rec.job_id, "failed",
                                      "interrupted: the node restarted while the job ran")
            except InvalidTransition:
                pass

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
        try:
            ds = self.cfg.dataset(spec.dataset)
        except ConfigError as exc:
            raise AdminError(str(exc)) from None
        if not Path(ds.path).is_file():
            raise AdminError(f"{self.cfg.file}: datasets.{ds.name}.path: {ds.path} does not "
                             "exist (fix the path in node.toml and restart the node)")
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
        with self._lock:
            self._jobs[job_id] = {"thread": t}
        t.start()
        return {"job_id": job_id}

    def _propose(self, job_id: str, spec: JobSpec) -> None:
        try:
            reply = self.channel.request("job.propose", {
                "job_id": job_id, "spec": spec.to_dict(), "from": self.cfg.name})
        except Exception as exc:  # noqa: BLE001 - reported on the job
            self._fail(job_id, f"could not propose the job to {self.cfg.peer.name} at "
                       f"{self.cfg.peer.address}: {_one_line(exc)}", notify=False)
            return
        decision = reply.get("decision")
        if decision == "accept":
            self._approved(job_id)
        elif decision == "pending":
            self.store.event(job_id, "awaiting_approval",
                             {"message": f"{self.cfg.peer.name} requires manual approval; "
                                         "waiting for its operator"})
            self.log("job.awaiting_approval", {"job_id": job_id})
            with self._lock:
                self._jobs.pop(job_id, None)
        else:
            reason = str(reply.get("reason") or "no reason given")[:500]
            self._fail(job_id, f"refused by {self.cfg.peer.name}'s policy: {reason}",
                       notify=False)

    def _approved(self, job_id: str) -> None:
        try:
            self.store.transition(job_id, "approved")
        except (InvalidTransition, JobNotFound) as exc:
            self.log("job.not_started", {"job_id": job_id, "why": str(exc)})
            return
        self._launch(job_id)

    # ------------------------------------------------------------------ platform side
    def _on_propose(self, body: dict) -> dict:
        job_id = str(body.get("job_id", ""))
        if not job_id or len(job_id) > 128 or not all(c.isalnum() or c in "._-"
                                                      for c in job_id):
            return {"decision": "refuse", "reason": "malformed job id"}
        if self.cfg.party != "platform":
            return {"decision": "refuse", "reason": f"{self.cfg.name} is a bank node; it does "
                    "not accept proposals"}
        try:
            spec = job_spec_from_dict(body.get("spec") or {}, f"proposal {job_id}")
        except ConfigError as exc:
            return {"decision": "refuse", "reason": f"invalid job spec ({exc})"}
        reason = policy_refusal(spec, self.cfg, peer_side=True)
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
        try:
            self.store.create(job_id, spec.name, spec.algorithm, "platform", spec.to_dict())
        except ValueError:
            return {"decision": "refuse", "reason": f"job id {job_id!r} already exists"}
        if reason:
            self.log("job.refused", {"job_id": job_id, "reason": reason})
            self.store.transition(job_id, "failed", f"refused by this node's policy: {reason}")
            return {"decision": "refuse", "reason": reason}
        if self.cfg.policy.require_approval:
            self.store.event(job_id, "awaiting_approval", {
                "message": "run `fedjoint job approve JOB` or `fedjoint job refuse JOB`"})
            self.log("job.awaiting_approval", {"job_id": job_id})
            return {"decision": "pending"}
        self.log("job.accepted", {"job_id": job_id, "algorithm": spec.algorithm})
        self.store.transition(job_id, "approved")
        self._launch(job_id)
        return {"decision": "accept"}

    def decide(self, job_id: str, approve: bool, reason: str = "") -> dict:
        """The platform operator approves or refuses a pending proposal."""
        rec = self.store.get(job_id)
        if rec.role != "platform" or rec.state != "submitted":
            raise AdminError(f"job {rec.job_id} is not awaiting approval (state {rec.state})")
        if approve:
            self.store.transition(rec.job_id, "approved")
            self._launch(rec.job_id)
            self.channel.request("job.decision", {"job_id": rec.job_id, "decision": "accept"})
        else:
            reason = reason or "refused by the operator"
            self.store.transition(rec.job_id, "failed", f"refused by this node's operator: "
                                  f"{reason}")
            self.channel.request("job.decision", {"job_id": rec.job_id, "decision": "refuse",
                                                  "reason": reason})
        return {"job_id": rec.job_id, "approved": approve}

    def _on_decision(self, body: dict) -> dict:
        job_id = str(body.get("job_id", ""))
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
            self._fail(job_id, f"refused by {self.cfg.peer.name}'s operator: {reason}",
                       notify=False)
        return {"ok": True}

    # ------------------------------------------------------------------ running
    def _launch(self, job_id: str) -> None:
        seed = os.urandom(SEED_BYTES)
        write_private(self.data_dir / "vault" / f"{job_id}.seed", seed)
        t = threading.Thread(target=self._run, args=(job_id, seed), daemon=True,
                             name=f"job-{job_id}")
        with self._lock:
            self._jobs[job_id] = {"thread": t, "cancelled": False}
        t.start()

    def _run(self, job_id: str, seed: bytes) -> None:
        rec = self.store.get(job_id)
        spec = job_spec_from_dict(rec.spec, f"job {job_id}")
        writer = None
        link = None
        info = self._jobs.get(job_id, {})
        with self._slots:
            if info.get("cancelled") or self._stopping.is_set():
                return
            try:
                writer = self._recorder_for(job_id)
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

                result = run_job_side(spec, self.cfg, link, seed, progress=progress,
                                      log=plog, on_stage=on_stage)
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

    def _transcript_writer(self, job_id: str, spec: JobSpec):
        from federation import transcript
        names = {self.cfg.name: self.cfg.party, self.cfg.peer.name: self.cfg.peer_party}
        return transcript.TranscriptWriter.create(
            self.data_dir / "transcripts" / f"{job_id}.jsonl", job_id=job_id,
            party=self.cfg.name, peer=self.cfg.peer.name,
            signing_key=self.channel.local.signing_key,
            peer_public_key=self.channel.peer.signing_public_key, spec=spec.to_dict(),
            protocols=protocol_versions(spec.algorithm, spec.train_algorithm),
            key_sizes={"paillier": spec.evaluation.key_bits,
                       "cipher": spec.evaluation.cipher}, roles=names)

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
        if result.model is not None:
            self.store.add_model(job_id, job_id, result.model.algorithm,
                                 artifacts["model"], result.model_digest,
                                 result.peer_model_digest, metrics=result.metrics,
                                 feature_names=result.model.feature_names)
        self.store.update(job_id, metrics=_jsonable(result.metrics), history=result.history,
                          timings=result.timings, artifacts=artifacts,
                          progress={"step": "done", "fraction": 1.0},
                          checkpoint={"psi": result.psi_info,
                                      "model_digest": result.model_digest,
                                      "peer_model_digest": result.peer_model_digest})
        self.store.transition(job_id, "done")
        self.log("job.done", {"job_id": job_id, "intersection": result.intersection,
                              "seconds": round(result.timings.get("total", 0.0), 3)})

    def _job_error(self, job_id: str, exc: BaseException, writer) -> None:
        info = self._jobs.get(job_id, {})
        if info.get("cancelled"):
            if writer is not None:
                writer.abort("cancelled")
            return
        peer_reason = ""
        if isinstance(exc, JobFailed):
            reason = str(exc)
            peer_reason = reason
        elif isinstance(exc, PeerGone):
            reason = f"lost contact with {self.cfg.peer.name} ({self.cfg.peer.address}) " \
                     f"during the job: {_one_line(exc)}"
        elif isinstance(exc, ProtocolError):
            reason = f"protocol error: {_one_line(exc)}"
            peer_reason = f"{self.cfg.name} rejected a message: {_one_line(exc)}"
        elif isinstance(exc, (DataError, ConfigError)):
            reason = _one_line(exc)
            peer_reason = f"{self.cfg.name} could not load its data (see its log)"
        else:
            reason = f"internal error: {type(exc).__name__}: {_one_line(exc)}"
            peer_reason = f"internal error on {self.cfg.name} (see its log)"
            self.log("job.traceback", {"job_id": job_id, "traceback": traceback.format_exc(
                limit=8)}, level="error")
        remote = self._jobs.get(job_id, {}).get("remote_reason")
        if remote and isinstance(exc, (PeerGone, ProtocolError)):
            reason = remote
            peer_reason = ""
        if writer is not None:
            try:
                writer.abort(reason)
            except Exception:  # noqa: BLE001
                pass
        self._fail(job_id, reason, notify=bool(peer_reason) and not remote,
                   peer_reason=peer_reason)

    def _fail(self, job_id: str, reason: str, *, notify: bool, peer_reason: str = "") -> None:
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

    def _on_abort(self, body: dict) -> dict:
        job_id = str(body.get("job_id", ""))
        reason = f"{self.cfg.peer.name} stopped the job: " + \
            str(body.get("reason") or "no reason given")[:500]
        with self._lock:
            info = self._jobs.get(job_id)
        if info is not None:
            info["remote_reason"] = reason
            self._close_link(job_id, info, reason)
        else:
            self._fail(job_id, reason, notify=False)
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
                                                  "error": _one_line(exc)})
        if info is not None:
            self._close_link(rec.job_id, info, why)
        return {"job_id": rec.job_id, "state": "cancelled"}

    def _on_cancel(self, body: dict) -> dict:
        job_id = str(body.get("job_id", ""))
        try:
            self._cancel_local(job_id, f"cancelled by {self.cfg.peer.name}")
        except (JobNotFound, AdminError):
            pass
        return {"ok": True}

    def _cancel_local(self, job_id: str, why: str, stop_runner: bool = True):
        with self._lock:
            info = self._jobs.get(job_id)
            if info is not None:
                info["cancelled"] = True
        try:
            self.store.transition(job_id, "cancelled")
            self.store.event(job_id, "cancelled", {"by": why})
        except InvalidTransition:
            pass
        self.log("job.cancelled", {"job_id": job_id, "by": why})
        if info is not None and stop_runner:
            self._close_link(job_id, info, why)
        return info

    def _close_link(self, job_id: str, info: dict, reason: str) -> None:
        """Make the job's runner thread stop: fail its link (the peer is told)."""
        link = info.get("link")
        if link is not None:
            try:
                link.abort(reason)
            except Exception:  # noqa: BLE001
                pass

    def _on_hello(self, body: dict) -> dict:
        return {"name": self.cfg.name, "party": self.cfg.party, "time": time.time()}

    # ------------------------------------------------------------------ admin
    def _admin_handlers(self) -> dict:
        def status(a):
            return self._status(self.store.get(str(a.get("job_id", ""))))

        def jobs(a):
            return [self._status(r, brief=True) for r in self.store.list(int(a.get("limit",
                                                                                  50)))]

        def logs(a):
            rec = self.store.get(str(a.get("job_id", "")))
            return {"job_id": rec.job_id, "state": rec.state,
                    "events": self.store.events(rec.job_id, int(a.get("after", 0)))}

        def submit(a):
            return self.submit(a.get("spec") or {}, str(a.get("source", "job.toml")))

        def cancel(a):
            return self.cancel(str(a.get("job_id", "")))

        def approve(a):
            return self.decide(str(a.get("job_id", "")), True)

        def refuse(a):
            return self.decide(str(a.get("job_id", "")), False, str(a.get("reason", "")))

        def models(a):
            return self.store.models()

        def model(a):
            try:
                m = self.store.model(str(a.get("model_id", "")))
            except KeyError as exc:
                raise AdminError(exc.args[0]) from None
            if a.get("body"):
                m["part"] = json.loads(Path(m["path"]).read_text())
            return m

        def report_data(a):
            return self.report_data(str(a.get("job_id", "")))

        return {"status": _nf(status), "list": jobs, "logs": _nf(logs), "submit": submit,
                "cancel": _nf(cancel), "approve": _nf(approve), "refuse": _nf(refuse),
                "check": lambda a: self.check(), "models": models, "model": model,
                "report_data": _nf(report_data), "info": lambda a: self.info()}

    def offline_handlers(self) -> dict:
        """Read-only admin calls served straight from the job store (node stopped)."""
        h = self._admin_handlers()
        return {k: h[k] for k in ("status", "list", "logs", "models", "model",
                                  "report_data")}

    def info(self) -> dict:
        return {"name": self.cfg.name, "party": self.cfg.party, "listen":
                self.channel_address, "peer": self.cfg.peer.name,
                "peer_address": self.cfg.peer.address, "pid": os.getpid()}

    def check(self) -> dict:
        return check_channel(self.channel, self.cfg)

    def _status(self, rec, brief: bool = False) -> dict:
        d = rec.to_dict()
        if brief:
            for k in ("history", "spec", "checkpoint", "timings", "artifacts"):
                d.pop(k, None)
        d["spec_summary"] = {k: rec.spec.get(k) for k in ("dataset", "peer_dataset",
                                                          "model")}
        if rec.state == "submitted":
            evs = self.store.events(rec.job_id)
            if any(e["event"] == "awaiting_approval" for e in evs):
                d["waiting"] = "awaiting manual approval by the platform's operator"
        return d

    def report_data(self, job_id: str) -> dict:
        rec = self.store.get(job_id)
        art = rec.artifacts
        m = rec.metrics or {}
        splits = {k: {n: v for n, v in m[k].items() if not isinstance(v, (dict, list))}
                  for k in ("train", "valid", "test") if isinstance(m.get(k), dict)}
        psi = {"intersection": m.get("intersection"), **(rec.checkpoint.get("psi") or {})}
        for k in ("n_train", "n_test"):
            if k in m:
                psi[k] = m[k]
        job = {"id": rec.job_id, "name": rec.name, "algorithm": rec.algorithm,
               "state": rec.state, "role": rec.role, "node": self.cfg.name,
               "peer": self.cfg.peer.name,
               "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.created)),
               "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.updated)),
               "model digest": rec.checkpoint.get("model_digest", ""),
               "peer part digest": rec.checkpoint.get("peer_model_digest", "")}
        if rec.error:
            job["error"] = rec.error
        ev = rec.spec.get("evaluation") or {}
        data = {"job": job, "psi": psi, "metrics": splits,
                "history": _history_rows(rec.history),
                "timings": {k: round(v, 3) for k, v in rec.timings.items()
                            if isinstance(v, (int, float))},
                "threshold": ev.get("threshold", 0.5)}
        if art.get("test_scores") and Path(art["test_scores"]).exists():
            data["scores"] = json.loads(Path(art["test_scores"]).read_text())
        if art.get("model") and Path(art["model"]).exists():
            body = json.loads(Path(art["model"]).read_text())
            data["feature_importance"] = _importance(body)
        if art.get("transcript"):
            if self.channel is not None:
                local, peer = self.channel.local, self.channel.peer
            else:
                local, peer = load_identities(self.cfg)
            pins = {self.cfg.name: _pub_hex(local.signing_key.public_key()),
                    self.cfg.peer.name: _pub_hex(peer.signing_public_key)}
            data["transcript"] = _verify_transcript(art["transcript"], pins)
        return data


# --------------------------------------------------------------------------- helpers


def write_scores(path: Path, scores: dict) -> Path:
    """The bank's scoring output: ``id,score`` per scored row (mode 0600)."""
    lines = ["id,score"] + [f"{i},{v:.6f}" for i, v in zip(scores["ids"], scores["p"],
                                                            strict=True)]
    write_private(Path(path), ("\n".join(lines) + "\n").encode())
    return Path(path)


def _nf(fn):
    def wrapped(a):
        try:
            return fn(a)
        except JobNotFound as exc:
            raise AdminError(str(exc)) from None
    return wrapped


def _one_line(exc: BaseException) -> str:
    s = str(exc).strip() or type(exc).__name__
    return s.splitlines()[0][:500]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))


def _importance(part: dict) -> list[dict]:
    """Feature importance rows {feature, gain, splits} from a model part's body (the
    platform's features appear under the names its policy released)."""
    body = part.get("body") or {}
    imp = body.get("importance") or body.get("feature_importance")
    if isinstance(imp, dict):
        gain = imp.get("total_gain") or imp.get("gain")
        splits = imp.get("split_count") or imp.get("splits") or {}
        if isinstance(gain, dict) or isinstance(splits, dict) and splits:
            names = list(dict.fromkeys([*(gain or {}), *splits]))
            return [{"feature": n, "gain": float((gain or {}).get(n, 0.0)),
                     "splits": int(splits.get(n, 0))} for n in names]
        return [{"feature": k, "gain": float(v), "splits": 0} for k, v in imp.items()
                if isinstance(v, (int, float))]
    if isinstance(imp, list):
        return [x for x in imp if isinstance(x, dict)]
    weights = body.get("weights")
    names = part.get("feature_names") or []
    if isinstance(weights, list) and len(weights) == len(names):
        return [{"feature": n, "gain": abs(float(w)), "splits": 0}
                for n, w in zip(names, weights, strict=True)
                if isinstance(w, (int, float))]
    return []


def _history_rows(history: list) -> list[dict]:
    """Per-iteration rows {iteration, train_loss, valid_loss, train_auc, valid_auc}."""
    rows = []
    for i, h in enumerate(history or []):
        if not isinstance(h, dict):
            continue
        r: dict = {"iteration": h.get("tree", h.get("epoch", h.get("iteration", i)))}
        for split in ("train", "valid"):
            sub = h.get(split)
            if isinstance(sub, dict):
                if "log_loss" in sub:
                    r[f"{split}_loss"] = sub["log_loss"]
                if "auc" in sub:
                    r[f"{split}_auc"] = sub["auc"]
        for k in ("loss", "train_loss"):
            if isinstance(h.get(k), (int, float)):
                r["train_loss"] = h[k]
        for k in ("valid_auc", "valid_loss", "train_auc"):
            if isinstance(h.get(k), (int, float)):
                r[k] = h[k]
        rows.append(r)
    return rows


def _pub_hex(key) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.public_bytes(serialization.Encoding.Raw,
                            serialization.PublicFormat.Raw).hex()


def _verify_transcript(path: str, pins: dict | None = None) -> dict:
    """Verification status and disclosure ledger of this node's transcript of a job."""
    try:
        from federation import audit
        rep = audit.verify(path, pinned_keys=pins)
    except Exception as exc:  # noqa: BLE001 - shown in the report, not raised
        return {"verified": False, "detail": _one_line(exc)}
    ledger = {}
    for e in rep.ledger:
        ledger[f"{e.get('category')} (to {e.get('to')})"] = {
            "messages": e.get("messages"), "values": e.get("values"),
            "kinds": ", ".join(e.get("kinds") or [])}
    return {"verified": bool(rep.ok), "detail": rep.detail, "ledger": ledger}


def spec_summary(spec: JobSpec) -> dict:
    return {k: v for k, v in asdict(spec).items() if k in ("name", "algorithm", "dataset",
                                                           "peer_dataset")}


# --------------------------------------------------------------------------- channel


def load_identities(cfg: NodeConfig):
    """(LocalIdentity, PeerIdentity) from node.toml's [keys] and [peer]; errors name
    the file and the key."""
    from federation import keys as K
    try:
        local = K.load_local_identity(cfg.name, cfg.keys.tls_cert, cfg.keys.tls_key,
                                      cfg.keys.signing_key)
    except K.KeyFileError as exc:
        raise ConfigError(f"{cfg.file}: [keys]: {exc}") from None
    spk = cfg.peer.signing_public_key
    try:
        pub = K.parse_signing_pubkey(spk) if len(spk) == 64 and all(
            c in "0123456789abcdefABCDEF" for c in spk) else spk
        peer = K.load_peer_identity(cfg.peer.name, cfg.peer.cert, cfg.peer.cert_fingerprint,
                                    pub)
    except (K.KeyFileError, ValueError) as exc:
        raise ConfigError(f"{cfg.file}: [peer]: {exc}") from None
    return local, peer


def make_channel(cfg: NodeConfig, **kwargs):
    from federation.channel import ChannelSettings, PeerChannel
    local, peer = load_identities(cfg)
    settings = ChannelSettings(heartbeat_interval=min(cfg.channel.heartbeat_s,
                                                      cfg.channel.deadline_s / 2),
                               peer_deadline=cfg.channel.deadline_s,
                               control_timeout=cfg.channel.connect_timeout_s)
    return PeerChannel(local, peer, cfg.listen, cfg.peer.address, settings=settings, **kwargs)


def check_channel(channel, cfg: NodeConfig, count: int = 5) -> dict:
    """Reach the peer: latency and both sides' fingerprints (never raises)."""
    local, peer = channel.local, channel.peer
    base = {"ok": False, "peer_address": cfg.peer.address, "peer_name": cfg.peer.name,
            "local_cert_fingerprint": local.cert_fingerprint,
            "local_signing_fingerprint": local.signing_fingerprint,
            "peer_cert_fingerprint": peer.cert_fingerprint,
            "peer_signing_fingerprint": peer.signing_fingerprint, "pings": count}
    try:
        res = channel.check(count)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        base["error"] = _one_line(exc)
        return base
    base.update({"ok": bool(res.get("ok")), "rtt_ms": float(res.get("latency_ms", 0.0)),
                 "peer_reports": res.get("peer")})
    if not base["ok"]:
        base["error"] = (f"the peer at {cfg.peer.address} answered as {res.get('peer')!r} "
                         f"with certificate {res.get('peer_cert_fingerprint')} and signing key "
                         f"{res.get('peer_signing_fingerprint')}, which do not match [peer]")
    return base


def standalone_check(cfg: NodeConfig) -> dict:
    """``node check`` when the node is not running: a temporary channel end."""
    ch = make_channel(cfg)
    try:
        ch.start()
    except OSError as exc:
        raise ConfigError(f"{cfg.file}: node.listen = {cfg.listen!r}: {exc}") from None
    try:
        return check_channel(ch, cfg)
    finally:
        ch.stop(0.2)


class _LogBridge(logging.Handler):
    """Channel log records (``event k=v ...``) into the node's JSON log."""

    def __init__(self, log: JsonLog):
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        event, _, rest = msg.partition(" ")
        fields: dict = {}
        for part in rest.split(" "):
            k, eq, v = part.partition("=")
            if eq and k.isidentifier():
                fields[k] = v
            elif fields:
                last = next(reversed(fields))
                fields[last] += " " + part
        # two nodes in one process (tests, the demo) share the channel logger: keep
        # only this node's channel's records
        me = self._log.node
        if fields.get("party", me) != me or fields.get("peer") == me:
            return
        self._log(f"channel.{event}" if not event.startswith("channel.") else event, fields,
                  level=record.levelname.lower())


__all__ = ["Node", "JsonLog", "TRAINING_ALGORITHMS", "make_channel", "standalone_check"]
