"""Building and checking this node's end of the peer channel from node.toml.

Separate from the daemon because ``fedjoint node check`` needs a temporary channel end
when the node is not running, and the report needs the identities offline.
"""

from __future__ import annotations

from federation.config import ConfigError, NodeConfig
from federation.node.context import one_line


def load_identities(cfg: NodeConfig):
    """(LocalIdentity, PeerIdentity) from node.toml's [keys] and [peer]; errors name
    the file and the key."""
    from federation import keys as K
    try:
        local = K.load_local_identity(cfg.name, cfg.keys.tls_cert, cfg.keys.tls_key,
                                      cfg.keys.signing_key)
    except K.KeyFileError as exc:
        raise ConfigError(f"{cfg.file}: [keys]: {exc}") from None
    spk = cfg.peer.signing_public_key
    try:
        pub = K.parse_signing_pubkey(spk) if len(spk) == 64 and all(
            c in "0123456789abcdefABCDEF" for c in spk) else spk
        peer = K.load_peer_identity(cfg.peer.name, cfg.peer.cert, cfg.peer.cert_fingerprint,
                                    pub)
    except (K.KeyFileError, ValueError) as exc:
        raise ConfigError(f"{cfg.file}: [peer]: {exc}") from None
    return local, peer


def make_channel(cfg: NodeConfig, **kwargs):
    from federation.channel import ChannelSettings, PeerChannel
    local, peer = load_identities(cfg)
    settings = ChannelSettings(heartbeat_interval=min(cfg.channel.heartbeat_s,
                                                      cfg.channel.deadline_s / 2),
                               peer_deadline=cfg.channel.deadline_s,
                               control_timeout=cfg.channel.connect_timeout_s,
                               limits=cfg.limits)
    return PeerChannel(local, peer, cfg.listen, cfg.peer.address, settings=settings, **kwargs)


def start_channel(channel, cfg: NodeConfig) -> None:
    """Start listening; a busy or bad ``node.listen`` is a config error naming it."""
    try:
        channel.start()
    except OSError as exc:
        raise ConfigError(f"{cfg.file}: node.listen = {cfg.listen!r}: {exc}") from None


def check_channel(channel, cfg: NodeConfig, count: int = 5) -> dict:
    """Reach the peer: latency and both sides' fingerprints (never raises)."""
    local, peer = channel.local, channel.peer
    base = {"ok": False, "peer_address": cfg.peer.address, "peer_name": cfg.peer.name,
            "local_cert_fingerprint": local.cert_fingerprint,
            "local_signing_fingerprint": local.signing_fingerprint,
            "peer_cert_fingerprint": peer.cert_fingerprint,
            "peer_signing_fingerprint": peer.signing_fingerprint, "pings": count}
    try:
        res = channel.check(count)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        base["error"] = one_line(exc)
        return base
    base.update({"ok": bool(res.get("ok")), "rtt_ms": float(res.get("latency_ms", 0.0)),
                 "peer_reports": res.get("peer")})
    if not base["ok"]:
        base["error"] = (f"the peer at {cfg.peer.address} answered as {res.get('peer')!r} "
                         f"with certificate {res.get('peer_cert_fingerprint')} and signing key "
                         f"{res.get('peer_signing_fingerprint')}, which do not match [peer]")
    return base


def standalone_check(cfg: NodeConfig) -> dict:
    """``node check`` when the node is not running: a temporary channel end."""
    ch = make_channel(cfg)
    start_channel(ch, cfg)
    try:
        return check_channel(ch, cfg)
    finally:
        ch.stop(0.2)
