"""The Ray backend of :mod:`secure_agg.executor`: the party's kernels as Ray tasks.

Imported only when a node's ``engine = "ray"``. Two task functions, both running code
that ships with fedjoint on every Ray node (:func:`connect` checks it is the same code):

* :func:`fedjoint_kernel` ``(head, body) -> payload``: one request of
  :mod:`secure_agg.framing` served by :func:`secure_agg.worker.handle` -- exactly what a
  local worker process runs; each Ray worker process keeps the kernels (fixed-base
  tables) of its recent keys, as a local worker does;
* :func:`fedjoint_map` ``(fn, *args)``: one PSI task of :mod:`psi.engine` (hashing,
  blinding, point checks), ``fn`` passed by reference (module and name).

Failures: a task whose worker process or node dies is retried by Ray up to
``MAX_RETRIES`` times (the tasks are pure functions of their inputs, so a retry
returns the same bytes); an error raised by the kernel itself (a refused ciphertext)
is not retried. Either way the caller gets a ``RuntimeError`` that says what failed,
and the job fails with it before anything computed from the missing part is sent.

Connecting is bounded (:func:`connect`): a TCP probe of the head, then ``ray.init`` and
a probe task, all within the node's ``ray_connect_timeout_s``; an unreachable or
unusable cluster is an :class:`EngineUnavailable` naming the address
(``ray.init`` alone would retry for minutes).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import threading
import time
from pathlib import Path

#: Ray's retries of a task whose worker died (system failures only)
MAX_RETRIES = 3
#: the code a Ray worker must share with the node: the kernels and PSI's task functions
_ROOT = Path(__file__).resolve().parents[1]
_KERNEL_FILES = ("secure_agg/kernels.py", "secure_agg/ou_kernels.py", "secure_agg/worker.py",
                 "secure_agg/framing.py", "secure_agg/native_mb.py", "psi/engine.py",
                 "psi/hash_to_curve.py")

_cache: dict = {}    # per Ray worker process: kernels of its recent keys


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run work (cluster unreachable, no workers)."""


def kernel_digest() -> str:
    """SHA-256 over the kernel sources this process would run."""
    h = hashlib.sha256()
    for rel in _KERNEL_FILES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes())
    return h.hexdigest()


def fedjoint_kernel(head: dict, body: bytes) -> bytes:
    """One worker request (runs on a Ray worker), vetted as the pipe format vets it."""
    from secure_agg.framing import body_size
    from secure_agg.worker import handle
    if body_size(head) != len(body):
        raise ValueError(f"request body of {len(body)} bytes, its header says "
                         f"{body_size(head)}")
    return handle(head, body, _cache)


def fedjoint_map(fn, *args):
    """One PSI task (runs on a Ray worker)."""
    return fn(*args)


def _parse(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EngineUnavailable(f"{address!r} is not host:port of a Ray head (its GCS port, "
                                "6379 by default)")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bounded(fn, timeout_s: float, what: str):
    """``fn()`` in a helper thread; EngineUnavailable if it has not returned in time
    (the thread is left behind: the job process fails and exits)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=run, name="ray-connect", daemon=True)
    t.start()
    t.join(max(0.1, timeout_s))
    if t.is_alive():
        raise EngineUnavailable(f"{what} did not finish within {timeout_s:.3g} s")
    if "error" in box:
        err = box["error"]
        raise EngineUnavailable(f"{what} failed: {type(err).__name__}: {err}") from None
    return box.get("value")


def connect(address: str, timeout_s: float, auth_token_file: str | None = None) -> RayBackend:
    """Join the party's Ray cluster at ``address`` as a driver, within ``timeout_s``."""
    host, port = _parse(address)
    deadline = time.monotonic() + timeout_s
    try:
        socket.create_connection((host, port), timeout=min(timeout_s, 5.0)).close()
    except OSError as exc:
        raise EngineUnavailable(f"no Ray cluster reachable at {address}: {exc}") from None
    if auth_token_file:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(auth_token_file)
    if _loopback(host):   # a one-machine cluster: Ray keeps every address on loopback
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # (read when ray is imported)
    try:
        import ray
    except ImportError:
        raise EngineUnavailable("engine = 'ray' needs Ray on the node: pip install "
                                "'fedjoint[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _bounded(lambda: ray.init(address=address, namespace="fedjoint", log_to_driver=False,
                              logging_level=logging.ERROR),
             deadline - time.monotonic(), f"joining the Ray cluster at {address}")
    try:
        backend = RayBackend(ray, address)
        probe = backend.probe.remote()
        ready, _ = ray.wait([probe], timeout=max(0.1, deadline - time.monotonic()))
        if not ready:
            raise EngineUnavailable(f"no Ray worker of the cluster at {address} ran a task "
                                    f"within {timeout_s:.3g} s (does it have CPUs?)")
        theirs = ray.get(probe)
        if theirs != kernel_digest():
            raise EngineUnavailable(f"the Ray workers at {address} run other fedjoint kernels "
                                    "than this node: install the same fedjoint version on "
                                    "every Ray node")
    except BaseException:
        ray.shutdown()
        raise
    return backend


class RayBackend:
    """A connected driver: workers for :mod:`secure_agg.procpool`, pools for PSI."""

    def __init__(self, ray, address: str):
        self.ray = ray
        opts = {"max_retries": MAX_RETRIES, "retry_exceptions": False, "num_cpus": 1}
        self.kernel = ray.remote(**opts)(fedjoint_kernel)
        self.map = ray.remote(**opts)(fedjoint_map)
        self.probe = ray.remote(max_retries=MAX_RETRIES)(kernel_digest)
        self.info = {"address": address,
                     "cpus": int(ray.cluster_resources().get("CPU", 0)),
                     "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}

    def worker(self) -> RayWorker:
        return RayWorker(self)

    def map_pool(self) -> RayMapPool:
        return RayMapPool(self)

    def get(self, ref, what: str):
        """A task's result, or a RuntimeError saying why there is none."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:   # the kernel raised: not retried
            cause = getattr(exc, "cause", None) or exc
            raise RuntimeError(f"{what} failed: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as exc:       # worker / node lost, retries spent
            raise RuntimeError(f"{what} failed on this party's Ray cluster after "
                               f"{MAX_RETRIES} retries: {type(exc).__name__}: "
                               f"{str(exc)[:300]}") from None

    def close(self) -> None:
        self.ray.shutdown()


class RayWorker:
    """A :mod:`secure_agg.procpool` worker whose requests run as Ray tasks."""

    def __init__(self, backend: RayBackend):
        self._backend, self._ref = backend, None

    def send(self, head: dict, body: bytes) -> None:
        self._ref = self._backend.kernel.remote(head, body)

    def recv(self) -> bytes:
        ref, self._ref = self._ref, None
        return self._backend.get(ref, "encryption worker")

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self._ref = None


class _Result:
    def __init__(self, backend: RayBackend, ref):
        self._backend, self._ref = backend, ref

    def get(self):
        return self._backend.get(self._ref, "PSI task")

    def ready(self) -> bool:
        done, _ = self._backend.ray.wait([self._ref], timeout=0, fetch_local=False)
        return bool(done)


class RayMapPool:
    """``apply_async`` over Ray tasks (the subset of ``multiprocessing.Pool`` PSI uses)."""

    def __init__(self, backend: RayBackend):
        self._backend = backend

    def apply_async(self, fn, args: tuple) -> _Result:
        return _Result(self._backend, self._backend.map.remote(fn, *args))

    def terminate(self) -> None:
        return None    # outstanding tasks finish on the cluster; nobody reads them

    def join(self) -> None:
        return None
