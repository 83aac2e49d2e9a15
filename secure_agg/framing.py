"""Ciphertext bytes and the pipe format between the engine and its worker processes.

Held here, so that both ends of every byte layout live in one place: fixed-width
ciphertext serialisation with its range checks (what ``from_bytes`` accepts from a
peer), and the request / response framing spoken over a worker's stdin / stdout by the
parent (:mod:`secure_agg.procpool`) and the worker (:mod:`secure_agg.worker`). No pickle:

request  = u32 header length, JSON header, body
           header: {"op", "kind": "public"|"private"|"ou_public"|"ou_private", "n",
                    the kind's KEY_FIELDS (hex), "count", ...}
response = u8 status (0 ok), u32 length, payload (status 1: UTF-8 error message)

ops (ciphertexts are big-endian, ``bytes(n^2)`` wide; OU kinds: ``bytes(n)``):

* ``"encrypt"`` (DJN) -- header ``"vw"`` (signed plaintext width), ``"dw"`` (exponent
  width); body: ``count`` signed plaintexts of vw bytes, then ``count`` exponents of dw
  bytes; payload: ``count`` ciphertexts.
* ``"obfuscate"`` -- header ``"dw"``, ``"scheme"``, ``"exp_bits"``, ``"window"``; body:
  ``count`` exponents (units r for ``"standard"``) of dw bytes; payload: ``count``
  obfuscators ``rho mod n^2``.
* ``"product"``, ``"histogram"``, ``"matvec"`` (public vector work) -- header ``"body"``
  (its length), ``"feats"``, ``"nbins"``; body: ``count`` ciphertexts, then the bins
  (``<i4``) or coefficients (``<i8``), row-major; payload: ciphertexts, all-zero for an
  empty histogram bin. Header ``"mod"``: the ciphertext modulus when not ``n^2`` (OU).
"""

from __future__ import annotations

import json
import struct

import gmpy2
from gmpy2 import mpz

HDR = struct.Struct(">I")
RESP = struct.Struct(">BI")
ONE = mpz(1)


# ---- fixed-width ciphertexts -------------------------------------------------------------
def ciphertext_width(n: int) -> int:
    """Bytes of one ciphertext under modulus ``n`` (bytes of n^2)."""
    return (2 * int(n).bit_length() + 7) // 8


def join_ciphertexts(cts, width: int) -> bytes:
    """Fixed-width big-endian bytes; ``None`` (an empty bin) becomes all zeros."""
    zero = bytes(width)
    return b"".join(zero if c is None else mpz(c).to_bytes(width, "big") for c in cts)


def split_ciphertexts(payload: bytes, width: int, allow_empty: bool = False) -> list:
    fb = mpz.from_bytes
    out = [fb(payload[i:i + width], "big") for i in range(0, len(payload), width)]
    if allow_empty:
        return [None if c == 0 else c for c in out]
    return out


def parse_ciphertexts(data: bytes, width: int, n: mpz, nsq: mpz) -> list[mpz]:
    """Ciphertexts received from a peer. Each must lie in ``[1, n^2)`` and be a unit
    (coprime to n): a non-unit is no valid ciphertext and exposes a factor of n, so it
    is refused. Coprimality is checked for the whole batch with one gcd of the product
    mod n; only on failure are elements checked one by one. ``len(data)`` must be a
    multiple of ``width`` (the caller says so in its own words)."""
    fb = mpz.from_bytes
    out = [fb(data[i:i + width], "big") for i in range(0, len(data), width)]
    prod = ONE
    for i, c in enumerate(out):
        if not 0 < c < nsq:
            raise ValueError(f"ciphertext {i} out of range: must be in [1, n^2)")
        prod = prod * c % n
    if gmpy2.gcd(prod, n) != 1:
        bad = next(i for i, c in enumerate(out) if gmpy2.gcd(c, n) != 1)
        raise ValueError(f"ciphertext {bad} is not coprime to n (not a valid ciphertext)")
    return out


def split_reply(payload: bytes, width: int, count: int, what: str) -> list[mpz]:
    """``count`` ciphertexts (or obfuscators) a worker sent back."""
    if len(payload) != width * count:
        raise RuntimeError(f"{what} worker returned a wrong-sized reply")
    return split_ciphertexts(payload, width)


# ---- requests ------------------------------------------------------------------------------
#: the key fields after ``n`` in a spec, per kind (see ``_spec`` of the ciphers)
KEY_FIELDS = {"public": (), "private": ("p", "q"), "ou_public": ("g", "h"),
              "ou_private": ("g", "h", "p", "q")}


def spec_width(spec: tuple) -> int:
    """Bytes of one ciphertext under ``spec``'s key: n^2 for Paillier, n for OU."""
    n = int(spec[1])
    return (n.bit_length() + 7) // 8 if spec[0].startswith("ou_") else ciphertext_width(n)


def _key_head(op: str, spec: tuple) -> dict:
    """``spec``: ``(kind, n, *KEY_FIELDS[kind])``, e.g. ``("public", n)`` or
    ``("private", n, p, q)``; the key holder's factors travel only over its own
    workers' stdin."""
    head = {"op": op, "kind": spec[0], "n": format(int(spec[1]), "x")}
    head.update({k: format(int(v), "x") for k, v in zip(KEY_FIELDS[spec[0]], spec[2:],
                                                          strict=True)})
    return head


