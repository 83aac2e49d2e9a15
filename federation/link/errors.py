"""Errors the protocol floor raises; algorithms catch and raise these, never channel types."""


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow (wrong kind, shape, range)."""


class PeerGone(ProtocolError):
    """The peer disconnected or missed its deadline."""


class PeerAborted(ProtocolError):
    """The peer sent its protocol's abort message: the root cause is on the peer's side
    (its job log, or the peer's error in :func:`~federation.link.run_two_parties`)."""
