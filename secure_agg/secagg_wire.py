"""The messages of a secure-aggregation round and their byte encoding.

Every message is a frozen dataclass whose constructor validates its structure (ids
in range and distinct, fixed-size fields of the right length), so a decoded message
and one built in-process pass the same checks. Encoding: ``b"FJSA"``, version byte,
message tag byte, then the fields; integers are big-endian (ids u64, counts u32),
masked words little-endian. :func:`decode_message` returns a typed message or raises
:class:`SecAggError` (never another exception): lengths are checked against the bytes
present before anything is allocated, trailing bytes are refused. Semantic checks
(is this id in the round, the right shape for ``dim``) are the receiver's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from secure_agg.secagg_core import KEY_BYTES, NONCE_BYTES, TAG_BYTES, SecAggError, check_client_id
from secure_agg.shamir import PRIME, SHARE_BYTES

MAGIC = b"FJSA"
VERSION = 1
#: a share ciphertext: nonce, AES-GCM of (b-share || s-key share), tag
CT_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES
SIG_BYTES = 64


def _check_ids(ids, what: str) -> None:
    seen = set()
    for i in ids:
        check_client_id(i, what)
        if i in seen:
            raise SecAggError(f"{what} {i} appears twice")
        seen.add(i)


def _check_bytes(b, n: int, what: str) -> None:
    if not isinstance(b, bytes) or len(b) != n:
        raise SecAggError(f"{what} must be {n} bytes")


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client -> server: the client's two X25519 public keys, and in a signed
    round its Ed25519 signature over them (:func:`advertise_payload`)."""
    cid: int
    c_pk: bytes   # for encrypting shares
    s_pk: bytes   # for pairwise mask agreement
    sig: bytes = b""

    def __post_init__(self):
        check_client_id(self.cid)
        _check_bytes(self.c_pk, KEY_BYTES, f"client {self.cid}'s c public key")
        _check_bytes(self.s_pk, KEY_BYTES, f"client {self.cid}'s s public key")
        if self.sig != b"":
            _check_bytes(self.sig, SIG_BYTES, f"client {self.cid}'s key signature")