def _ints_bytes(values, width: int, signed: bool = False) -> bytes:
    return b"".join(int(v).to_bytes(width, "big", signed=signed) for v in values)


def _bytes_ints(body: bytes, count: int, width: int, offset: int = 0,
                signed: bool = False) -> list[int]:
    return [int.from_bytes(body[offset + i:offset + i + width], "big", signed=signed)
            for i in range(0, count * width, width)]


def encrypt_request(spec: tuple, vals: list[int], draws: list[int],
                    exp_bits: int) -> tuple[dict, bytes]:
    """The ``"encrypt"`` request for ``vals`` with DJN exponents ``draws``."""
    n = int(spec[1])
    vw = (n.bit_length() + 8) // 8 + 1
    dw = (exp_bits + 7) // 8
    body = _ints_bytes(vals, vw, signed=True) + _ints_bytes(draws, dw)
    return {**_key_head("encrypt", spec), "count": len(vals), "vw": vw, "dw": dw}, body


def read_encrypt(head: dict, body: bytes) -> tuple[list[int], list[int]]:
    """(plaintexts, exponents) of an ``"encrypt"`` request."""
    count, vw, dw = int(head["count"]), int(head["vw"]), int(head["dw"])
    return (_bytes_ints(body, count, vw, signed=True),
            _bytes_ints(body, count, dw, offset=count * vw))


def obfuscate_request(spec: tuple, draws: list[int], scheme: str, exp_bits: int,
                      window: int) -> tuple[dict, bytes]:
    """The ``"obfuscate"`` request for ``draws`` (exponents, or units for standard)."""
    n = int(spec[1])
    dw = (n.bit_length() + 7) // 8 if scheme == "standard" else (exp_bits + 7) // 8
    head = {**_key_head("obfuscate", spec), "count": len(draws), "dw": dw,
            "scheme": scheme, "exp_bits": int(exp_bits), "window": int(window)}
    return head, _ints_bytes(draws, dw)


def read_draws(head: dict, body: bytes) -> list[int]:
    """The exponents (or units) of an ``"obfuscate"`` request."""
    return _bytes_ints(body, int(head["count"]), int(head["dw"]))


def vector_request(op: str, n: mpz, width: int, cts: list, extra: dict,
                   tail: bytes, mod: mpz | None = None) -> tuple[dict, bytes]:
    """A ``"product"`` / ``"histogram"`` / ``"matvec"`` request on ``cts``; ``mod`` is
    the ciphertext modulus when it is not ``n^2`` (OU: ``n``)."""
    body = join_ciphertexts(cts, width) + tail
    head = {"op": op, "n": format(int(n), "x"), "count": len(cts), "body": len(body),
            **extra}
    if mod is not None:
        head["mod"] = format(int(mod), "x")
    return head, body


def read_vector(head: dict, body: bytes) -> tuple[mpz, list[mpz], bytes]:
    """``(modulus, ciphertexts, rest of the body)`` of a vector request (range-checked);
    the modulus is ``n^2`` unless the header names another (``"mod"``)."""
    n = mpz(head["n"], 16)
    nsq = mpz(head["mod"], 16) if "mod" in head else n * n
    cw = (nsq.bit_length() + 7) // 8
    count = int(head["count"])
    cts = split_ciphertexts(body[:count * cw], cw)
    if any(not 0 < c < nsq for c in cts):
        raise ValueError("ciphertext out of range")
    return nsq, cts, body[count * cw:]


def body_size(head: dict) -> int:
    """Length of the body that follows a request header."""
    op = head.get("op", "encrypt")
    if op == "encrypt":
        return int(head["count"]) * (int(head["vw"]) + int(head["dw"]))
    if op == "obfuscate":
        return int(head["count"]) * int(head["dw"])
    if op in ("histogram", "matvec", "product"):
        return int(head["body"])
    raise ValueError(f"unknown op {op!r}")


# ---- framing -------------------------------------------------------------------------------
def read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("worker pipe closed")
        buf += chunk
    return bytes(buf)


def frame_request(head: dict, body: bytes) -> bytes:
    h = json.dumps(head).encode()
    return HDR.pack(len(h)) + h + body


def read_request(stream, first: bytes) -> tuple[dict, bytes]:
    """Header and body of the request whose first bytes ``first`` were read already."""
    got = first if len(first) >= HDR.size else first + read_exact(stream,
                                                                   HDR.size - len(first))
    (hlen,) = HDR.unpack(got)
    head = json.loads(read_exact(stream, hlen))
    return head, read_exact(stream, body_size(head))


def frame_response(payload: bytes, error: BaseException | None = None) -> bytes:
    if error is not None:
        payload = f"{type(error).__name__}: {error}".encode()
    return RESP.pack(0 if error is None else 1, len(payload)) + payload


def read_response(stream) -> bytes:
    status, length = RESP.unpack(read_exact(stream, RESP.size))
    payload = read_exact(stream, length)
    if status:
        raise RuntimeError(f"encryption worker failed: {payload.decode(errors='replace')}")
    return payload
