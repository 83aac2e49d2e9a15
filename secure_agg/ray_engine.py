"""The Ray backend of :mod:`secure_agg.executor`: the party's kernels on a pool of
long-lived Ray actors.

Imported only when a node's ``engine = "ray"``. The pool: one actor
(:class:`KernelHost`) per CPU of the cluster, named ``fedjoint-kernels-<tag>-<i>`` in
the ``fedjoint`` namespace (``tag``: the first 12 hex digits of :func:`kernel_digest`),
``lifetime="detached"``, one CPU each. The first driver that finds it missing creates it
(the node starts a warm-up driver when it starts or reloads, :func:`warm`, so the first
job usually finds it running); every later job process, a new Ray driver, looks the
actors up by name and reuses their processes. Ray does not share *worker processes*
between drivers, so with plain tasks every job started its own Ray workers (an
interpreter importing Ray each) before PSI could run; actors outlive their driver.
A pool of another fedjoint version (another tag) is killed when one of this version is
made, so stale actors never hold the cluster's CPUs.

Each actor runs exactly what a local worker runs: :meth:`KernelHost.kernel` serves one
:mod:`secure_agg.framing` request with :func:`secure_agg.worker.handle` (keeping the
kernels, fixed-base tables, of its recent keys; :meth:`KernelHost.forget` drops them and
each job process calls it when it leaves), :meth:`KernelHost.map` one PSI task of
:mod:`psi.engine` (``fn`` passed by reference: module and name). The code is the
fedjoint installed on the Ray node: :func:`connect` checks that every actor's
:func:`kernel_digest` equals the node's. A driver sends each call to the actor with the
fewest of its own calls outstanding; the kernels are pure functions of their inputs,
so which actor (or how many) changes no byte.

Failures: an actor whose process or node dies is restarted by Ray and the call re-run,
up to ``MAX_RETRIES`` times (a retry returns the same bytes); an error raised by the
kernel itself (a refused ciphertext) is not retried. Either way the caller gets a
``RuntimeError`` that says what failed, and the job fails with it before anything
computed from the missing part is sent.

Connecting is bounded (:func:`connect`): a TCP probe of the head, then ``ray.init``,
the pool looked up or created, and one ``digest`` call per actor, all within the node's
``ray_connect_timeout_s``; an unreachable or unusable cluster (no actor answering) is an
:class:`EngineUnavailable` naming the address (``ray.init`` alone would retry for
minutes). Token authentication: ``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN_PATH``
pointing at the node's ``ray_auth_token_file`` (refused unless 0600 and non-empty; its
content is never read into a log or an error).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from pathlib import Path

#: Ray's retries of a call whose actor died (system failures only)
MAX_RETRIES = 3
NAMESPACE, POOL_PREFIX = "fedjoint", "fedjoint-kernels-"
#: the code a Ray worker must share with the node: the kernels and PSI's task functions
_ROOT = Path(__file__).resolve().parents[1]
_KERNEL_FILES = ("secure_agg/kernels.py", "secure_agg/ou_kernels.py", "secure_agg/worker.py",
                 "secure_agg/framing.py", "secure_agg/native_mb.py", "psi/engine.py",
                 "psi/hash_to_curve.py", "secure_agg/ray_engine.py")

class EngineUnavailable(RuntimeError):
    """The configured engine cannot run work (cluster unreachable, no actors)."""


def kernel_digest() -> str:
    """SHA-256 over the kernel sources this process would run."""
    h = hashlib.sha256()
    for rel in _KERNEL_FILES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes())
    return h.hexdigest()


class KernelHost:
    """One pool actor (a Ray worker process shared by every job): the kernels of a local
    worker process and PSI's tasks, requests vetted as the pipe format vets them."""

    def __init__(self):
        self._cache: dict = {}     # kernels of its recent keys (secure_agg.worker)

    def kernel(self, head: dict, body: bytes) -> bytes:
        from secure_agg.framing import body_size
        from secure_agg.worker import handle
        if body_size(head) != len(body):
            raise ValueError(f"request body of {len(body)} bytes, its header says "
                             f"{body_size(head)}")
        return handle(head, body, self._cache)

    def map(self, fn, *args):
        return fn(*args)

    def digest(self) -> str:
        return kernel_digest()

    def forget(self) -> None:
        self._cache.clear()


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


def _bounded(fn, timeout_s: float, what: str, limit_s: float | None = None):
    """``fn()`` in a helper thread; EngineUnavailable if it has not returned within
    ``timeout_s`` (what is left of ``limit_s``, the bound the message names; the thread
    is left behind: the job process fails and exits)."""
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
        raise EngineUnavailable(f"{what} did not finish within "
                                f"{limit_s if limit_s is not None else timeout_s:.3g} s")
    if "error" in box:
        err = box["error"]
        raise EngineUnavailable(f"{what} failed: {type(err).__name__}: {err}") from None
    return box.get("value")


