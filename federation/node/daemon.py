"""The party node daemon: one :class:`Node` per party, wiring the job store, the peer
channel, the control plane, the job runner and the loopback admin server.

``fedjoint node start --config node.toml`` builds one and runs it until SIGINT/SIGTERM;
the CLI also builds an ``offline`` one to answer read-only calls from the job store
while the node is stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from federation.admin import AdminServer
from federation.config import NodeConfig, parse_address
from federation.jobstore import JobStore
from federation.node.admin_api import AdminApi
from federation.node.context import NodeContext
from federation.node.control import ControlPlane
from federation.node.jobs import JobRunner
from federation.node.logs import ChannelLogBridge, JsonLog
from federation.node.peer import make_channel, start_channel
from federation.node.ray_pool import PoolWarmer
from federation.node.resume import Resumer
from federation.serving.platform import ServingHost


class Node:
    """One party node: its job store and, once started, its channel and admin server."""

    def __init__(self, cfg: NodeConfig, *, quiet: bool = False, offline: bool = False):
        """``offline``: only read the job store (CLI queries while the node is stopped)."""
        self.data_dir = Path(cfg.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in ("vault", "models", "transcripts", "jobs"):
            (self.data_dir / sub).mkdir(exist_ok=True, mode=0o700)
        self.log = JsonLog(cfg.name, None if offline else self.data_dir / "node.log",
                           quiet=quiet)
        self.store = JobStore(self.data_dir / "jobs.db")
        self.ctx = NodeContext(cfg, self.data_dir, self.log, self.store)
        self.jobs = JobRunner(self.ctx)
        self.control = ControlPlane(self.ctx, self.jobs)
        self.resumer = Resumer(self.ctx, self.jobs)
        self.serving = ServingHost(self.ctx)       # serve.* lookups (docs/serving.md)
        self.api = AdminApi(self.ctx, self.control, self.resumer, self.serving)
        self.admin: AdminServer | None = None
        self._log_bridge: logging.Handler | None = None

    @property
    def cfg(self) -> NodeConfig:
        return self.ctx.cfg

    @property
    def channel(self):
        return self.ctx.channel

    @property
    def channel_address(self) -> str:
        return self.ctx.channel_address

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Node:
        interrupted = [] if self.jobs.stopping.is_set() else self.jobs.recover()
        self.jobs.apply_retention()
        self._log_bridge = ChannelLogBridge(self.log)
        chlog = logging.getLogger("fedjoint.channel")
        if chlog.level == logging.NOTSET:
            chlog.setLevel(logging.INFO)
        chlog.addHandler(self._log_bridge)
        self.ctx.channel = make_channel(self.cfg, recorder_factory=self.jobs.recorder_for,
                                        job_filter=self.control.job_filter)
        for name, handler in {**self.control.requests(), **self.serving.requests()}.items():
            self.channel.on_request(name, handler)
        self.channel.on_request("job.resume", self.resumer.on_request)
        start_channel(self.channel, self.cfg)
        host, port = parse_address(self.cfg.admin, str(self.cfg.file), "node.admin",
                                   loopback=True)
        self.admin = AdminServer(host, port, self.data_dir, self.api.handlers(), self.log,
                                 limits=self.cfg.limits)
        self.admin.start()
        self.log("node.started", {"party": self.cfg.party, "listen": self.channel_address,
                                  "admin": self.admin.address, "peer": self.cfg.peer.name,
                                  "peer_address": self.cfg.peer.address})
        self.ctx.engine_pool = PoolWarmer(self.log)
        self.ctx.engine_pool.start(self.cfg)     # engine = "ray": warm the actor pool
        for job_id in interrupted:     # both sides hold a common checkpoint: resume
            self.resumer.resume_later(job_id, "the node restarted while the job ran")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.jobs.stopping.set()
        if self.ctx.engine_pool is not None:
            self.ctx.engine_pool.stop()
            self.ctx.engine_pool = None
        if self.admin:
            self.admin.stop()
            self.admin = None
        self.jobs.close_all("the node is shutting down", timeout)
        if self.channel is not None:
            self.channel.stop()
            self.ctx.channel = None
        self.serving.stop()
        logging.getLogger("fedjoint.channel").removeHandler(self._log_bridge)
        self.log("node.stopped", {})
        self.log.close()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def offline_handlers(self) -> dict:
        """Read-only admin calls served straight from the job store (node stopped)."""
        return self.api.offline_handlers()
