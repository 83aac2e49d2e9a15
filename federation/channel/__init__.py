"""gRPC channel between the two party nodes: mutual TLS with certificate pinning,
signed and chunked messages, acknowledgements and resume, heartbeats, control requests.

Topology (symmetric): every node runs one gRPC server and holds one client connection
to its peer's server. For each job there are two bidirectional streams
(``PeerLink.Messages``), one per direction: a party sends its messages for job J on its
own client stream to the peer's server, and the server answers on that stream with
cumulative acknowledgements, heartbeats and, if it rejects a message, an error. Control
requests (job proposals, status, cancel, ping) are unary ``PeerLink.Control`` calls.
Any failed check fails that job only (its ``recv`` raises ``ProtocolError`` with the
reason, the sender is told the reason); the server and other jobs carry on.

Modules, each importing only those above it:

* :mod:`.settings` -- wire constants, protocol version, :class:`ChannelSettings` (its
  limits: node.toml ``[limits]``, :mod:`federation.config.limits`), exceptions;
* :mod:`.frames` -- a message as protobuf frames, and the receiver's per-frame checks;
* :mod:`.stream` -- one job's two directions: sequencing, acks, resend, dedupe,
  deadlines, heartbeats;
* :mod:`.servicer` -- the gRPC server side: pin check, job streams, control requests;
* :mod:`.peer` -- :class:`PeerChannel` (server and client with mTLS, control, jobs) and
  :class:`GrpcLink`, the protocol's handle of one job.

docs/channel.md is the operators' description.
"""

from federation.channel.peer import GrpcLink, PeerChannel, probe_certificate
from federation.channel.recorder import JsonlRecorder, ListRecorder
from federation.channel.settings import (
    MAX_CHUNK,
    ChannelSettings,
    ControlError,
    PeerUnreachable,
)

__all__ = ["MAX_CHUNK", "ChannelSettings", "ControlError", "GrpcLink", "JsonlRecorder",
           "ListRecorder", "PeerChannel", "PeerUnreachable", "probe_certificate"]
