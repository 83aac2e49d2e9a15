"""Where a party's heavy kernels run: this machine's worker processes or its Ray cluster.

The one seam between the algorithms and their compute: every kernel that leaves the
calling process goes through it -- Paillier / OU encryption, obfuscator precomputation
(foreground and background), histogram, ``X.T @ enc`` and product chunks
(:mod:`secure_agg.procpool`, which asks :func:`new_worker` for its workers), and PSI's
hashing, blinding and point checks (:class:`psi.engine.Engine`, which asks
:func:`map_pool` for its pool). Algorithm code is the same for either engine.

* ``"local"`` (default): worker processes of this machine (``python -m
  secure_agg.worker`` over a pipe; a spawn-context ``multiprocessing`` pool for PSI).
* ``"ray"`` (:func:`configure`): the same kernels as Ray tasks on the party's own
  cluster (:mod:`secure_agg.ray_engine`); ``ray`` itself is imported only then.

Results are identical: callers draw every random value in the calling thread before
farming work out, and the kernels are deterministic functions of their inputs
(:mod:`secure_agg.pool`), so the engine, like the number of workers, changes no bit of
any ciphertext, model or transcript. Nothing here talks to the peer: what crosses to
the Ray cluster are this party's own requests (keys, plaintexts, its draws, ciphertexts
it already range-checked) and stays inside the party's network (docs/ray.md).

The choice is per process (a job process configures it once, before its first
kernel); :func:`configure` with ``"local"`` disconnects from Ray.
"""

from __future__ import annotations

import multiprocessing as mp
import threading

from secure_agg.ray_engine import EngineUnavailable, connect

__all__ = ["ENGINES", "EngineUnavailable", "configure", "engine", "generation", "map_pool",
           "remote_worker"]

ENGINES = ("local", "ray")

_lock = threading.Lock()
_backend = None      # secure_agg.ray_engine.RayBackend while engine = "ray"
_generation = 0      # bumped on every change, so pools built for another engine retire


def configure(engine: str, address: str = "", connect_timeout_s: float = 15.0,
              auth_token_file: str | None = None) -> dict:
    """Run this process's kernels on ``engine``; for ``"ray"`` connect to the cluster
    whose head is ``address`` (``host:port``) within ``connect_timeout_s`` or raise
    :class:`EngineUnavailable`. Returns what was connected to (for the job log)."""
    global _backend, _generation
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    with _lock:
        old, _backend = _backend, None
        _generation += 1
        if old is not None:
            old.close()
        if engine == "local":
            return {"engine": "local"}
        _backend = connect(address, connect_timeout_s, auth_token_file)
        return {"engine": "ray", **_backend.info}


def engine() -> str:
    return "local" if _backend is None else "ray"


def generation() -> int:
    """Changes whenever the engine does (pools key their caches by it)."""
    return _generation


def remote_worker(nice: int = 0):
    """A Ray-backed worker (``send`` / ``recv`` / ``alive`` / ``close``) when the engine
    is Ray, else None (the caller starts a local worker process). ``nice``: the local
    engine's background priority; Ray tasks run at the cluster's priority."""
    backend = _backend
    return None if backend is None else backend.worker()


def map_pool(workers: int):
    """A pool with ``apply_async(fn, args)`` (results with ``get`` / ``ready``),
    ``terminate`` and ``join``, for ``fn`` a module-level function: Ray tasks, or a
    spawn-context process pool of ``workers`` processes."""
    backend = _backend
    if backend is not None:
        return backend.map_pool()
    return mp.get_context("spawn").Pool(workers)
