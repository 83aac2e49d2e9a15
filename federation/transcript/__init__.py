"""Signed, hash-chained transcripts: the evidence of what crossed in one job.

Each node writes one transcript per job. The node creates a :class:`TranscriptWriter`
when the job starts, hands it to the channel as the job's
:class:`federation.link.MessageRecorder` (the channel calls
:meth:`TranscriptWriter.record` for every envelope sent or received), and when the
job's pipeline has produced its model part it calls :func:`exchange_outcome`, which
sends this party's signed outcome statement to the peer as message kind
``job.outcome``, receives the peer's, checks it and writes the closing record. A job
that fails is closed with :meth:`TranscriptWriter.abort`.

Format (``fedjoint-transcript``, version 1) -- see docs/audit.md for the auditor's view:

* One JSON object per line, canonical JSON (sorted keys, ``(",", ":")`` separators,
  UTF-8, no NaN), each line ending in ``\\n``. A line that does not re-serialise to
  exactly its own bytes is a modified record.
* Every record has ``v`` (format version, 1), ``i`` (record index from 0), ``type``,
  ``t`` (Unix time, seconds), ``prev`` (hex SHA-256 of the previous line's bytes
  without its newline; 64 zeros for record 0): the hash chain, and ``rsig``: the
  writer's Ed25519 signature over the record without ``rsig``
  (:func:`record_signing_bytes`). Because each record signs ``prev``, a changed,
  removed, inserted or reordered record is pinpointed even if someone rewrites the
  chain after it.
* Record 0, ``type = "job"``, binds the job: ``format``, ``job_id``, ``party`` (the
  writer), ``peer``, ``keys`` (both parties' raw Ed25519 public keys, hex),
  ``fingerprints`` (their SHA-256, hex), ``spec_digest`` and ``spec`` (the canonical job
  spec), ``protocols`` (protocol versions), ``key_sizes``, ``roles`` (sender name ->
  bank/platform), ``storage`` (how received
  payloads are kept).
* ``type = "msg"``: one message. ``dir`` (``sent``/``received``), ``seq``, ``sender``,
  ``kind``, ``ptype``, ``len``, ``sha256`` -- the envelope fields -- and ``sig``, the
  *sender's* Ed25519 signature over :meth:`Envelope.signing_bytes` (the job id comes
  from record 0). Received payloads also carry ``at``: the byte offset of the payload
  in the sidecar file (below). Disclosure-ledger kinds carry ``disc = [category, n]``.
* The last record closes the transcript; its ``prev`` is the head of the chain, so
  its signature covers every byte before it:

  - ``type = "outcome"``: ``statements``, both parties' outcome statements (job id,
    party, model-part digest, and for each direction the number of messages and a
    running digest ``root`` of their envelopes), each signed by its owner;
  - ``type = "abort"``: ``reason`` (the job failed or was cancelled).

Payload storage: the transcript holds digests only, so it can be handed to an auditor
or to the peer without carrying any data. Every payload this party *received* is
appended to a private sidecar ``<transcript>.recv`` (mode 0600, in the party's own data
directory): replay feeds these bytes back to the pipeline, checked against the signed
digests. Nothing of what this party *sent* is kept beyond its digest: replay re-derives
it from the party's data, keys and per-job seed and compares digests.

Disclosure ledger: protocol modules declare which message kinds carry values that
cross in the clear or under the receiver's own key, with
:func:`federation.link.declare_disclosures`::

    declare_disclosures({"sb.partition": ("partition", lambda p: int(p.size))})

The writer counts these values as the messages cross (``disc`` in the record); the
auditor sums them per category and receiver.

The package is split along the format's seams: :mod:`.records` (format constants,
canonical encoding, signatures, outcome statements), :mod:`.writer` (the append-only
writer and the outcome exchange that closes it), :mod:`.reader` (parsing a transcript
and reading its sidecar back), :mod:`.retention` (how long the sidecar is kept:
node.toml ``[transcript] keep_received``) and :mod:`.local_link` (a signed, recorded in-memory link
pair for tests and single-process runs). Everything is re-exported here.
"""

from federation.transcript.local_link import RecordedLocalLink, recorded_local_link_pair
from federation.transcript.reader import (
    RecordMalformed,
    SidecarReader,
    Transcript,
    TranscriptUnreadable,
    load,
)
from federation.transcript.records import (
    DIRECTIONS,
    FORMAT,
    NOT_REPLAYED,
    OUTCOME_KIND,
    RECORD_DOMAIN,
    SIDECAR_SUFFIX,
    STATEMENT_DOMAIN,
    VERSION,
    ZERO_HASH,
    RunningRoot,
    TranscriptError,
    canonical,
    check_statement,
    counts_in_roots,
    envelope_leaf,
    fingerprint,
    public_key_bytes,
    record_signing_bytes,
    sha256_hex,
    sidecar_path,
    spec_digest,
    statement_signing_bytes,
    verify_sig,
)
from federation.transcript.retention import (
    drop_after_close,
    kept_open,
    parse_keep_received,
    prune,
)
from federation.transcript.writer import TranscriptWriter, close_interrupted, exchange_outcome

__all__ = [
    "DIRECTIONS", "FORMAT", "NOT_REPLAYED", "OUTCOME_KIND", "RECORD_DOMAIN",
    "SIDECAR_SUFFIX", "STATEMENT_DOMAIN", "VERSION", "ZERO_HASH",
    "RecordMalformed", "RecordedLocalLink", "RunningRoot", "SidecarReader", "Transcript",
    "TranscriptError", "TranscriptUnreadable", "TranscriptWriter",
    "canonical", "check_statement", "close_interrupted", "drop_after_close", "counts_in_roots", "envelope_leaf", "exchange_outcome",
    "fingerprint", "kept_open", "load", "parse_keep_received", "prune", "public_key_bytes", "record_signing_bytes",
    "recorded_local_link_pair", "sha256_hex", "sidecar_path", "spec_digest",
    "statement_signing_bytes", "verify_sig",
]
