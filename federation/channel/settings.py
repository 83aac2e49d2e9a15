"""Channel limits, wire constants, :class:`ChannelSettings` and the channel's exceptions.

The leaf every other channel module imports (it imports none of them), so the limits
live in one place: the chunk and frame sizes gRPC is configured with, the control body
limit, the protocol version a hello must carry, and the per-node settings with their
node.toml defaults. Also the structured log helper all channel modules share.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from federation.link import PeerGone

log = logging.getLogger("fedjoint.channel")

MAX_CHUNK = 4 * 1024 * 1024
#: gRPC message limit: one chunk plus room for the envelope; larger frames are refused
#: by gRPC itself (RESOURCE_EXHAUSTED), smaller oversized chunks by the receiver.
MAX_FRAME = MAX_CHUNK + 64 * 1024
MAX_CONTROL_BODY = 1024 * 1024
PROTOCOL_VERSION = 1
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
PING_KIND = "channel.ping"


def log_event(level: int, event: str, **fields) -> None:
    """One ``event key=value ...`` log line."""
    log.log(level, "%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class ControlError(Exception):
    """The peer answered a control request with an error, or refused it."""


class PeerUnreachable(PeerGone):
    """The peer's address could not be reached (the message says where and how)."""


@dataclass
class ChannelSettings:
    heartbeat_interval: float = 1.0     # idle streams send a heartbeat this often
    peer_deadline: float = 10.0         # silent/unreachable this long -> PeerGone
    chunk_size: int = MAX_CHUNK         # payload bytes per frame (<= 4 MiB)
    max_message_bytes: int = 4 << 30    # largest payload accepted (announced length)
    send_window_bytes: int = 128 << 20  # unacknowledged bytes before send() blocks
    inbox_limit_bytes: int = 512 << 20  # received, unconsumed bytes before reading pauses
    ack_every: int = 16                 # acknowledge at least every N small messages
    ack_delay: float = 0.02             # ... or after this many seconds
    control_timeout: float = 10.0       # default deadline of request()
    server_workers: int = 64            # thread pool of the gRPC server

    def __post_init__(self) -> None:
        if not 0 < self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK}, got {self.chunk_size}")
        if self.heartbeat_interval <= 0 or self.peer_deadline <= self.heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < peer_deadline")
