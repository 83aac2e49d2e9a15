"""A synthetic two-party protocol with the message shape of SecureBoost (a large
"encrypted gradients" message per tree from the bank, encrypted histograms back, a
split decision, a sample partition), used to test transcripts and audit without the
real protocols. Every value a party sends derives from its data and its per-job seed,
as in the real pipeline, so replay must reproduce it bit for bit."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import ReplaySide
from federation.link import Link, declare_disclosures, run_two_parties
from federation.transcript import (
    TranscriptWriter,
    exchange_outcome,
    recorded_local_link_pair,
)
from parties.common.artifact import ModelPart
from secure_agg.rng import Drbg

BANK, PLATFORM = "bank-a", "platform-b"

declare_disclosures({
    "syn.partition": ("sample partition", lambda p: int(p.size)),
    "syn.count": "intersection size",
})


def _fold(data: np.ndarray) -> np.ndarray:
    """Bytes that depend on every value of the party's data."""
    return np.frombuffer(hashlib.sha256(data.tobytes()).digest(), dtype=np.uint8)


def bank_side(link: Link, data: np.ndarray, seed: bytes, rounds: int = 3,
              grad_bytes: int = 4096) -> ModelPart:
    rng = Drbg(seed, "bank")
    n = len(data)
    link.send("syn.hello", {"n": int(n), "rounds": rounds})
    m = link.recv_json("syn.count")["m"]
    body = []
    for r in range(rounds):
        noise = np.frombuffer(rng.random_bytes(grad_bytes), dtype=np.uint8)
        grads = (noise ^ np.resize(_fold(data), grad_bytes)).astype(np.uint8)
        link.send("syn.enc_grad", grads)
        hist = link.recv_array("syn.hist", dtype_kind="u")
        best = int(np.argmax(hist.astype(np.int64).sum(axis=0)))
        link.send("syn.split", {"round": r, "bin": best})
        part = link.recv_array("syn.partition", dtype_kind="b", shape=(n,))
        body.append({"bin": best, "left": int(part.sum()), "m": m})
    return ModelPart("secureboost", "bank", link.job_id, {"rounds": rounds}, {"trees": body})


def platform_side(link: Link, data: np.ndarray, seed: bytes) -> ModelPart:
    rng = Drbg(seed, "platform")
    hello = link.recv_json("syn.hello")
    n = hello["n"]
    link.send("syn.count", {"m": int(n)})
    thresholds = []
    for _ in range(hello["rounds"]):
        g = link.recv_array("syn.enc_grad", dtype_kind="u")
        mask = np.frombuffer(rng.random_bytes(g.size), dtype=np.uint8)
        hist = (g ^ mask).reshape(-1, 16)[:, :8].copy()
        hist[:, 0] ^= np.resize(_fold(data), hist.shape[0])
        link.send("syn.hist", hist)
        split = link.recv_json("syn.split")
        thr = float(np.quantile(data, (split["bin"] + 1) / 10))
        thresholds.append(thr)
        link.send("syn.partition", data[:n] <= thr)
    return ModelPart("secureboost", "platform", link.job_id, {}, {"thresholds": thresholds})


@dataclass
class Party:
    name: str
    role: str
    key: Ed25519PrivateKey
    data: np.ndarray
    seed: bytes

    def side(self) -> ReplaySide:
        from federation.transcript import public_key_bytes

        return ReplaySide(node_cfg=self.data, spec=None, seed=self.seed,
                          signing_public_hex=public_key_bytes(self.key).hex())


def runner_for(role: str, **kw):
    def run(side: ReplaySide, link) -> str:
        fn = bank_side if role == "bank" else platform_side
        return fn(link, side.node_cfg, side.seed, **kw).digest()
    return run


def make_parties(n: int = 200, rng_seed: int = 7) -> tuple[Party, Party]:
    g = np.random.default_rng(rng_seed)
    return (Party(BANK, "bank", Ed25519PrivateKey.generate(), g.normal(size=n), os.urandom(32)),
            Party(PLATFORM, "platform", Ed25519PrivateKey.generate(),
                  g.normal(size=n), os.urandom(32)))


SPEC = {"job": {"name": "synthetic", "algorithm": "secureboost"}}


def run_job(tmp: Path, job_id: str, bank: Party, platform: Party, *, rounds: int = 3,
            grad_bytes: int = 4096, fail: bool = False) -> tuple[Path, Path]:
    """Run the synthetic job over a recorded local link; return both transcript paths."""
    la, lb = recorded_local_link_pair(job_id, bank.name, bank.key, platform.name, platform.key)
    roles = {bank.name: "bank", platform.name: "platform"}
    paths = []
    for link, me, other in ((la, bank, platform), (lb, platform, bank)):
        p = tmp / me.role / "transcripts" / f"{job_id}.jsonl"
        link.recorder = TranscriptWriter.create(
            p, job_id=job_id, party=me.name, peer=other.name, signing_key=me.key,
            peer_public_key=other.key.public_key(), spec=SPEC,
            protocols={"synthetic": "1"}, key_sizes={"paillier": 2048}, roles=roles)
        paths.append(p)

    def side(link, me: Party, fn, **kw):
        try:
            part = fn(link, me.data, me.seed, **kw)
            if fail:
                raise RuntimeError("simulated failure after training")
        except Exception as exc:
            link.recorder.abort(f"{type(exc).__name__}: {exc}")
            raise
        exchange_outcome(link, link.recorder, part.digest())
        return part

    try:
        run_two_parties(lambda: side(la, bank, bank_side, rounds=rounds, grad_bytes=grad_bytes),
                        lambda: side(lb, platform, platform_side), timeout=60)
    except RuntimeError:
        if not fail:
            raise
    return paths[0], paths[1]


def digest_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
