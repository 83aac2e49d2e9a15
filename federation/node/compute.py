"""A job's computation in its own OS process, so the daemon never stalls.

The daemon keeps the channel, the admin endpoint, control RPCs, heartbeats and every
other job; whatever a job computes (a large key generation, PSI, encryption) runs in a
child process that cannot hold the daemon's GIL. The child runs exactly
:func:`federation.runner.run_job_side` over a :class:`PipeLink`; the daemon relays its
messages to the job's channel link, so the channel still signs, checks and records
every message in the transcript (no second socket, no side door).

Pipe protocol (between this node's own processes; nothing here comes from the peer):

    child -> daemon  ("send", kind, ptype, bytes)        a message for the peer
                     ("recv", kind, timeout)             wait for the peer's next message
                     ("log", event, fields) | ("progress", step, fraction) | ("stage", s)
                     ("checkpoint", record)   a checkpoint file was written: record it
                     ("done", JobResult) | ("failed", error record, traceback text)
    daemon -> child  ("ok", ptype, bytes) | ("raise", error record)   answer to "recv"

Payloads cross the pipe in their wire encoding (:mod:`federation.link.codec`). Results
(the JobResult, via multiprocessing) come from this node's own child process, never
from the peer. A resumed job's child first plays its recorded run back
(:mod:`federation.node.checkpoint`); meanwhile it sends no log, progress or stage
messages. With ``[node] engine = "ray"`` the child first joins the party's Ray cluster
(:func:`_start_engine`; its kernels then run there, :mod:`secure_agg.executor`).
Exceptions cross as error records ``(kind, type name, message,
peer_message)`` and are rebuilt from a fixed table of kinds, never unpickled. A child
that dies (killed, out of memory) fails its job only, with its exit code; cancelling a
job or stopping the node terminates the child.

For tests only: the environment variable ``FEDJOINT_TEST_HOLD_AT_CHECKPOINTS`` (``"2"``,
``"1,3"``), read by the daemon when it starts a job's process, makes that process stop
and wait (up to :data:`HOLD_S`) right after it recorded each of those checkpoint numbers
live, so a test can kill it at a known point whatever the machine's speed. It is not a
node.toml key and nothing sets it outside tests.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import traceback
from collections.abc import Callable

from federation.config import ConfigError
from federation.data import DataError
from federation.link import (
    Link,
    PeerAborted,
    PeerGone,
    ProtocolError,
    decode_payload,
    encode_payload,
)
from federation.runner import JobFailed

POLL_S = 0.2          # how often the daemon checks for cancellation while a job runs
HOLD_ENV = "FEDJOINT_TEST_HOLD_AT_CHECKPOINTS"   # tests only (module docstring)
HOLD_S = 120.0        # the longest a held job process waits before going on
TERM_GRACE_S = 3.0    # SIGTERM, then SIGKILL after this long

_CONTEXT = None


def _context():
    """forkserver: children fork from a clean single-threaded server that has imported
    the pipeline once (fast start, no inherited daemon threads or sockets)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["federation.runner", "parties.registry"])
        _CONTEXT = ctx
    return _CONTEXT


def _ignore(*_args) -> None:
    return None


class JobProcessDied(JobFailed):
    """The job's process ended without a result (killed, crashed, out of memory), or
    the job was stopped while it computed."""


class PipeLink(Link):
    """The child's end: every send and recv goes to the daemon's relay."""

    def __init__(self, conn, job_id: str, party: str, peer: str):
        self._conn, self.job_id, self.party, self.peer = conn, job_id, party, peer
        self._lock = threading.Lock()

    def send(self, kind, payload) -> None:
        ptype, data = encode_payload(payload)
        with self._lock:
            self._conn.send(("send", kind, ptype, data))

    def recv(self, kind, timeout=None):
        with self._lock:
            self._conn.send(("recv", kind, timeout))
            reply = self._conn.recv()
        if reply[0] == "ok":
            return decode_payload(reply[1], reply[2])
        raise _rebuild(reply[1])


#: what an error record's kind rebuilds to, most specific first (PeerAborted and
#: PeerGone are ProtocolErrors)
_KINDS = (("job", JobFailed), ("aborted", PeerAborted), ("gone", PeerGone),
          ("protocol", ProtocolError), ("data", DataError), ("config", ConfigError))


def _error_record(exc: BaseException) -> tuple[str, str, str, str]:
    """An exception as plain data: (kind, type name, message, peer_message)."""
    kind = next((k for k, cls in _KINDS if isinstance(exc, cls)), "other")
    return kind, type(exc).__name__, str(exc), getattr(exc, "peer_message", "") or ""


def _rebuild(record) -> BaseException:
    """The exception an error record stands for; an unknown kind becomes a RuntimeError
    that keeps the original type's name."""
    kind, name, message, peer_message = (tuple(record) + ("", "", "", ""))[:4]
    if kind == "job":
        return JobFailed(str(message), peer_message=str(peer_message))
    cls = dict(_KINDS).get(kind)
    return cls(str(message)) if cls is not None else RuntimeError(f"{name}: {message}")


def _test_hold() -> frozenset[int]:
    """The checkpoint numbers ``FEDJOINT_TEST_HOLD_AT_CHECKPOINTS`` names (tests only)."""
    import os
    raw = os.environ.get(HOLD_ENV, "")
    return frozenset(int(v) for v in raw.replace(" ", "").split(",") if v.isdigit())


