"""What the node's parts share: config, data directory, JSON log, job store and, once
the daemon has started it, the peer channel.

The daemon owns one :class:`NodeContext`; the control plane, the job runner and the
admin API each read it through :class:`NodePart`, so none of them needs a reference to
the :class:`~federation.node.daemon.Node` (nor an import of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federation.config import NodeConfig
from federation.jobstore import JobStore
from federation.node.logs import JsonLog


@dataclass(eq=False)
class NodeContext:
    cfg: NodeConfig
    data_dir: Path
    log: JsonLog
    store: JobStore
    channel: object | None = None      # the PeerChannel while the node runs
    engine_pool: object | None = None  # the Ray pool warmer (federation.node.ray_pool)

    @property
    def channel_address(self) -> str:
        port = getattr(self.channel, "port", None)
        if port:
            host = self.cfg.listen.rpartition(":")[0]
            return f"{host}:{port}"
        return self.cfg.listen


class NodePart:
    """Base of the node's parts: ``cfg``, ``data_dir``, ``log``, ``store`` and the
    current ``channel`` (None while the node is stopped or offline)."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.data_dir, self.log, self.store = ctx.data_dir, ctx.log, ctx.store

    @property
    def cfg(self) -> NodeConfig:
        """The current configuration (``fedjoint node reload`` may replace it)."""
        return self.ctx.cfg

    @property
    def channel(self):
        return self.ctx.channel


def one_line(exc: BaseException) -> str:
    s = str(exc).strip() or type(exc).__name__
    return s.splitlines()[0][:500]