def _token_env(path: str) -> None:
    """Present the token of ``path`` to the cluster (Ray reads the file itself)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise EngineUnavailable(f"node.ray_auth_token_file {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise EngineUnavailable(f"node.ray_auth_token_file {path} has mode {mode:o}; it "
                                "must not be readable by group or others (chmod 600)")
    if st.st_size == 0:
        raise EngineUnavailable(f"node.ray_auth_token_file {path} is empty (generate one "
                                "with `ray get-auth-token --generate`)")
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    os.environ.pop("RAY_AUTH_TOKEN", None)    # it would take precedence over the file


def _join(address: str, timeout_s: float, auth_token_file: str | None):
    """``ray``, joined to the cluster at ``address`` as a driver within ``timeout_s``."""
    host, port = _parse(address)
    deadline = time.monotonic() + timeout_s
    if auth_token_file:
        _token_env(auth_token_file)
    try:
        socket.create_connection((host, port), timeout=min(timeout_s, 5.0)).close()
    except OSError as exc:
        raise EngineUnavailable(f"no Ray cluster reachable at {address}: {exc}") from None
    if _loopback(host):   # a one-machine cluster: Ray keeps every address on loopback
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # (read when ray is imported)
    try:
        import ray
    except ImportError:
        raise EngineUnavailable("engine = 'ray' needs Ray on the node: pip install "
                                "'fedjoint[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    hint = " (is node.ray_auth_token_file the cluster's token?)" if auth_token_file else ""
    _bounded(lambda: ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                              logging_level=logging.ERROR),
             deadline - time.monotonic(), f"joining the Ray cluster at {address}{hint}",
             timeout_s)
    return ray


def connect(address: str, timeout_s: float, auth_token_file: str | None = None) -> RayBackend:
    """Join the party's Ray cluster at ``address`` as a driver and find (or create) the
    actor pool, within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    ray = _join(address, timeout_s, auth_token_file)
    try:
        return RayBackend(ray, address, deadline)
    except BaseException:
        ray.shutdown()
        raise


def _kill_pool(ray, keep: str | None = None) -> int:
    """Kill the pool actors whose names do not start with ``keep``; how many."""
    names = [n for n in ray.util.list_named_actors() if n.startswith(POOL_PREFIX)
             and not (keep and n.startswith(keep))]
    for name in names:
        try:
            ray.kill(ray.get_actor(name), no_restart=True)
        except ValueError:
            pass                  # gone meanwhile
    return len(names)


def _pool_actors(ray, cpus: int) -> tuple[list, int]:
    """This version's pool actors (looked up, or created), and how many were created;
    another version's pool actors are killed first."""
    mine = f"{POOL_PREFIX}{kernel_digest()[:12]}-"
    _kill_pool(ray, keep=mine)
    existing = set(ray.util.list_named_actors())
    cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=MAX_RETRIES)(KernelHost)
    actors = [cls.options(name=f"{mine}{i}", namespace=NAMESPACE, lifetime="detached",
                          get_if_exists=True, scheduling_strategy="SPREAD").remote()
              for i in range(max(1, cpus))]
    return actors, sum(1 for i in range(max(1, cpus)) if f"{mine}{i}" not in existing)


