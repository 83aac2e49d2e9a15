"""A protocol's abort message, shared by the wire modules (``sb.abort``, ``bin.abort``,
``sel.abort``): a party that fails sends ``{"reason": text}`` (best effort, at most 500
characters: the error's type and its peer-safe message, never data); the peer, waiting
in a receive, raises :class:`PeerAborted` naming the message it waited for."""

from __future__ import annotations

from federation.link import Link, PeerAborted, ProtocolError


def recv(link: Link, kind: str, abort_kind: str, how: str = "recv", *args):
    """``link.<how>(kind, *args)`` turning the peer's ``abort_kind`` into PeerAborted."""
    try:
        return getattr(link, how)(kind, *args)
    except ProtocolError as exc:
        if f"'{abort_kind}'" in str(exc):
            raise PeerAborted(f"peer aborted while we waited for {kind!r}") from None
        raise


def send(link: Link, abort_kind: str, reason: str) -> None:
    """Tell the peer we failed (best effort) so it does not wait for a timeout."""
    try:
        link.send(abort_kind, {"reason": reason[:500]})
    except Exception:  # noqa: BLE001 - the link may be gone already
        pass


def reason(exc: BaseException) -> str:
    """The error's type and its ``peer_message`` (a message without private column
    names) or, without one, its text."""
    return f"{type(exc).__name__}: {getattr(exc, 'peer_message', '') or exc}"
