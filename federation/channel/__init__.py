"""gRPC channel between the two party nodes: mutual TLS with certificate pinning,
signed and chunked messages, acknowledgements and resume, heartbeats, control requests.

See :mod:`federation.channel.peer` for the design and docs/channel.md for operators.
"""

from federation.channel.peer import (
    MAX_CHUNK,
    ChannelSettings,
    ControlError,
    GrpcLink,
    PeerChannel,
    PeerUnreachable,
    probe_certificate,
)
from federation.channel.recorder import JsonlRecorder, ListRecorder

__all__ = ["MAX_CHUNK", "ChannelSettings", "ControlError", "GrpcLink", "JsonlRecorder",
           "ListRecorder", "PeerChannel", "PeerUnreachable", "probe_certificate"]
