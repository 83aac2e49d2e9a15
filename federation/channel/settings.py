"""Wire constants, :class:`ChannelSettings` and the channel's exceptions.

The leaf every other channel module imports (it imports none of them): the chunk and
frame sizes gRPC is configured with, the protocol version a hello must carry, and the
per-node settings. Every limit a peer can hit (message size, chunk size, job buffer,
control body, streams, hello timeout, JSON bounds, logged text) is a field of
``ChannelSettings.limits``, the node's :class:`~federation.config.limits.Limits` from
node.toml ``[limits]``; the settings only read them. Also the structured log helper all
channel modules share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

# JOB_ID_RE: the one definition of a job id (federation.config.limits), re-exported
from federation.config.limits import JOB_ID_RE, Limits  # noqa: F401
from federation.link import PeerGone
from federation.link.codec import clip

log = logging.getLogger("fedjoint.channel")

MAX_CHUNK = 4 * 1024 * 1024
#: gRPC message limit: one chunk plus room for the envelope; larger frames are refused
#: by gRPC itself (RESOURCE_EXHAUSTED), smaller oversized chunks by the receiver.
MAX_FRAME = MAX_CHUNK + 64 * 1024
#: gRPC server workers kept free for control calls (pings, proposals) beyond the
#: ``limits.max_streams`` a peer's message streams may hold
CONTROL_WORKERS = 8
PROTOCOL_VERSION = 1
PING_KIND = "channel.ping"


def log_event(level: int, event: str, **fields) -> None:
    """One ``event key=value ...`` log line. The fields also travel as structured data
    on the record (``fj_event``, ``fj_fields``), so a log handler never has to parse a
    line whose values came from the peer (a reason containing ``party=x`` stays text)."""
    log.log(level, "%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()),
            extra={"fj_event": event, "fj_fields": {k: str(v) for k, v in fields.items()}})


class ControlError(Exception):
    """The peer answered a control request with an error, or refused it."""


class PeerUnreachable(PeerGone):
    """The peer's address could not be reached (the message says where and how)."""


@dataclass
class ChannelSettings:
    heartbeat_interval: float = 1.0     # idle streams send a heartbeat this often
    peer_deadline: float = 10.0         # silent/unreachable this long -> PeerGone
    chunk_size: int = MAX_CHUNK         # payload bytes per frame (<= 4 MiB)
    send_window_bytes: int = 128 << 20  # unacknowledged bytes before send() blocks
    ack_every: int = 16                 # acknowledge at least every N small messages
    ack_delay: float = 0.02             # ... or after this many seconds
    control_timeout: float = 10.0       # default deadline of request()
    limits: Limits = field(default_factory=Limits)  # node.toml [limits]

    def __post_init__(self) -> None:
        if not self.limits.min_chunk_bytes <= self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be in {self.limits.min_chunk_bytes}..{MAX_CHUNK}"
                             f" (limits.min_chunk_bytes..4 MiB), got {self.chunk_size}")
        if self.heartbeat_interval <= 0 or self.peer_deadline <= self.heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < peer_deadline")

    @property
    def max_message_bytes(self) -> int:
        """Largest payload sent or accepted (``limits.max_message_bytes``)."""
        return self.limits.max_message_bytes

    @property
    def server_workers(self) -> int:
        """gRPC server threads: one per message stream the peer may hold, plus
        :data:`CONTROL_WORKERS` that streams can never occupy."""
        return self.limits.max_streams + CONTROL_WORKERS

    def clip(self, text: object) -> str:
        """Peer-supplied ``text`` cut to ``limits.max_logged_chars`` for logs and errors."""
        return clip(text, self.limits.max_logged_chars, "limits.max_logged_chars")
