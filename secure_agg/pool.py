"""Worker pools for the Paillier engine: which parallelism for which operation.

gmpy2 (>= 2.1) releases the GIL around GMP calls when the thread's context has
``allow_release_gil=True``, and ``powmod_base_list`` always releases it. That pays off
only when the GIL-free stretch is long: a powmod (decryption, standard obfuscation,
``mul_plain``, ``pack``) scales ~1.95x on two threads here. A single 4096-bit
multiply-mod (~4 us) is too short: two threads then spend their time handing the GIL
back and forth (measured 0.75x wall time at 1.4x the CPU). Hence:

* threads (this module) for powmod-grained work;
* worker processes (:mod:`secure_agg.procpool`) for multiply-mod-grained work whose
  inputs are small relative to the work: fixed-base-table (DJN) encryption, and
  histograms, ``X.T @ enc`` and sums, where the calling process computes one chunk
  itself while ``workers - 1`` processes compute the others;
* the calling thread alone for ``add``/``add_plain``, where moving operands to another
  process costs more than the multiply-mod.

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


def flatten(parts: list[list]) -> list:
    """The chunk results of :func:`run_chunks` as one list."""
    if len(parts) == 1:
        return parts[0]
    out: list = []
    for p in parts:
        out.extend(p)
    return out


def run_tasks(workers: int, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent zero-argument tasks; results in task order."""
    if workers <= 1 or len(tasks) <= 1 or _inline():
        return [t() for t in tasks]
    ex = _executor(workers)
    futs = [ex.submit(t) for t in tasks]
    return [f.result() for f in futs]

