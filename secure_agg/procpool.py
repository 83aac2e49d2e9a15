"""Worker processes for fixed-base-table (DJN) encryption.

Why processes: see :mod:`secure_agg.pool`. Why not ``multiprocessing``: its spawn and
forkserver methods re-import the caller's ``__main__`` in every worker (breaking any
unguarded script that encrypts), ``fork`` is unsafe next to gRPC threads, and both use
pickle. Instead each worker is ``python -m secure_agg.procpool`` and the two ends speak
a fixed binary format over the worker's stdin/stdout:

request  = u32 header length, JSON header, body
           header: {"kind": "public"|"private", "n", "p", "q" (hex), "count",
                    "vw" (signed plaintext width), "dw" (exponent width)}
           body:   count signed big-endian plaintexts of vw bytes, then count
                   big-endian exponents of dw bytes
response = u8 status (0 ok), u32 length, payload: count ciphertexts of width
           bytes(n^2) (status 1: UTF-8 error message)

Other ops (``"op"`` in the header): ``"histogram"``, ``"matvec"``, ``"product"`` (public
vector work on ciphertexts in the body) and ``"obfuscate"``: ``count`` exponents (or, for
``"scheme": "standard"``, units r) of ``dw`` bytes in, ``count`` obfuscators ``rho mod
n^2`` out -- the work behind :meth:`PaillierPublicCipher.precompute_obfuscators`.

A worker caches the ciphers (with their tables) of its 3 most recent keys. Workers start
lazily, serve requests one at a time, and exit when their stdin closes (at interpreter
exit).

:class:`BackgroundPool` runs queued obfuscator chunks on its own worker processes,
started with a lower CPU priority (``nice``, default 10, ``FEDJOINT_BG_NICE``), so
precomputation soaks up cores the protocol leaves idle (waiting for the peer) without
slowing the protocol's own critical path; a consumer that needs a chunk nobody has
started yet computes it itself on the normal-priority pool (see
``secure_agg.paillier.PaillierObfuscatorBatch``).
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gmpy2 import mpz

_HDR = struct.Struct(">I")
_RESP = struct.Struct(">BI")


def _read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("worker pipe closed")
        buf += chunk
    return bytes(buf)


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


class _Worker:
    def __init__(self, nice: int = 0):
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        args = [sys.executable, "-m", "secure_agg.procpool"]
        if nice > 0:  # the worker lowers its own priority (no preexec_fn next to threads)
            args += ["--nice", str(int(nice))]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, cwd=root)

    def send(self, header: dict, body: bytes) -> None:
        h = json.dumps(header).encode()
        self.proc.stdin.write(_HDR.pack(len(h)) + h + body)
        self.proc.stdin.flush()

    def recv(self) -> bytes:
        status, length = _RESP.unpack(_read_exact(self.proc.stdout, _RESP.size))
        payload = _read_exact(self.proc.stdout, length)
        if status:
            raise RuntimeError(f"encryption worker failed: {payload.decode(errors='replace')}")
        return payload

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            self.proc.kill()


class ProcessPool:
    """``workers`` encryption processes used by one call at a time."""

    def __init__(self, workers: int):
        self.workers = workers
        self._procs: list[_Worker] = []
        self._lock = threading.Lock()

    def _ensure(self) -> list[_Worker]:
        alive = [w for w in self._procs if w.proc.poll() is None]
        while len(alive) < self.workers:
            alive.append(_Worker())
        self._procs = alive
        return alive

    def run(self, requests: list[tuple[dict, bytes]],
            local: Callable[[], Any] | None = None) -> tuple[list[bytes], Any]:
        """Send one request per worker (in order), run ``local()`` in this process
        meanwhile, then collect the replies in order."""
        if len(requests) > self.workers:
            raise ValueError("more requests than workers")
        with self._lock:
            procs = self._ensure()[:len(requests)]
            try:
                for w, (head, body) in zip(procs, requests, strict=True):
                    w.send(head, body)
                mine = local() if local is not None else None
                return [w.recv() for w in procs], mine
            except BaseException:
                for w in self._procs:  # a half-read pipe cannot be reused
                    w.close()
                self._procs = []
                raise

    def encrypt(self, spec: tuple, chunks: list[tuple[list[int], list[int]]],
                exp_bits: int) -> list[list[mpz]]:
        """Encrypt ``(plaintexts, exponents)`` chunks, one per worker, in order."""
        n = int(spec[1])
        vw = (n.bit_length() + 8) // 8 + 1
        dw = (exp_bits + 7) // 8
        cw = (2 * n.bit_length() + 7) // 8
        head = {"op": "encrypt", "kind": spec[0], "n": format(n, "x")}
        if spec[0] == "private":
            head.update(p=format(int(spec[2]), "x"), q=format(int(spec[3]), "x"))
        requests = []
        for vals, draws in chunks:
            body = b"".join(int(v).to_bytes(vw, "big", signed=True) for v in vals)
            body += b"".join(int(d).to_bytes(dw, "big") for d in draws)
            requests.append(({**head, "count": len(vals), "vw": vw, "dw": dw}, body))
        payloads, _ = self.run(requests)
        out = []
        for payload, (vals, _) in zip(payloads, chunks, strict=True):
            if len(payload) != cw * len(vals):
                raise RuntimeError("encryption worker returned a wrong-sized reply")
            out.append(split_ciphertexts(payload, cw))
        return out

    def obfuscate(self, spec: tuple, chunks: list[list[int]], scheme: str, exp_bits: int,
                  window: int) -> list[list[mpz]]:
        """Obfuscators ``rho mod n^2`` for chunks of draws, one chunk per worker."""
        payloads, _ = self.run([obfuscate_request(spec, d, scheme, exp_bits, window)
                                for d in chunks])
        cw = (2 * int(spec[1]).bit_length() + 7) // 8
        return [decode_obfuscators(p, cw, len(d)) for p, d in zip(payloads, chunks,
                                                                   strict=True)]

    def close(self) -> None:
        with self._lock:
            for w in self._procs:
                w.close()
            self._procs = []


def _draw_width(spec: tuple, scheme: str, exp_bits: int) -> int:
    n = int(spec[1])
    return (n.bit_length() + 7) // 8 if scheme == "standard" else (exp_bits + 7) // 8


def obfuscate_request(spec: tuple, draws: list[int], scheme: str, exp_bits: int,
                      window: int) -> tuple[dict, bytes]:
    """The ``"obfuscate"`` request for ``draws`` (exponents, or units for standard)."""
    n = int(spec[1])
    dw = _draw_width(spec, scheme, exp_bits)
    head = {"op": "obfuscate", "kind": spec[0], "n": format(n, "x"), "count": len(draws),
            "dw": dw, "scheme": scheme, "exp_bits": int(exp_bits), "window": int(window)}
    if spec[0] == "private":
        head.update(p=format(int(spec[2]), "x"), q=format(int(spec[3]), "x"))
    return head, b"".join(int(d).to_bytes(dw, "big") for d in draws)


def decode_obfuscators(payload: bytes, width: int, count: int) -> list[mpz]:
    if len(payload) != width * count:
        raise RuntimeError("obfuscation worker returned a wrong-sized reply")
    return split_ciphertexts(payload, width)


class BackgroundPool:
    """``workers`` low-priority processes serving queued jobs chunk by chunk, oldest job
    first. A job offers ``claim_background() -> (index, head, body) | None`` (a chunk
    nobody has started), ``deliver(index, payload)``, ``release(index, exc)`` (the
    worker failed: the chunk goes back to the consumer) and ``wants_background()``."""

    def __init__(self, workers: int, nice: int):
        self.workers, self.nice = workers, nice
        self._jobs: deque = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._procs: list[_Worker] = []
        self._closed = False

    def submit(self, job) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("background pool is closed")
            self._jobs.append(job)
            while len(self._threads) < self.workers:
                t = threading.Thread(target=self._loop, name=f"obfuscators{len(self._threads)}",
                                     daemon=True)
                self._threads.append(t)
                t.start()
            self._cond.notify_all()

    def _next(self):
        with self._cond:
            while True:
                while self._jobs and not self._jobs[0].wants_background():
                    self._jobs.popleft()
                for job in list(self._jobs):
                    claim = job.claim_background()
                    if claim is not None:
                        return job, claim
                if self._closed:
                    return None, None
                self._cond.wait(timeout=1.0)

    def _loop(self) -> None:
        worker: _Worker | None = None
        while True:
            job, claim = self._next()
            if job is None:
                return
            idx, head, body = claim
            try:
                if worker is None or worker.proc.poll() is not None:
                    worker = _Worker(self.nice)
                    with self._cond:
                        self._procs.append(worker)
                worker.send(head, body)
                payload = worker.recv()
            except BaseException as exc:  # noqa: BLE001 - the consumer computes the chunk
                if worker is not None:
                    worker.close()
                    worker = None
                job.release(idx, exc)
                continue
            job.deliver(idx, payload)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            procs, self._procs = self._procs, []
            self._cond.notify_all()
        for w in procs:
            w.close()


_pools: dict[int, ProcessPool] = {}
_bg_pools: dict[int, BackgroundPool] = {}
_pools_lock = threading.Lock()


def get_pool(workers: int) -> ProcessPool:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ProcessPool(workers)
        return pool


def background_nice() -> int:
    try:
        return max(0, int(os.environ.get("FEDJOINT_BG_NICE", "10")))
    except ValueError:
        return 10


def get_background_pool(workers: int) -> BackgroundPool:
    with _pools_lock:
        pool = _bg_pools.get(workers)
        if pool is None:
            pool = _bg_pools[workers] = BackgroundPool(workers, background_nice())
        return pool


def worker_cpu_seconds() -> float:
    """CPU seconds used so far by the live worker processes, background ones included
    (Linux /proc; for benches)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    procs = [w for pool in list(_pools.values()) for w in pool._procs]
    procs += [w for pool in list(_bg_pools.values()) for w in list(pool._procs)]
    for w in procs:
        try:
            fields = Path(f"/proc/{w.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


@atexit.register
def _shutdown() -> None:
    for pool in list(_pools.values()):
        pool.close()
    for bg in list(_bg_pools.values()):
        bg.close()


# ---- worker side -----------------------------------------------------------------------
def _serve_encrypt(head: dict, body: bytes, count: int, vw: int, dw: int,
                   cache: dict) -> bytes:
    cipher = _cached_cipher(head, cache)
    vals = [int.from_bytes(body[i:i + vw], "big", signed=True)
            for i in range(0, count * vw, vw)]
    off = count * vw
    draws = [int.from_bytes(body[off + i:off + i + dw], "big")
             for i in range(0, count * dw, dw)]
    cts = cipher._encrypt_local(vals, draws, "djn")
    return join_ciphertexts(cts, cipher.ciphertext_bytes)


def _cached_cipher(head: dict, cache: dict):
    from secure_agg.keys import PaillierPrivateKey, PaillierPublicKey
    from secure_agg.paillier import PaillierPrivateCipher, PaillierPublicCipher

    key = (head["kind"], head["n"], head.get("p"), head.get("q"))
    cipher = cache.get(key)
    if cipher is None:
        pub = PaillierPublicKey(mpz(head["n"], 16), insecure_test_key=True)
        if head["kind"] == "private":
            sk = PaillierPrivateKey(pub, mpz(head["p"], 16), mpz(head["q"], 16))
            cipher = PaillierPrivateCipher(sk, workers=1)
        else:
            cipher = PaillierPublicCipher(pub, workers=1)
        while len(cache) >= 3:  # tables are ~17 MB per key: keep the 3 newest
            cache.pop(next(iter(cache)))
        cache[key] = cipher
    return cipher


def _serve_obfuscate(head: dict, body: bytes, count: int, dw: int, cache: dict) -> bytes:
    cipher = _cached_cipher(head, cache)
    scheme = str(head["scheme"])
    if int(head["exp_bits"]) != cipher._exp_bits(scheme):
        raise ValueError("obfuscate: exponent size does not match the scheme")
    draws = [int.from_bytes(body[i:i + dw], "big") for i in range(0, count * dw, dw)]
    rhos = cipher._obfuscate_local(draws, scheme, int(head.get("window", 8)))
    return join_ciphertexts(rhos, cipher.ciphertext_bytes)


def _serve_vector(op: str, head: dict, body: bytes) -> bytes:
    """Public-key vector work on ciphertexts sent as bytes (range-checked)."""
    from secure_agg import paillier

    n = mpz(head["n"], 16)
    nsq = n * n
    cw = (nsq.bit_length() + 7) // 8
    count = int(head["count"])
    cts = split_ciphertexts(body[:count * cw], cw)
    if any(not 0 < c < nsq for c in cts):
        raise ValueError("ciphertext out of range")
    rest = body[count * cw:]
    if op == "product":
        return join_ciphertexts([paillier._product(cts, nsq)], cw)
    feats = int(head["feats"])
    if op == "histogram":
        sub = np.frombuffer(rest, dtype="<i4").reshape(count, feats)
        return join_ciphertexts(paillier._histogram_chunk(cts, sub, int(head["nbins"]), nsq),
                                cw)
    X = np.frombuffer(rest, dtype="<i8").reshape(count, feats)
    return join_ciphertexts(paillier._matvec_chunk(cts, X, nsq), cw)


def serve(stdin=None, stdout=None) -> None:
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    cache: dict[tuple, Any] = {}
    while True:
        raw = stdin.read(_HDR.size)
        if not raw:
            return
        try:
            (hlen,) = _HDR.unpack(_read_exact_prefix(stdin, raw, _HDR.size))
            head = json.loads(_read_exact(stdin, hlen))
            op = head.get("op", "encrypt")
            if op == "encrypt":
                count, vw, dw = int(head["count"]), int(head["vw"]), int(head["dw"])
                body = _read_exact(stdin, count * (vw + dw))
                payload = _serve_encrypt(head, body, count, vw, dw, cache)
            elif op == "obfuscate":
                count, dw = int(head["count"]), int(head["dw"])
                body = _read_exact(stdin, count * dw)
                payload = _serve_obfuscate(head, body, count, dw, cache)
            elif op in ("histogram", "matvec", "product"):
                body = _read_exact(stdin, int(head["body"]))
                payload = _serve_vector(op, head, body)
            else:
                raise ValueError(f"unknown op {op!r}")
            stdout.write(_RESP.pack(0, len(payload)) + payload)
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            msg = f"{type(exc).__name__}: {exc}".encode()
            stdout.write(_RESP.pack(1, len(msg)) + msg)
        stdout.flush()


def _read_exact_prefix(stream, got: bytes, n: int) -> bytes:
    return got if len(got) >= n else got + _read_exact(stream, n - len(got))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--nice":
        try:
            os.nice(int(sys.argv[2]))
        except (OSError, ValueError):
            pass
    serve()