def _child_main(conn, spec_dict: dict, cfg, link_names: tuple[str, str, str],
                seed: bytes, plan: dict | None, hold: frozenset[int] = frozenset()) -> None:
    from federation.config import job_spec_from_dict
    from federation.node.checkpoint import Checkpointer, ResumeLink, ResumePlan
    from federation.node.psi_budget import job_psi_budget
    from federation.runner import run_job_side
    try:
        spec = job_spec_from_dict(spec_dict, f"job {link_names[0]}")
        link = ResumeLink(PipeLink(conn, *link_names), cfg.data_dir,
                          ResumePlan.from_dict(plan) if plan else None)

        def live(op: str, *values) -> None:
            if not link.replaying:
                conn.send((op, *values))

        def log(event, fields):
            live("log", event, dict(fields or {}))

        _start_engine(cfg, log)
        from psi.engine import prestart
        prestart(cfg.workers)   # PSI's worker pool starts while the job loads its data

        def record(rec: dict) -> None:
            conn.send(("checkpoint", rec))
            if rec["n"] in hold:        # tests only: wait here to be killed (docstring)
                import time
                log("test.hold", {"checkpoint": rec["n"]})
                time.sleep(HOLD_S)

        # the platform's query budget (and a due OPRF key rotation) for the job's PSI;
        # a resumed job's PSI was charged when it first ran
        budget = job_psi_budget(spec, cfg, link_names[0], log) if plan is None else None
        result = run_job_side(
            spec, cfg, link, seed, psi_budget=budget,
            progress=lambda step, frac: live("progress", step, float(frac)),
            log=log,
            on_stage=lambda stage: live("stage", stage),
            checkpoint=Checkpointer(link, cfg.data_dir, cfg.party, record, log))
        conn.send(("done", result))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass    # the daemon closed the pipe (job stopped or cancelled): nobody to tell
    except BaseException as exc:  # noqa: BLE001 - reported to the daemon
        try:
            conn.send(("failed", _error_record(exc), traceback.format_exc(limit=12)))
        except (BrokenPipeError, EOFError, ConnectionResetError):
            pass
    finally:
        conn.close()


def _start_engine(cfg, log: Callable) -> None:
    """Run this job's kernels on the node's engine: with ``engine = "ray"``, connect to
    the party's cluster first, or fail the job naming the address (bounded by
    ``ray_connect_timeout_s``) before anything is sent to the peer."""
    eng = cfg.engine
    if eng.engine == "local":
        return
    from secure_agg import executor
    token = str(eng.ray_auth_token_file) if eng.ray_auth_token_file else None
    try:
        info = executor.configure(eng.engine, eng.ray_address, eng.ray_connect_timeout_s,
                                  token)
    except executor.EngineUnavailable as exc:
        raise JobFailed(f"{cfg.file}: node.ray_address = {eng.ray_address!r} (engine = "
                        f"\"ray\", node.ray_connect_timeout_s = {eng.ray_connect_timeout_s:g}"
                        f"): {exc}", peer_message="the peer's compute engine is unavailable"
                        ) from None
    log("engine.connected", info)


def run_job_process(spec_dict: dict, cfg, link, seed: bytes, *,
                    progress: Callable, log: Callable, on_stage: Callable,
                    should_stop: Callable[[], bool], on_checkpoint: Callable = _ignore,
                    resume: dict | None = None):
    """Run the job's pipeline in a child process, relaying its messages over ``link``
    (the job's channel link); returns its JobResult or raises what it raised.
    ``resume``: the :class:`~federation.node.checkpoint.ResumePlan` (as a dict) of a
    job resumed from a checkpoint; ``on_checkpoint(record)`` for each new checkpoint."""
    ctx = _context()
    mine, theirs = ctx.Pipe(duplex=True)
    names = (link.job_id, getattr(link, "party", ""), getattr(link, "peer", ""))
    proc = ctx.Process(target=_child_main, args=(theirs, spec_dict, cfg, names, seed,
                                                 resume, _test_hold()),
                       name=f"fedjoint-job-{link.job_id}")   # not daemonic: it has
    # its own worker processes (PSI, Paillier); it is always stopped below, and a child
    # whose daemon died fails at its next pipe operation
    proc.start()
    theirs.close()
    try:
        while True:
            if should_stop():
                raise JobProcessDied("the job was stopped")
            if not mine.poll(POLL_S):
                if not proc.is_alive() and not mine.poll(0):
                    raise JobProcessDied(f"the job's process died (exit code "
                                         f"{proc.exitcode})")
                continue
            try:
                msg = mine.recv()
            except (EOFError, OSError):
                proc.join(1.0)
                raise JobProcessDied(f"the job's process died (exit code {proc.exitcode})"
                                     ) from None
            op = msg[0]
            if op == "send":
                link.send(msg[1], decode_payload(msg[2], msg[3]))
            elif op == "recv":
                try:
                    payload = link.recv(msg[1], msg[2]) if msg[2] is not None else \
                        link.recv(msg[1])
                    reply = ("ok", *encode_payload(payload))
                except (PeerGone, PeerAborted, ProtocolError) as exc:
                    reply = ("raise", _error_record(exc))
                try:
                    mine.send(reply)
                except OSError:     # BrokenPipeError: the child died meanwhile
                    proc.join(1.0)
                    raise JobProcessDied(f"the job's process died (exit code "
                                         f"{proc.exitcode})") from None
            elif op == "progress":
                progress(msg[1], msg[2])
            elif op == "log":
                log(msg[1], msg[2])
            elif op == "stage":
                on_stage(msg[1])
            elif op == "checkpoint":
                on_checkpoint(dict(msg[1]))
            elif op == "done":
                return msg[1]
            elif op == "failed":
                exc = _rebuild(msg[1])
                exc.child_traceback = msg[2]
                raise exc
    finally:
        mine.close()
        _stop(proc)


def _stop(proc) -> None:
    proc.join(0.5)
    if proc.is_alive():
        proc.terminate()
        proc.join(TERM_GRACE_S)
    if proc.is_alive():
        proc.kill()
        proc.join(1.0)
