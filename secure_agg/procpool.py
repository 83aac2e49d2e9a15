"""The parent's side of the worker processes: spawning them and sending them work.

Why processes: see :mod:`secure_agg.pool`. Why not ``multiprocessing``: its spawn and
forkserver methods re-import the caller's ``__main__`` in every worker (breaking any
unguarded script that encrypts), ``fork`` is unsafe next to gRPC threads, and both use
pickle. Instead each worker is ``python -m secure_agg.worker`` and the two ends speak
the fixed binary format of :mod:`secure_agg.framing` over the worker's stdin/stdout.
This module imports that format only: it knows nothing of ciphers or kernels (the
engine hands it key specs, plaintexts and draws; the worker does the arithmetic).

:class:`ProcessPool` (:func:`get_pool`): ``workers`` normal-priority processes, started
lazily, used by one call at a time; they exit when their stdin closes (at interpreter
exit). With the Ray engine (:mod:`secure_agg.executor`) each "worker" sends the same
requests as Ray tasks instead (:class:`secure_agg.ray_engine.RayWorker`).

:class:`BackgroundPool` (:func:`get_background_pool`) runs queued obfuscator chunks on
its own worker processes, started with a lower CPU priority (``nice``, default 10,
``FEDJOINT_BG_NICE``), so precomputation soaks up cores the protocol leaves idle
(waiting for the peer) without slowing the protocol's own critical path; a consumer
that needs a chunk nobody has started yet computes it itself on the normal-priority
pool (see :class:`secure_agg.precompute.PaillierObfuscatorBatch`).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmpy2 import mpz

from secure_agg import executor
from secure_agg.framing import (
    encrypt_request,
    frame_request,
    obfuscate_request,
    read_response,
    spec_width,
    split_reply,
)

#: DJN (table) encryption and obfuscators go to worker processes from this many values
#: up (below, moving them costs more than it saves)
PROCESS_MIN_VALUES = 64


class _Worker:
    def __init__(self, nice: int = 0):
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        args = [sys.executable, "-m", "secure_agg.worker"]
        if nice > 0:  # the worker lowers its own priority (no preexec_fn next to threads)
            args += ["--nice", str(int(nice))]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, cwd=root)

    def send(self, header: dict, body: bytes) -> None:
        self.proc.stdin.write(frame_request(header, body))
        self.proc.stdin.flush()

    def recv(self) -> bytes:
        return read_response(self.proc.stdout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            self.proc.kill()


def _new_worker(nice: int = 0):
    """A worker of the configured engine (:mod:`secure_agg.executor`): a Ray-backed one
    when the engine is Ray, else a local worker process."""
    return executor.remote_worker(nice) or _Worker(nice)


class ProcessPool:
    """``workers`` encryption processes used by one call at a time."""

    def __init__(self, workers: int):
        self.workers = workers
        self._procs: list[_Worker] = []
        self._lock = threading.Lock()

    def _ensure(self) -> list[_Worker]:
        alive = [w for w in self._procs if w.alive()]
        while len(alive) < self.workers:
            alive.append(_new_worker())
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
        payloads, _ = self.run([encrypt_request(spec, vals, draws, exp_bits)
                                for vals, draws in chunks])
        cw = spec_width(spec)
        return [split_reply(p, cw, len(vals), "encryption")
                for p, (vals, _) in zip(payloads, chunks, strict=True)]

    def obfuscate(self, spec: tuple, chunks: list[list[int]], scheme: str, exp_bits: int,
                  window: int) -> list[list[mpz]]:
        """Obfuscators ``rho mod n^2`` for chunks of draws, one chunk per worker."""
        payloads, _ = self.run([obfuscate_request(spec, d, scheme, exp_bits, window)
                                for d in chunks])
        cw = spec_width(spec)
        return [split_reply(p, cw, len(d), "obfuscation")
                for p, d in zip(payloads, chunks, strict=True)]

    def close(self) -> None:
        with self._lock:
            for w in self._procs:
                w.close()
            self._procs = []


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
                if worker is None or not worker.alive():
                    worker = _new_worker(self.nice)
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


#: keyed by (engine generation, workers): pools of a previous engine are not reused
_pools: dict[tuple[int, int], ProcessPool] = {}
_bg_pools: dict[tuple[int, int], BackgroundPool] = {}
_pools_lock = threading.Lock()


def get_pool(workers: int) -> ProcessPool:
    with _pools_lock:
        key = (executor.generation(), workers)
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ProcessPool(workers)
        return pool


def background_nice() -> int:
    try:
        return max(0, int(os.environ.get("FEDJOINT_BG_NICE", "10")))
    except ValueError:
        return 10


def get_background_pool(workers: int) -> BackgroundPool:
    with _pools_lock:
        key = (executor.generation(), workers)
        pool = _bg_pools.get(key)
        if pool is None:
            pool = _bg_pools[key] = BackgroundPool(workers, background_nice())
        return pool


def worker_cpu_seconds() -> float:
    """CPU seconds used so far by the live worker processes, background ones included
    (Linux /proc; for benches)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    procs = [w for pool in list(_pools.values()) for w in pool._procs]
    procs += [w for pool in list(_bg_pools.values()) for w in list(pool._procs)]
    for w in procs:
        if not isinstance(w, _Worker):   # a Ray task's CPU is the cluster's
            continue
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
