"""The protocol floor: everything an algorithm (``parties/``, ``psi/``) may import from
the runtime. It imports numpy and the standard library only, never the daemon, the
channel, the config or the transcript writer (a test reads the imports to enforce it).

* :mod:`~federation.link.errors` - ProtocolError, PeerGone
* :mod:`~federation.link.codec` - payload codec (bin / npy / json) and the Envelope
* :mod:`~federation.link.link` - Link, ProtocolContext, in-memory link pairs
* :mod:`~federation.link.declare` - message tables and disclosure declarations
"""

from federation.link.codec import (
    KIND_RE,
    MAX_KIND_LEN,
    PTYPES,
    Envelope,
    Payload,
    check_kind,
    decode_payload,
    encode_payload,
)
from federation.link.declare import (
    DISCLOSURES,
    PROTOCOLS,
    Disclosure,
    Message,
    ProtocolTable,
    declare_disclosures,
    declare_protocol,
    default_count,
    wire_table_markdown,
)
from federation.link.errors import PeerAborted, PeerGone, ProtocolError
from federation.link.link import (
    DeclaredLink,
    Link,
    MessageRecorder,
    ProtocolContext,
    local_link_pair,
    root_cause,
    run_two_parties,
)

__all__ = [
    "DISCLOSURES", "KIND_RE", "MAX_KIND_LEN", "PROTOCOLS", "PTYPES", "DeclaredLink",
    "Disclosure", "Envelope", "Link", "Message", "MessageRecorder", "Payload", "PeerAborted",
    "PeerGone", "ProtocolContext", "ProtocolError", "ProtocolTable", "check_kind",
    "declare_disclosures", "declare_protocol", "decode_payload", "default_count",
    "encode_payload", "local_link_pair", "root_cause", "run_two_parties",
    "wire_table_markdown",
]
