"""Export records: every reveal and full-model export of a trained model, appended to
the model's training transcript after its outcome record (docs/serving.md, docs/audit.md).

A model's two halves are revealed to the bank only over ``serve.reveal`` (the platform's
consent, a statement it signs) and written out by ``fedjoint model export`` on the bank.
Each act is a ``type = "export"`` record on the party's own transcript of the training
job, chained (``i``, ``prev``) and signed (``rsig``) like every record:

* platform, ``act = "reveal"``: ``model``, ``to`` (the bank), ``statement`` (what it
  signed: model id, both part digests, SHA-256 of the revealed table, time) and
  ``signature`` (its own Ed25519 signature over the statement);
* bank, ``act = "export"``: ``model``, ``format``, ``sha256`` of the exported file,
  ``statement`` and ``signature`` as received from the platform (the signature verifies
  with the platform's key in record 0).

Export records only follow a closing ``outcome`` (a model exists only then). The reader
keeps them apart from the job's records (:attr:`Transcript.exports`), so replay and the
job checks are unchanged; ``audit verify`` continues the hash chain over them, checks
their signatures and the statements, and lists them. A reveal that cannot be recorded
is not made; an export that cannot be recorded is not written.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from federation.transcript.records import (
    VERSION,
    TranscriptError,
    canonical,
    record_signing_bytes,
    sha256_hex,
)

EXPORT = "export"
ACTS = ("reveal", "export")


def statement_bytes(st: dict) -> bytes:
    """The bytes a reveal statement is signed over."""
    return json.dumps(st, sort_keys=True, separators=(",", ":")).encode()


def training_transcript(data_dir: str | Path, model_id: str) -> Path:
    """The transcript of the job that trained ``model_id`` (a pipeline stage's model
    ``<job>.<stage>``: its pipeline job's)."""
    d = Path(data_dir) / "transcripts"
    p = d / f"{model_id}.jsonl"
    return p if p.exists() or "." not in model_id else d / f"{model_id.split('.')[0]}.jsonl"


def append_export(path: str | Path, signing_key, body: dict) -> dict:
    """Append one signed export record (``body``: act, model, ...) to a closed training
    transcript; returns it. Raises :class:`TranscriptError` if the transcript is
    missing, not closed by an outcome, or ends in an incomplete line."""
    path = Path(path)
    try:
        fh = open(path, "r+b")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise TranscriptError(f"{path}: the training transcript cannot be opened "
                              f"({exc.strerror})") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        lines = fh.read().split(b"\n")
        if len(lines) < 2 or lines[-1]:
            raise TranscriptError(f"{path}: the training transcript is empty or ends in an "
                                  "incomplete record")
        last = json.loads(lines[-2])
        if last.get("type") not in ("outcome", EXPORT):
            raise TranscriptError(f"{path}: the training job's transcript is not closed "
                                  "by an outcome record (no model to export)")
        rec = {"v": VERSION, "i": len(lines) - 1, "prev": sha256_hex(lines[-2]),
               "t": round(time.time(), 6), "type": EXPORT, **body}
        rec["rsig"] = signing_key.sign(record_signing_bytes(rec)).hex()
        fh.seek(0, os.SEEK_END)
        fh.write(canonical(rec) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return rec
