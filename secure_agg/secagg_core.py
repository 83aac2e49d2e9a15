"""Secure aggregation building blocks: parameters, quantisation and the cryptography.

See :mod:`secure_agg.secagg` for the protocol these serve. Everything here is a pure
function of its inputs (randomness is passed in), so a round is replayable from seeds.

- key agreement: X25519; every derived key is HKDF-SHA256 of the shared secret with
  an ``info`` naming its use, the session and both client ids;
- share encryption: AES-256-GCM, 96-bit random nonce per ciphertext, the sender and
  receiver ids and the session bound as associated data;
- mask expansion (PRG): the AES-256-CTR keystream under the derived key, read as
  little-endian unsigned words and reduced modulo ``2**mod_bits``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DOMAIN = b"fedjoint-secagg-v1"
KEY_BYTES = 32      # X25519 keys, seeds, derived keys
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_CLIENT_ID = 2**63 - 1
#: the stages of a round, in order (a client that stops is "dropped" at the first it
#: did not complete)
STAGES = ("advertise", "share_keys", "masked_input", "unmask")


class SecAggError(ValueError):
    """A secure-aggregation check failed; the message names the client and the check."""


@dataclass(frozen=True)
class SecAggParams:
    """One round's public parameters, the same at the server and every client.

    ``num_clients`` bounds the round's participants; ``threshold`` ``t`` is the Shamir
    reconstruction threshold and the minimum number of clients that must survive every
    stage. ``t > num_clients / 2`` is required, so two disjoint sets of ``t`` honest
    clients (one revealing a peer's self-mask seed, the other its mask key) cannot
    exist. Each coordinate is clipped to ``[-clip, clip]`` and rounded to one of
    ``2**bits`` levels; sums are taken modulo ``2**mod_bits``, which must hold
    ``num_clients * (2**bits - 1)`` without wrapping. ``session`` (at most 64 bytes) is
    bound into every derived key and ciphertext, so messages of one round are useless
    in another.

    SecAgg+: ``neighbours`` ``k`` (even, >= 2) makes each client share keys and masks
    with only ``k`` peers on a pseudorandom k-regular graph
    (:mod:`secure_agg.secagg_graph`); each client's secrets are then split among its
    ``k + 1`` holders (itself and its neighbours) with threshold
    ``neighbour_threshold``, which must exceed ``(k + 1) / 2`` (default: the least
    such). ``k >= |U1| - 1`` is plain SecAgg.

    ``signed``: every client signs its advertised keys with its long-term Ed25519 key
    and checks every peer's signature against the keys it was configured with, so a
    server can neither substitute keys nor add clients of its own.
    """

    num_clients: int
    threshold: int
    dim: int
    clip: float = 1.0
    bits: int = 16
    mod_bits: int = 32
    session: bytes = b""
    neighbours: int | None = None
    neighbour_threshold: int | None = None
    signed: bool = False

    def __post_init__(self):
        n, t = self.num_clients, self.threshold
        if not isinstance(n, int) or not 2 <= n <= 100_000:
            raise SecAggError(f"num_clients must be an integer in [2, 100000], got {n!r}")
        if not isinstance(t, int) or not n // 2 < t <= n:
            raise SecAggError(f"threshold must be an integer in ({n}/2, {n}] for "
                              f"{n} clients, got {t!r}")
        if not isinstance(self.dim, int) or not 1 <= self.dim <= 2**31:
            raise SecAggError(f"dim must be an integer in [1, 2**31], got {self.dim!r}")
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip)
                and self.clip > 0):
            raise SecAggError(f"clip must be a finite number > 0, got {self.clip!r}")
        if not isinstance(self.mod_bits, int) or not 8 <= self.mod_bits <= 64:
            raise SecAggError(f"mod_bits must be an integer in [8, 64], got "
                              f"{self.mod_bits!r}")
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 48:
            raise SecAggError(f"bits must be an integer in [1, 48], got {self.bits!r}")
        if n * (2**self.bits - 1) > 2**self.mod_bits - 1:
            raise SecAggError(
                f"a sum of {n} updates quantised to {self.bits} bits can reach "
                f"{n * (2**self.bits - 1)}, which wraps modulo 2**{self.mod_bits}; "
                f"raise mod_bits to at least {(n * (2**self.bits - 1)).bit_length()} "
                f"or lower bits")
        if not isinstance(self.session, bytes) or len(self.session) > 64:
            raise SecAggError("session must be bytes of length <= 64")
        if not isinstance(self.signed, bool):
            raise SecAggError(f"signed must be a bool, got {self.signed!r}")
        k, tk = self.neighbours, self.neighbour_threshold
        if k is None:
            if tk is not None:
                raise SecAggError("neighbour_threshold needs neighbours (SecAgg+)")
            return
        if not isinstance(k, int) or k < 2 or k % 2:
            raise SecAggError(f"neighbours must be an even integer >= 2, got {k!r}")
        if tk is not None and (not isinstance(tk, int) or not (k + 1) // 2 < tk <= k + 1):
            raise SecAggError(f"neighbour_threshold must be an integer in "
                              f"({(k + 1) / 2}, {k + 1}] for {k} neighbours, got {tk!r}")

    @property
    def holder_threshold(self) -> int:
        """SecAgg+'s Shamir threshold among a client's ``neighbours + 1`` holders."""
        k = self.neighbours or 0
        return self.neighbour_threshold or (k + 1) // 2 + 1

    @property
    def modulus(self) -> int:
        return 2**self.mod_bits

    @property
    def word_bytes(self) -> int:
        """Bytes per masked coordinate on the wire (4 up to 32-bit moduli, else 8)."""
        return 4 if self.mod_bits <= 32 else 8

    @property
    def wire_dtype(self) -> np.dtype:
        return np.dtype("<u4" if self.word_bytes == 4 else "<u8")

    @property
    def step(self) -> float:
        """Quantisation step: ``2 * clip / (2**bits - 1)``."""
        return 2.0 * self.clip / (2**self.bits - 1)

    def error_bound(self, clients: int) -> float:
        """Largest per-coordinate error of a dequantised sum of ``clients`` updates
        whose coordinates lie within ``[-clip, clip]`` (half a step per client, plus
        float64 rounding)."""
        return clients * self.step / 2 * (1 + 1e-9) + clients * self.clip * 1e-12


def check_client_id(cid, what: str = "client id") -> int:
    if isinstance(cid, (bool, np.bool_)) or not isinstance(cid, (int, np.integer)) \
            or not 0 <= int(cid) <= MAX_CLIENT_ID:
        raise SecAggError(f"{what} must be an integer in [0, 2**63), got {cid!r}")
    return int(cid)


# -- quantisation ------------------------------------------------------------------

def quantise(update: np.ndarray, params: SecAggParams) -> np.ndarray:
    """Clip to ``[-clip, clip]`` and round to the nearest of ``2**bits`` levels
    (level ``k`` stands for ``-clip + k * step``); uint64 in ``[0, 2**bits)``."""
    x = np.clip(np.asarray(update, dtype=np.float64), -params.clip, params.clip)
    q = np.rint((x + params.clip) / params.step)
    return np.minimum(q, 2**params.bits - 1).astype(np.uint64)


def dequantise_sum(total: np.ndarray, clients: int, params: SecAggParams) -> np.ndarray:
    """The float sum that the integer sum of ``clients`` quantised updates stands for."""
    return total.astype(np.float64) * params.step - clients * params.clip


# -- keys and derived secrets ------------------------------------------------------

def private_key(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes_raw()


def _ids(a: int, b: int) -> bytes:
    return struct.pack(">QQ", a, b)


def _agree(sk: X25519PrivateKey, peer_pk: bytes, who: str) -> bytes:
    try:
        return sk.exchange(X25519PublicKey.from_public_bytes(peer_pk))
    except ValueError as e:  # wrong length or a low-order point (all-zero secret)
        raise SecAggError(f"{who}: key agreement failed ({e})") from None


def signing_key(key, who: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object or its 32 raw bytes."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, bytes) and len(key) == 32:
        return Ed25519PrivateKey.from_private_bytes(key)
    raise SecAggError(f"{who}: a signed round needs an Ed25519 signing key (key object "
                      f"or 32 raw bytes)")


def verify_key(key, who: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object or its 32 raw bytes."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(key)
    raise SecAggError(f"{who}: not an Ed25519 public key (key object or 32 raw bytes)")


def signature_ok(pub: Ed25519PublicKey, sig: bytes, payload: bytes) -> bool:
    try:
        pub.verify(sig, payload)
        return True
    except InvalidSignature:
        return False


def hkdf(secret: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=info).derive(secret)


def derive_key(sk: X25519PrivateKey, peer_pk: bytes, use: bytes, session: bytes,
               u: int, v: int, who: str) -> bytes:
    """A key for ``use`` (b"enc" or b"mask") shared by clients ``u`` and ``v`` (either
    order gives the same key)."""
    lo, hi = min(u, v), max(u, v)
    info = DOMAIN + b"/" + use + b"/" + bytes([len(session)]) + session + _ids(lo, hi)
    return hkdf(_agree(sk, peer_pk, who), info)


def share_aad(session: bytes, sender: int, receiver: int) -> bytes:
    return DOMAIN + b"/share/" + bytes([len(session)]) + session + _ids(sender, receiver)


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes | None:
    """The plaintext, or None if the tag does not verify."""
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        return None


def seed_commitment(session: bytes, cid: int, seed: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed (hiding: the seed is 256 uniform bits)."""
    return hashlib.sha256(DOMAIN + b"/commit/" + bytes([len(session)]) + session +
                          struct.pack(">Q", cid) + seed).digest()


def self_mask_key(session: bytes, cid: int, seed: bytes) -> bytes:
    return hkdf(seed, DOMAIN + b"/self/" + bytes([len(session)]) + session +
                struct.pack(">Q", cid))


def prg(key: bytes, params: SecAggParams) -> np.ndarray:
    """``dim`` words uniform modulo ``2**mod_bits`` (uint64), from AES-256-CTR."""
    wb = params.word_bytes
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    words = np.frombuffer(enc.update(b"\0" * (params.dim * wb)),
                          dtype="<u4" if wb == 4 else "<u8").astype(np.uint64)
    if params.mod_bits < 64:
        words &= np.uint64(params.modulus - 1)
    return words


def reduce(x: np.ndarray, params: SecAggParams) -> np.ndarray:
    """uint64 arithmetic wraps modulo 2**64, a multiple of the modulus: reduce once."""
    if params.mod_bits < 64:
        x = x & np.uint64(params.modulus - 1)
    return x