class RayBackend:
    """A connected driver: workers for :mod:`secure_agg.procpool`, pools for PSI, both
    over the actor pool."""

    def __init__(self, ray, address: str, deadline: float):
        self.ray = ray
        cpus = int(ray.cluster_resources().get("CPU", 0))
        t0 = time.monotonic()
        actors, created = _pool_actors(ray, cpus)
        probes = {a.digest.remote(): a for a in actors}
        ready, _ = ray.wait(list(probes), num_returns=len(probes),
                            timeout=max(0.1, deadline - time.monotonic()))
        if not ready:
            raise EngineUnavailable(f"no Ray actor of the cluster at {address} answered "
                                    f"in time (does it have CPUs?)")
        try:
            theirs = {self.get(r, "the pool's kernel check") for r in ready}
        except RuntimeError as exc:
            raise EngineUnavailable(str(exc)) from None
        if theirs != {kernel_digest()}:
            raise EngineUnavailable(f"the Ray workers at {address} run other fedjoint kernels "
                                    "than this node: install the same fedjoint version on "
                                    "every Ray node")
        self.actors = [probes[r] for r in ready]
        self._load = [0] * len(self.actors)
        self._lock = threading.Lock()
        self.info = {"address": address, "cpus": cpus,
                     "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
                     "pool": len(self.actors), "pool_created": created,
                     "pool_ready_s": round(time.monotonic() - t0, 3)}

    def submit(self, method: str, *args, max_task_retries: int | None = None):
        """``(actor index, ref)`` of a call to the actor with fewest calls outstanding."""
        with self._lock:
            i = min(range(len(self._load)), key=self._load.__getitem__)
            self._load[i] += 1
        m = getattr(self.actors[i], method)
        if max_task_retries is not None:
            m = m.options(max_task_retries=max_task_retries)
        return i, m.remote(*args)

    def done(self, i: int) -> None:
        with self._lock:
            self._load[i] = max(0, self._load[i] - 1)

    def worker(self) -> RayWorker:
        return RayWorker(self)

    def map_pool(self) -> RayMapPool:
        return RayMapPool(self)

    def get(self, ref, what: str):
        """A call's result, or a RuntimeError saying why there is none."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:   # the kernel raised: not retried
            cause = getattr(exc, "cause", None) or exc
            raise RuntimeError(f"{what} failed: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as exc:       # actor / node lost, retries spent
            raise RuntimeError(f"{what} failed on this party's Ray cluster after "
                               f"{MAX_RETRIES} retries: {type(exc).__name__}: "
                               f"{str(exc)[:300]}") from None

    def close(self) -> None:
        """Leave the cluster; the actors drop the kernels (key tables) they keep."""
        try:
            self.ray.wait([a.forget.remote() for a in self.actors],
                          num_returns=len(self.actors), timeout=5.0)
        finally:
            self.ray.shutdown()


class RayWorker:
    """A :mod:`secure_agg.procpool` worker whose requests run on the pool's actors."""

    def __init__(self, backend: RayBackend):
        self._backend, self._call = backend, None

    def send(self, head: dict, body: bytes) -> None:
        self._call = self._backend.submit("kernel", head, body)

    def recv(self) -> bytes:
        (i, ref), self._call = self._call, None
        try:
            return self._backend.get(ref, "encryption worker")
        finally:
            self._backend.done(i)

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        if self._call is not None:
            self._backend.done(self._call[0])
        self._call = None


class _Result:
    def __init__(self, backend: RayBackend, call, pending: set):
        self._backend, (self._i, self._ref), self._pending = backend, call, pending
        pending.add(self)

    def get(self):
        try:
            return self._backend.get(self._ref, "PSI task")
        finally:
            self._finish()

    def ready(self) -> bool:
        done, _ = self._backend.ray.wait([self._ref], timeout=0, fetch_local=False)
        return bool(done)

    def _finish(self) -> None:
        if self in self._pending:
            self._pending.discard(self)
            self._backend.done(self._i)


class RayMapPool:
    """``apply_async`` over the actor pool (the subset of ``multiprocessing.Pool`` PSI
    uses)."""

    def __init__(self, backend: RayBackend):
        self._backend, self._pending = backend, set()

    def apply_async(self, fn, args: tuple) -> _Result:
        return _Result(self._backend, self._backend.submit("map", fn, *args), self._pending)

    def terminate(self) -> None:
        """Cancel the calls nobody will read (queued ones never run on the shared pool)."""
        for r in list(self._pending):
            try:
                self._backend.ray.cancel(r._ref)
            except Exception:  # noqa: BLE001 - best effort: it may have finished
                pass
            r._finish()

    def join(self) -> None:
        return None


def warm(address: str, timeout_s: float, auth_token_file: str | None = None) -> dict:
    """Connect, find or create the pool, leave: what a node runs when it starts."""
    backend = connect(address, timeout_s, auth_token_file)
    info = dict(backend.info)
    backend.ray.shutdown()
    return info


def drop(address: str, timeout_s: float, auth_token_file: str | None = None) -> dict:
    """Kill every fedjoint pool actor of the cluster (any version): frees their CPUs;
    the next job creates the pool again. Jobs using it fail with the reason."""
    ray = _join(address, timeout_s, auth_token_file)
    try:
        return {"address": address, "dropped": _kill_pool(ray)}
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m secure_agg.ray_engine warm|drop ADDRESS TIMEOUT [TOKEN_FILE]``:
    :func:`warm` (the node's warm-up process) or :func:`drop`; one JSON line out."""
    import json
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4) or args[0] not in ("warm", "drop"):
        print(main.__doc__.split("``")[1], file=sys.stderr)
        return 2
    fn = warm if args[0] == "warm" else drop
    if fn is warm:
        os.nice(10)     # a node's background start-up chore: after its jobs (not its actors)
    try:
        info = fn(args[1], float(args[2]), args[3] if len(args) > 3 else None)
    except EngineUnavailable as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
