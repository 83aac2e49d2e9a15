"""Errors the protocol floor raises; algorithms catch and raise these, never channel types."""


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow (wrong kind, shape, range)."""


class PeerGone(ProtocolError):
    """The peer disconnected or missed its deadline."""
