"""The worker process: ``python -m secure_agg.worker [--nice N]``.

Serves the requests of :mod:`secure_agg.framing` on stdin / stdout, one at a time,
with the kernels of :mod:`secure_agg.kernels`, until stdin closes (the parent exits).
It imports those modules (and :mod:`secure_agg.ou_kernels`) only -- never the cipher
classes or the parent's pool --
so a worker starts fast and the engine's import graph has no cycle. It keeps the
kernels (with their tables, ~17 MB per key) of its 3 most recent keys.

Why processes and not ``multiprocessing``: see :mod:`secure_agg.procpool`.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from gmpy2 import mpz

from secure_agg.framing import (
    HDR,
    KEY_FIELDS,
    ciphertext_width,
    frame_response,
    join_ciphertexts,
    read_draws,
    read_encrypt,
    read_request,
    read_vector,
)
from secure_agg.kernels import (
    PrivateKernel,
    PublicKernel,
    histogram_chunk,
    matvec_chunk,
    product,
)
from secure_agg.ou_kernels import OUKernel

#: keys whose kernels (and tables) a worker keeps
CACHED_KEYS = 3


def _kernel(head: dict, cache: dict):
    kind = head["kind"]
    fields = [mpz(head[k], 16) for k in KEY_FIELDS[kind]]
    key = (kind, head["n"], *fields)
    kernel = cache.get(key)
    if kernel is None:
        n = mpz(head["n"], 16)
        if kind == "private":
            kernel = PrivateKernel(n, *fields)
        elif kind == "public":
            kernel = PublicKernel(n)
        else:
            kernel = OUKernel(n, fields[0], fields[1],
                              tuple(fields[2:]) if kind == "ou_private" else None)
        while len(cache) >= CACHED_KEYS:  # keep the newest
            cache.pop(next(iter(cache)))
        cache[key] = kernel
    return kernel


def _width(kernel) -> int:
    """Ciphertext bytes of a kernel's key (OU kernels know theirs; Paillier: n^2)."""
    return getattr(kernel, "width", None) or ciphertext_width(kernel.n)


def _encrypt(head: dict, body: bytes, cache: dict) -> bytes:
    kernel = _kernel(head, cache)
    vals, draws = read_encrypt(head, body)
    return join_ciphertexts(kernel.encrypt(vals, draws, "djn"), _width(kernel))


def _obfuscate(head: dict, body: bytes, cache: dict) -> bytes:
    kernel = _kernel(head, cache)
    scheme = str(head["scheme"])
    if int(head["exp_bits"]) != kernel.exp_bits(scheme):
        raise ValueError("obfuscate: exponent size does not match the scheme")
    rhos = kernel.obfuscate(read_draws(head, body), scheme, int(head.get("window", 8)))
    return join_ciphertexts(rhos, _width(kernel))


def _vector(op: str, head: dict, body: bytes) -> bytes:
    """Public-key vector work on ciphertexts sent as bytes (range-checked)."""
    nsq, cts, rest = read_vector(head, body)
    cw = (nsq.bit_length() + 7) // 8
    if op == "product":
        return join_ciphertexts([product(cts, nsq)], cw)
    count, feats = int(head["count"]), int(head["feats"])
    if op == "histogram":
        sub = np.frombuffer(rest, dtype="<i4").reshape(count, feats)
        return join_ciphertexts(histogram_chunk(cts, sub, int(head["nbins"]), nsq), cw)
    X = np.frombuffer(rest, dtype="<i8").reshape(count, feats)
    return join_ciphertexts(matvec_chunk(cts, X, nsq), cw)


def handle(head: dict, body: bytes, cache: dict) -> bytes:
    """The reply payload of one request (``body_size`` has vetted ``op``)."""
    op = head.get("op", "encrypt")
    if op == "encrypt":
        return _encrypt(head, body, cache)
    if op == "obfuscate":
        return _obfuscate(head, body, cache)
    return _vector(op, head, body)


def serve(stdin=None, stdout=None) -> None:
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    cache: dict[tuple, object] = {}
    while True:
        raw = stdin.read(HDR.size)
        if not raw:
            return
        try:
            head, body = read_request(stdin, raw)
            stdout.write(frame_response(handle(head, body, cache)))
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            stdout.write(frame_response(b"", exc))
        stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--nice":
        try:
            os.nice(int(sys.argv[2]))
        except (OSError, ValueError):
            pass
    serve()
