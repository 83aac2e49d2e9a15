"""Helpers for tests and benchmarks: key sets and a connected pair of channels on loopback.

Everything here uses real keys, real TLS and real gRPC; nothing is mocked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from federation.channel.peer import PeerChannel
from federation.channel.settings import ChannelSettings
from federation.keys import (
    LocalIdentity,
    PeerIdentity,
    init_party_keys,
    load_local_identity,
    load_peer_identity,
)
from federation.link import MessageRecorder


def make_keys(out_dir: str | os.PathLike, party: str) -> dict:
    """``init_party_keys`` into ``out_dir/party`` (created)."""
    return init_party_keys(party, Path(out_dir) / party)


def identities(a: dict, b: dict) -> tuple[LocalIdentity, PeerIdentity]:
    """(a's own identity, b as a's pinned peer) from two ``init_party_keys`` results."""
    local = load_local_identity(a["party"], a["tls_cert"], a["tls_key"], a["signing_key"])
    peer = load_peer_identity(b["party"], b["tls_cert"], b["cert_fingerprint"],
                              b["signing_pub"], b["signing_fingerprint"])
    return local, peer


def channel_pair(key_dir: str | os.PathLike, a: str = "bank", b: str = "platform",
                 settings: ChannelSettings | None = None,
                 recorder_factory: Callable[[str], MessageRecorder | None] | None = None,
                 ) -> tuple[PeerChannel, PeerChannel, dict, dict]:
    """Two started channels on 127.0.0.1 (ephemeral ports) pinned to each other.

    Returns ``(chan_a, chan_b, keys_a, keys_b)``; the caller stops both channels.
    """
    ka, kb = make_keys(key_dir, a), make_keys(key_dir, b)
    la, pa = identities(ka, kb)
    lb, pb_ = identities(kb, ka)
    ca = PeerChannel(la, pa, "127.0.0.1:0", settings=settings,
                     recorder_factory=recorder_factory).start()
    try:
        cb = PeerChannel(lb, pb_, "127.0.0.1:0", f"127.0.0.1:{ca.port}", settings=settings,
                         recorder_factory=recorder_factory).start()
    except BaseException:
        ca.stop(0)
        raise
    ca.peer_addr = f"127.0.0.1:{cb.port}"
    return ca, cb, ka, kb


def process_side(role: str, keys: dict, conn) -> PeerChannel:
    """One side of a two-process benchmark or test: start this process's channel on a
    free loopback port, swap ports with the other process over the pipe ``conn``, and
    return the started channel. ``keys`` maps "bank"/"platform" to make_keys() output."""
    other = "platform" if role == "bank" else "bank"
    local, peer = identities(keys[role], keys[other])
    chan = PeerChannel(local, peer, "127.0.0.1:0").start()
    conn.send(chan.port)
    chan.peer_addr = f"127.0.0.1:{conn.recv()}"
    return chan


def spawn_process_pair(target: Callable, cfg: dict, key_dir: str | os.PathLike):
    """Parent side of :func:`process_side`: run ``target(role, keys, conn, cfg)`` for the
    bank and the platform in two spawned processes, swap their ports, and wait until both
    send "ready". Returns ``(processes, parent pipe ends)``, each keyed by role."""
    import multiprocessing as mp

    keys = {r: make_keys(key_dir, r) for r in ("bank", "platform")}
    ctx = mp.get_context("spawn")
    pipes = {r: ctx.Pipe() for r in ("bank", "platform")}
    procs = {r: ctx.Process(target=target, args=(r, keys, pipes[r][1], cfg)) for r in pipes}
    for p in procs.values():
        p.start()
    conns = {r: pipes[r][0] for r in pipes}
    ports = {r: conns[r].recv() for r in conns}
    conns["bank"].send(ports["platform"])
    conns["platform"].send(ports["bank"])
    for r in conns:
        msg = conns[r].recv()
        if msg != "ready":
            for p in procs.values():
                p.kill()
            raise RuntimeError(msg["error"] if isinstance(msg, dict) else str(msg))
    return procs, conns