@dataclass(frozen=True)
class KeyList:
    """Stage 0 -> 1, server -> every client in U1: everyone's advertised keys."""
    keys: tuple[AdvertiseKeys, ...]

    def __post_init__(self):
        if not all(isinstance(k, AdvertiseKeys) for k in self.keys):
            raise SecAggError("a key list holds AdvertiseKeys entries only")
        _check_ids([k.cid for k in self.keys], "key list client id")
        if len({bool(k.sig) for k in self.keys}) > 1:
            raise SecAggError("a key list's entries are all signed or all unsigned")

    def by_id(self) -> dict[int, AdvertiseKeys]:
        return {k.cid: k for k in self.keys}


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, client -> server: a commitment to its self-mask seed and, per peer, the
    encrypted shares of that seed and of its s private key."""
    cid: int
    b_commit: bytes
    shares: tuple[tuple[int, bytes], ...]   # (receiver id, ciphertext)

    def __post_init__(self):
        check_client_id(self.cid)
        _check_bytes(self.b_commit, 32, f"client {self.cid}'s seed commitment")
        _check_ids([v for v, _ in self.shares], f"client {self.cid}'s share receiver")
        for v, ct in self.shares:
            _check_bytes(ct, CT_BYTES, f"client {self.cid}'s share ciphertext for {v}")


@dataclass(frozen=True)
class ShareBundle:
    """Stage 1 -> 2, server -> one client in U2: the ciphertexts addressed to it."""
    to: int
    shares: tuple[tuple[int, bytes], ...]   # (sender id, ciphertext)

    def __post_init__(self):
        check_client_id(self.to)
        _check_ids([u for u, _ in self.shares], f"share sender (bundle for {self.to})")
        for u, ct in self.shares:
            _check_bytes(ct, CT_BYTES, f"share ciphertext from {u} to {self.to}")


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Stage 2, client -> server: the masked, quantised update (words mod 2**mod_bits)."""
    cid: int
    data: np.ndarray

    def __post_init__(self):
        check_client_id(self.cid)
        if not isinstance(self.data, np.ndarray):
            raise SecAggError(f"client {self.cid}'s masked input must be a numpy array")


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 2 -> 3, server -> every client in U3: who sent a masked input
    (``survivors``, U3) and who of U2 did not (``dropped``)."""
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def __post_init__(self):
        _check_ids(list(self.survivors), "survivor id")
        _check_ids(list(self.dropped), "dropped id")


@dataclass(frozen=True)
class UnmaskShares:
    """Stage 3, client -> server: its b-share of each survivor, its s-key share of each
    dropped client."""
    cid: int
    b_shares: tuple[tuple[int, int], ...]   # (survivor id, share of its seed)
    s_shares: tuple[tuple[int, int], ...]   # (dropped id, share of its s private key)

    def __post_init__(self):
        check_client_id(self.cid)
        _check_ids([v for v, _ in self.b_shares], f"client {self.cid}'s b-share peer")
        _check_ids([v for v, _ in self.s_shares], f"client {self.cid}'s s-share peer")
        for v, y in self.b_shares + self.s_shares:
            if not isinstance(y, int) or not 0 <= y < PRIME:
                raise SecAggError(f"client {self.cid}'s share for {v} is not a field "
                                  f"element")


Message = AdvertiseKeys | KeyList | ShareKeys | ShareBundle | MaskedInput | \
    UnmaskRequest | UnmaskShares
_TAGS = {AdvertiseKeys: 1, KeyList: 2, ShareKeys: 3, ShareBundle: 4, MaskedInput: 5,
         UnmaskRequest: 6, UnmaskShares: 7}
#: the signed forms of AdvertiseKeys and KeyList (each entry carries a signature)
SIGNED_TAGS = {AdvertiseKeys: 8, KeyList: 9}


# -- encoding ----------------------------------------------------------------------

def _u64(x: int) -> bytes:
    return struct.pack(">Q", x)


def _u32(x: int) -> bytes:
    return struct.pack(">I", x)


def _pairs_bytes(pairs) -> bytes:
    return _u32(len(pairs)) + b"".join(_u64(i) + b for i, b in pairs)


def _pairs_int(pairs) -> bytes:
    return _u32(len(pairs)) + b"".join(_u64(i) + y.to_bytes(SHARE_BYTES, "big")
                                       for i, y in pairs)


def _ids_bytes(ids) -> bytes:
    return _u32(len(ids)) + b"".join(_u64(i) for i in ids)


def encode(msg: Message) -> bytes:
    """The wire bytes of ``msg``."""
    tag = _TAGS.get(type(msg))
    if tag is None:
        raise SecAggError(f"cannot encode {type(msg).__name__}")
    signed = (isinstance(msg, AdvertiseKeys) and msg.sig != b"") or (
        isinstance(msg, KeyList) and any(k.sig for k in msg.keys))
    head = MAGIC + bytes([VERSION, SIGNED_TAGS[type(msg)] if signed else tag])
    if isinstance(msg, AdvertiseKeys):
        body = _u64(msg.cid) + msg.c_pk + msg.s_pk + msg.sig
    elif isinstance(msg, KeyList):
        body = _u32(len(msg.keys)) + b"".join(_u64(k.cid) + k.c_pk + k.s_pk + k.sig
                                              for k in msg.keys)
    elif isinstance(msg, ShareKeys):
        body = _u64(msg.cid) + msg.b_commit + _pairs_bytes(msg.shares)
    elif isinstance(msg, ShareBundle):
        body = _u64(msg.to) + _pairs_bytes(msg.shares)
    elif isinstance(msg, MaskedInput):
        d = msg.data
        if d.dtype not in (np.dtype("<u4"), np.dtype("<u8")) or d.ndim != 1:
            raise SecAggError(f"client {msg.cid}'s masked input must be a 1-d uint32 "
                              f"or uint64 array, got {d.dtype} of shape {d.shape}")
        body = _u64(msg.cid) + bytes([d.dtype.itemsize]) + _u32(d.size) + d.tobytes()
    elif isinstance(msg, UnmaskRequest):
        body = _ids_bytes(msg.survivors) + _ids_bytes(msg.dropped)
    else:
        body = _u64(msg.cid) + _pairs_int(msg.b_shares) + _pairs_int(msg.s_shares)
    return head + body


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SecAggError(f"{self.what}: truncated (needs {n} more bytes at offset "
                              f"{self.pos}, {len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def count(self, item_bytes: int) -> int:
        n = struct.unpack(">I", self.take(4))[0]
        if n * item_bytes > len(self.data) - self.pos:
            raise SecAggError(f"{self.what}: announces {n} items of {item_bytes} bytes, "
                              f"only {len(self.data) - self.pos} bytes follow")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise SecAggError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def decode_message(data: bytes) -> Message:
    """A typed message from its wire bytes, or :class:`SecAggError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SecAggError(f"secure-aggregation message must be bytes, got "
                          f"{type(data).__name__}")
    data = bytes(data)
    if len(data) < 6 or data[:4] != MAGIC:
        raise SecAggError("not a secure-aggregation message (bad magic)")
    if data[4] != VERSION:
        raise SecAggError(f"secure-aggregation message version {data[4]}, "
                          f"expected {VERSION}")
    tag = data[5]
    kinds = {v: k for k, v in _TAGS.items()} | {v: k for k, v in SIGNED_TAGS.items()}
    if tag not in kinds:
        raise SecAggError(f"unknown secure-aggregation message tag {tag}")
    r = _Reader(data[6:], kinds[tag].__name__)
    sig = SIG_BYTES if tag in (8, 9) else 0

    def entry() -> AdvertiseKeys:
        return AdvertiseKeys(r.u64(), r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(sig))

    if tag in (1, 8):
        msg = entry()
    elif tag in (2, 9):
        n = r.count(8 + 2 * KEY_BYTES + sig)
        msg = KeyList(tuple(entry() for _ in range(n)))
    elif tag == 3:
        cid, commit = r.u64(), r.take(32)
        n = r.count(8 + CT_BYTES)
        msg = ShareKeys(cid, commit, tuple((r.u64(), r.take(CT_BYTES)) for _ in range(n)))
    elif tag == 4:
        to = r.u64()
        n = r.count(8 + CT_BYTES)
        msg = ShareBundle(to, tuple((r.u64(), r.take(CT_BYTES)) for _ in range(n)))
    elif tag == 5:
        cid, width = r.u64(), r.take(1)[0]
        if width not in (4, 8):
            raise SecAggError(f"MaskedInput from client {cid}: word width {width}, "
                              f"expected 4 or 8")
        n = r.count(width)
        msg = MaskedInput(cid, np.frombuffer(r.take(n * width),
                                             dtype="<u4" if width == 4 else "<u8"))
    elif tag == 6:
        surv = tuple(r.u64() for _ in range(r.count(8)))
        msg = UnmaskRequest(surv, tuple(r.u64() for _ in range(r.count(8))))
    else:
        cid = r.u64()
        b = tuple((r.u64(), int.from_bytes(r.take(SHARE_BYTES), "big"))
                  for _ in range(r.count(8 + SHARE_BYTES)))
        s = tuple((r.u64(), int.from_bytes(r.take(SHARE_BYTES), "big"))
                  for _ in range(r.count(8 + SHARE_BYTES)))
        msg = UnmaskShares(cid, b, s)
    r.end()
    return msg


def advertise_payload(session: bytes, cid: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """What a client signs with its long-term Ed25519 key in a signed round."""
    return (b"fedjoint-secagg-v1/advertise/" + bytes([len(session)]) + session +
            _u64(cid) + c_pk + s_pk)


def as_message(obj, kind: type, who: str):
    """``obj`` (a message or its bytes) as a ``kind``, else :class:`SecAggError`."""
    msg = decode_message(obj) if isinstance(obj, (bytes, bytearray, memoryview)) else obj
    if not isinstance(msg, kind):
        raise SecAggError(f"{who}: expected a {kind.__name__} message, got "
                          f"{type(msg).__name__}")
    return msg
