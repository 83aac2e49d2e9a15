"""Worker pool for the Paillier engine's vector operations.

gmpy2 (>= 2.1) releases the GIL around GMP calls when the thread's context has
``allow_release_gil=True``: multiplication, division/modulo and ``powmod`` then run in
parallel on several cores, and ``powmod_base_list``/``powmod_exp_list`` always release
it. Measured on the 2-core development machine (idle): a loop of 4096-bit multiply-mod
runs 1.7x faster on two threads, ``powmod_base_list`` 1.9x. Threads therefore serve
the operations whose inputs are large ciphertext vectors (add, sums, histograms,
``X.T @ enc``, decryption): no pickling, no copies.

Fixed-base-table encryption is different: a 2048-bit multiply-mod is ~1 us of GMP work
against ~0.25 us of interpreter work holding the GIL, which caps threads near 1.6x, and
on an oversubscribed machine the GIL hand-offs collapse entirely. Its inputs are small
(plaintexts and exponents) and its per-element work large (~0.4 ms), so it runs in
worker *processes* (:mod:`secure_agg.procpool`: plain subprocesses speaking a fixed
binary format over pipes -- no pickle, no re-import of the caller's ``__main__``, safe
in a process that already runs gRPC threads). Each worker builds its own tables once
per key. The key holder's workers receive ``p, q`` over their private stdin pipe.

Determinism: callers draw every random value in the calling thread, in order, before
farming out work; the tasks themselves are deterministic functions of their inputs and
modular arithmetic is exact, so results never depend on the number of workers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gmpy2

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def default_workers() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


_local = threading.local()


def _init_thread() -> None:
    gmpy2.get_context().allow_release_gil = True
    _local.in_worker = True


def _inline() -> bool:
    """Inside a pool thread nested submissions could deadlock: run them inline."""
    return getattr(_local, "in_worker", False)


def _executor(workers: int) -> ThreadPoolExecutor:
    with _lock:
        ex = _pools.get(workers)
        if ex is None:
            ex = ThreadPoolExecutor(max_workers=workers, initializer=_init_thread,
                                    thread_name_prefix=f"paillier{workers}")
            _pools[workers] = ex
        return ex


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous near-equal ranges covering ``range(n)`` (no empty ones)."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def run_chunks(workers: int, n: int, fn: Callable[[int, int], Any],
               min_chunk: int = 1) -> list[Any]:
    """Call ``fn(start, end)`` over ``workers`` contiguous chunks of ``range(n)`` and
    return the results in chunk order. Runs inline when one chunk suffices."""
    parts = min(workers, max(1, n // max(1, min_chunk)))
    bounds = chunk_bounds(n, parts)
    if len(bounds) <= 1 or _inline():
        return [fn(s, e) for s, e in bounds] if n else []
    ex = _executor(workers)
    futs = [ex.submit(fn, s, e) for s, e in bounds]
    return [f.result() for f in futs]


def run_tasks(workers: int, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent zero-argument tasks; results in task order."""
    if workers <= 1 or len(tasks) <= 1 or _inline():
        return [t() for t in tasks]
    ex = _executor(workers)
    futs = [ex.submit(t) for t in tasks]
    return [f.result() for f in futs]

