"""A secure-aggregation round driven stage by stage, so a test can look at or alter
any message between a client and the server (``run_round`` hides them)."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secure_agg.rng import Drbg
from secure_agg.secagg import SecAggClient, SecAggParams, SecAggServer


class Round:
    def __init__(self, n=5, t=3, dim=8, seed=0, updates=None, **kw):
        self.p = SecAggParams(num_clients=n, threshold=t, dim=dim, **kw)
        rng = np.random.default_rng(seed)
        self.updates = updates or {c: rng.uniform(-1, 1, dim) for c in range(n)}
        base = Drbg(bytes([seed % 256]) * 32)
        self.sign = {c: Ed25519PrivateKey.from_private_bytes(
            base.child(f"sign/{c}").random_bytes(32)) for c in range(n)}
        self.pubs = {c: k.public_key() for c, k in self.sign.items()}
        signed = self.p.signed
        self.server = SecAggServer(self.p, clients=range(n),
                                   peer_keys=self.pubs if signed else None)
        self.clients = {c: SecAggClient(c, self.p, base.child(str(c)),
                                        self.sign[c] if signed else None,
                                        self.pubs if signed else None) for c in range(n)}
        self.sent: dict[str, dict] = {}

    def _ids(self, ids):
        return sorted(self.clients) if ids is None else list(ids)

    def advertise(self, ids=None, close=True):
        self.sent["advertise"] = {c: self.clients[c].advertise() for c in self._ids(ids)}
        for m in self.sent["advertise"].values():
            self.server.receive_advertise(m)
        if close:
            self.keys = self.server.key_list()

    def share(self, ids=None, close=True):
        ids = self._ids(ids)
        self.sent["share_keys"] = {c: self.clients[c].share_keys(self.keys) for c in ids}
        for m in self.sent["share_keys"].values():
            self.server.receive_share_keys(m)
        if close:
            self.bundles = self.server.share_bundles()

    def mask(self, ids=None, close=True):
        ids = self._ids(ids)
        self.sent["masked_input"] = {
            c: self.clients[c].masked_input(self.bundles[c], self.updates[c]) for c in ids}
        for m in self.sent["masked_input"].values():
            self.server.receive_masked_input(m)
        if close:
            self.request = self.server.unmask_request()

    def unmask(self, ids=None, close=True):
        ids = self._ids(ids)
        self.sent["unmask"] = {c: self.clients[c].unmask(self.request) for c in ids}
        for m in self.sent["unmask"].values():
            self.server.receive_unmask(m)
        return self.server.result() if close else None

    def through(self, stage: str):
        """Run every client through ``stage`` (advertise / share / mask)."""
        for name in ("advertise", "share", "mask"):
            getattr(self, name)()
            if name == stage:
                return self
        return self
