"""The admin endpoint's handlers: what ``fedjoint job|model|node`` calls on the local
node (served by :class:`federation.admin.AdminServer` on loopback), and the read-only
subset the CLI answers straight from the job store while the node is stopped.

Handlers turn arguments into calls on the control plane, the job store and the report
shaping; an unknown job becomes an :class:`~federation.admin.AdminError` (one line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from federation.admin import AdminError
from federation.jobstore import JobNotFound
from federation.node.context import NodeContext, NodePart
from federation.node.control import ControlPlane
from federation.node.peer import check_channel, load_identities
from federation.node.reload import reload_config
from federation.node.results import report_data as job_report_data

OFFLINE_OPS = ("status", "list", "logs", "models", "model", "report_data")


class AdminApi(NodePart):
    """The admin calls, by name, as ``handler(args) -> result``."""

    def __init__(self, ctx: NodeContext, control: ControlPlane, resumer=None, serving=None):
        super().__init__(ctx)
        self.control = control
        self.resumer = resumer
        self.serving = serving

    def handlers(self) -> dict:
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
            return self.control.submit(a.get("spec") or {}, str(a.get("source", "job.toml")))

        def cancel(a):
            return self.control.cancel(str(a.get("job_id", "")))

        def approve(a):
            return self.control.decide(str(a.get("job_id", "")), True)

        def refuse(a):
            return self.control.decide(str(a.get("job_id", "")), False,
                                       str(a.get("reason", "")))

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
            return self.report_data(str(a.get("job_id", "")), oot=str(a.get("oot") or ""),
                                    threshold=a.get("threshold"),
                                    binning=str(a.get("binning") or ""))

        return {"status": _nf(status), "list": jobs, "logs": _nf(logs), "submit": submit,
                "cancel": _nf(cancel), "approve": _nf(approve), "refuse": _nf(refuse),
                "check": lambda a: self.check(), "models": models, "model": model,
                "report_data": _nf(report_data), "info": lambda a: self.info(),
                "reload": lambda a: reload_config(self.ctx), "serving": self.serving_sessions,
                "resume": lambda a: self.resumer.command(str(a.get("job_id", "")))}

    def serving_sessions(self, a) -> dict:
        """Open serving sessions: the platform's in this daemon, the bank's from its
        ``fedjoint serve`` processes' status files (docs/serving.md)."""
        if self.cfg.party == "platform":
            if self.serving is None:
                raise AdminError("this node does not answer serving lookups")
            return self.serving.sessions()
        from federation.serving.bank import bank_sessions
        return bank_sessions(self.cfg)

    def offline_handlers(self) -> dict:
        """Read-only admin calls served straight from the job store (node stopped)."""
        h = self.handlers()
        return {k: h[k] for k in OFFLINE_OPS}

    def info(self) -> dict:
        return {"name": self.cfg.name, "party": self.cfg.party, "listen":
                self.ctx.channel_address, "peer": self.cfg.peer.name,
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

    def report_data(self, job_id: str, **options) -> dict:
        from federation.report.collect import ReportError
        try:
            return job_report_data(self.store.get(job_id), self.cfg, self._identities,
                                   self.store.get, **options)
        except ReportError as exc:
            raise AdminError(str(exc)) from None

    def _identities(self):
        if self.channel is not None:
            return self.channel.local, self.channel.peer
        return load_identities(self.cfg)


def _nf(fn):
    def wrapped(a):
        try:
            return fn(a)
        except JobNotFound as exc:
            raise AdminError(str(exc)) from None
    return wrapped
