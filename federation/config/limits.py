"""node.toml ``[limits]`` -> :class:`Limits`: every bound a peer or a local client can
push against, in one place, with safe defaults.

The channel (``ChannelSettings.limits``), the payload decoder (``Limits.json``) and the
admin endpoint take their bounds from here. Hitting one fails only the job or the
connection that hit it, with a reason naming the limit's key (``limits.max_message_bytes
= 268435456``); the node, its other jobs, pings and the admin endpoint carry on.
docs/threat-model.md lists which attack each limit stops and the test that shows it.

::

    [limits]
    max_message_bytes = 268435456     # 256 MiB: largest message payload sent or accepted
    min_chunk_bytes = 65536           # every chunk of a message but its last is >= this
    max_job_buffer_bytes = 536870912  # 512 MiB: received bytes one job may hold
    max_control_bytes = 1048576       # 1 MiB: body of a control request from the peer
    max_streams = 32                  # message streams the peer may hold open at once
    hello_timeout_s = 10.0            # a new stream must say hello within this
    max_json_bytes = 16777216         # 16 MiB: largest JSON payload
    max_json_depth = 32               # deepest JSON nesting
    max_json_int_digits = 64          # longest JSON integer
    max_logged_chars = 500            # peer-supplied text in logs and stored errors
    admin_timeout_s = 10.0            # an admin connection must deliver its request within
    admin_max_request_bytes = 1048576 # 1 MiB: largest admin request body
    max_peer_jobs = 4                 # jobs the peer may have open here at once
    max_peer_proposals_per_minute = 30  # job proposals the peer may make per minute
    max_classes = 64                  # classes of a multiclass label (own data and peer's K)
    serve_max_body_bytes = 1048576    # 1 MiB: largest HTTP request body of `fedjoint serve`
    serve_max_batch_rows = 1024       # applicants per score:batch request and per lookup
    serve_queue_rows = 4096           # applicants waiting for a lookup (full: 503)
    serve_lookup_timeout_s = 2.0      # a lookup the platform has not answered fails (503)
    serve_max_sessions = 8            # served models the peer may have open here at once
    max_pipeline_stages = 16          # stages of one pipeline job (proposed or submitted)
    memory_budget_mb = 8192           # what loading one dataset may hold (0: no budget)
    read_chunk_rows = 16384           # rows per chunk when a dataset is read

Job ids (proposals, stream hellos, control requests) are checked by :func:`job_id_problem`
against :data:`JOB_ID_RE` (the channel uses the same definition) before anything is
written for them.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass

from federation.config.toml import _Table
from federation.link.codec import JSON_LIMITS, JsonLimits

#: the largest chunk a fedjoint sender puts in one frame (federation.channel MAX_CHUNK)
_MAX_CHUNK = 4 << 20
#: Python refuses to convert longer decimal strings to int
_INT_DIGITS_CAP = sys.get_int_max_str_digits() or 4300
#: Longest job id (a peer-supplied id names files: vault/ID.seed, transcripts/ID.jsonl)
MAX_JOB_ID_CHARS = 128
#: The one definition of a job id, used by the channel (stream hellos, links) and the
#: node (proposals, control requests): ASCII letters and digits first, then ASCII
#: letters, digits and ``_ . : -``; no ``/``, no whitespace or control characters, no
#: other scripts. ``\Z`` (not ``$``, which also matches before a final newline).
JOB_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_JOB_ID_CHARS - 1}}}\Z")


def job_id_problem(job_id: object) -> str | None:
    """Why ``job_id`` (as received from the peer) is not a valid job id, or None."""
    if not isinstance(job_id, str) or not job_id:
        return "a job id is required (a non-empty string)"
    if len(job_id) > MAX_JOB_ID_CHARS:
        return f"job id is {len(job_id)} characters long (at most {MAX_JOB_ID_CHARS})"
    if not JOB_ID_RE.match(job_id):
        return (f"job id {job_id[:40]!r} is malformed (ASCII letters and digits, then "
                f"letters, digits and '_', '.', ':', '-' only)")
    return None


@dataclass(frozen=True)
class Limits:
    """Bounds on what the peer and local clients may make this node hold or do."""

    #: Largest message payload, checked on the announced length before any byte is
    #: buffered (receiving) and in ``send`` (sending). The largest legitimate messages
    #: are a few MiB with default parameters (a PSI batch of 65536 points: 4 MiB; an LR
    #: batch or a SecureBoost gradient chunk of 4096 ciphertexts: 2-4 MiB); a full-batch
    #: LR over 500k rows with 2048-bit keys is 256 MiB.
    max_message_bytes: int = 256 << 20
    #: Smallest chunk of a message other than its last one (fedjoint senders cut 4 MiB
    #: chunks), so a message cannot be sent as a flood of tiny frames.
    min_chunk_bytes: int = 64 << 10
    #: Received bytes one job may hold: delivered-but-unread messages plus the message
    #: being received (buffered until its SHA-256 is checked). Reading pauses above it
    #: (TCP back-pressure); one message is always allowed, so it must be at least
    #: ``max_message_bytes``.
    max_job_buffer_bytes: int = 512 << 20
    #: Body of one control request (job proposals, status, cancel, ping) from the peer.
    max_control_bytes: int = 1 << 20
    #: Message streams the peer may hold open to this node at once (one per open job
    #: and direction is normal); more are refused at once, without holding a worker.
    max_streams: int = 32
    #: A new message stream must name its job (say hello) within this many seconds.
    hello_timeout_s: float = 10.0
    #: Largest JSON payload (message or control body).
    max_json_bytes: int = JSON_LIMITS.max_bytes
    #: Deepest nesting of JSON arrays and objects ({} is 1).
    max_json_depth: int = JSON_LIMITS.max_depth
    #: Longest integer in a JSON payload, in decimal digits (big numbers travel as
    #: strings or binary).
    max_json_int_digits: int = JSON_LIMITS.max_int_digits
    #: Peer-supplied text (abort reasons, error replies, names) is cut to this many
    #: characters in logs and stored job errors.
    max_logged_chars: int = 500
    #: An admin connection must deliver each complete request within this many seconds
    #: (idle keep-alive connections are closed after it too).
    admin_timeout_s: float = 10.0
    #: Largest admin request body (the CLI sends job specs: a few KiB).
    admin_max_request_bytes: int = 1 << 20
    #: Jobs the peer may have open on this node at once (proposed and not yet done,
    #: failed or cancelled, awaiting approval included); a further proposal is refused
    #: before anything is stored for it. ``policy.max_concurrent_jobs`` still bounds how
    #: many of them compute at once.
    max_peer_jobs: int = 4
    #: Job proposals the peer may make in any 60 seconds; more are refused before their
    #: spec is read or anything is stored.
    max_peer_proposals_per_minute: int = 30
    #: Distinct classes a multiclass label may have: the bank's loader refuses more, and
    #: a platform refuses a job whose bank announces more (each class is a tree per
    #: round and a gradient slot per row).
    max_classes: int = 64
    #: Largest HTTP request body ``fedjoint serve`` reads (413 above; the body is not
    #: buffered past it).
    serve_max_body_bytes: int = 1 << 20
    #: Applicants in one ``/v1/score:batch`` request (422 above) and in one lookup the
    #: bank sends or the platform answers (refused above).
    serve_max_batch_rows: int = 1024
    #: Applicants the bank's service holds waiting for a lookup; a request that does not
    #: fit is answered 503 at once (bounded queue, no unbounded latency).
    serve_queue_rows: int = 4096
    #: A lookup the platform has not answered within this many seconds fails its
    #: requests with 503 (the platform may be down or restarting).
    serve_lookup_timeout_s: float = 2.0
    #: Serving sessions (served models set up by the bank) open on the platform at once;
    #: the oldest is dropped for a new one above it (each holds its feature store).
    serve_max_sessions: int = 8
    #: Stages of one pipeline job this node runs (a proposal with more is refused
    #: before anything is stored for it; each stage is one algorithm's whole protocol).
    max_pipeline_stages: int = 16
    #: Memory one job's dataset may take as loaded (float64 features, ids, label) plus
    #: one read chunk, in MiB; a dataset that would not fit fails the job at load, before
    #: PSI, naming the key to change (this one, or ``read_chunk_rows``). 0: no budget.
    memory_budget_mb: int = 8192
    #: Rows per chunk when a dataset is read (CSV, Parquet, DuckDB): the reader holds one
    #: chunk's text beside the float64 matrix (docs/data.md).
    read_chunk_rows: int = 16384

    def __post_init__(self) -> None:
        problem = check_limits(vars(self))
        if problem:
            key, msg = problem
            raise ValueError(f"limits.{key} = {getattr(self, key)!r}: {msg}")

    @property
    def json(self) -> JsonLimits:
        """The JSON bounds in the form the payload decoder takes."""
        return JsonLimits(self.max_json_bytes, self.max_json_depth, self.max_json_int_digits)


#: (key, smallest, largest) of every integer limit; floats are positive seconds
_INT_RANGES = {
    "max_message_bytes": (1, 1 << 40),
    "min_chunk_bytes": (1, _MAX_CHUNK),
    "max_job_buffer_bytes": (1, 1 << 42),
    "max_control_bytes": (1024, 4 << 20),
    "max_streams": (1, 1024),
    "max_json_bytes": (2, 1 << 32),
    "max_json_depth": (1, 512),
    "max_json_int_digits": (1, _INT_DIGITS_CAP),
    "max_logged_chars": (64, 1 << 20),
    "admin_max_request_bytes": (1024, 1 << 30),
    "max_peer_jobs": (1, 1024),
    "max_peer_proposals_per_minute": (1, 100_000),
    "max_classes": (2, 4096),
    "serve_max_body_bytes": (1024, 1 << 30),
    "serve_max_batch_rows": (1, 1 << 16),
    "serve_queue_rows": (1, 1 << 24),
    "serve_max_sessions": (1, 1024),
    "max_pipeline_stages": (1, 64),
    "memory_budget_mb": (0, 1 << 24),
    "read_chunk_rows": (1, 1 << 24),
}
_FLOATS = ("hello_timeout_s", "admin_timeout_s", "serve_lookup_timeout_s")


def check_limits(values: dict) -> tuple[str, str] | None:
    """``(key, what is wrong)`` for the first invalid value of ``{key: value}``, or None."""
    for key, (lo, hi) in _INT_RANGES.items():
        v = values[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            return key, f"expected an integer in {lo}..{hi}"
    for key in _FLOATS:
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
            return key, "expected a number of seconds in (0, 3600]"
    if values["max_job_buffer_bytes"] < values["max_message_bytes"]:
        return ("max_job_buffer_bytes", f"must be at least limits.max_message_bytes "
                f"({values['max_message_bytes']}): a job must be able to hold one whole "
                f"message")
    return None


KEYS = tuple(f.name for f in dataclasses.fields(Limits))


def parse_limits(t: _Table) -> Limits:
    """The ``[limits]`` table (every key optional); errors name the file and the key."""
    t.check_keys(KEYS)
    defaults = Limits()
    values = {}
    for key in KEYS:
        kind = float if key in _FLOATS else int
        values[key] = t.get(key, kind, getattr(defaults, key))
    problem = check_limits(values)
    if problem:
        key, msg = problem
        raise t.err(key, f"= {values[key]!r}: {msg}")
    return Limits(**values)


__all__ = ["JOB_ID_RE", "KEYS", "MAX_JOB_ID_CHARS", "Limits", "check_limits", "job_id_problem",
           "parse_limits"]
