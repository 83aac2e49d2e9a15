"""How long a node keeps the payloads it received: node.toml ``[transcript] keep_received``.

The signed transcript (digests, signatures, disclosure counts) is always kept; what
this policy governs is the private sidecar ``<transcript>.recv``, the bytes of every
payload this party received, which replay (``fedjoint audit replay``) feeds back to the
pipeline. Its size grows with every ciphertext received (hundreds of MB per job at
30k rows), so a node may keep it:

* ``"full"`` (default): for ever;
* ``"days:N"``: until the job closed more than N days ago (pruned when the node
  starts and after each job);
* ``"digests"``: only while the job runs or may resume; it is deleted when the job's
  transcript closes (outcome or abort record). The transcript's job record says so
  (``storage.keep = "digests"``, signed at the job's start), ``audit verify`` works as
  before, and ``audit replay`` of this party alone reports that it needs the payloads.

A sidecar is deleted only once its transcript is closed: a running job, or an
interrupted one that may resume from a checkpoint (resume replays the sidecar), keeps
it under every policy (:func:`kept_open` lists them; the node logs each at start as
``transcript.retention_refused``). Nothing here talks to the peer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from federation.transcript.records import SIDECAR_SUFFIX, sidecar_path

KEEP_FULL, KEEP_DIGESTS = "full", "digests"
DAY_S = 86400.0


def parse_keep_received(text: str) -> float | None:
    """``"full"`` -> None (keep), ``"digests"`` -> 0.0 (delete at close), ``"days:N"``
    -> N (days, > 0). ValueError says what is expected."""
    text = str(text).strip()
    if text == KEEP_FULL:
        return None
    if text == KEEP_DIGESTS:
        return 0.0
    what, _, num = text.partition(":")
    try:
        days = float(num) if what == "days" else 0.0
    except ValueError:
        days = 0.0
    if not days > 0 or days != days or days == float("inf"):
        raise ValueError(f"{text!r}: expected \"full\", \"digests\" or \"days:N\" (N > 0 days)")
    return days


def is_closed(transcript: Path) -> bool:
    """True if the transcript's last complete record is an outcome or abort record."""
    try:
        with open(transcript, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 65536))
            tail = fh.read()
    except OSError:
        return False
    lines = tail.rstrip(b"\n").split(b"\n")
    try:
        last = json.loads(lines[-1])
    except ValueError:
        return False
    return isinstance(last, dict) and last.get("type") in ("outcome", "abort")


def _due(transcripts_dir: str | Path, keep_received: str, now: float | None
         ) -> list[tuple[Path, bool]]:
    """The sidecars old enough for the policy to delete, each with whether its
    transcript is closed (only those may go)."""
    days = parse_keep_received(keep_received)
    if days is None:
        return []
    now = time.time() if now is None else now
    due = []
    for side in sorted(Path(transcripts_dir).glob(f"*{SIDECAR_SUFFIX}")):
        transcript = side.with_suffix("")
        try:
            age = now - transcript.stat().st_mtime
        except OSError:
            continue               # no transcript next to it: not ours to judge
        if age >= days * DAY_S:
            due.append((side, is_closed(transcript)))
    return due


def prune(transcripts_dir: str | Path, keep_received: str, now: float | None = None
          ) -> list[Path]:
    """Delete the sidecars the policy no longer keeps: of closed transcripts whose
    last write is older than N days (``days:N``) or of every closed transcript
    (``digests``). Returns the deleted sidecar paths (open transcripts are skipped:
    :func:`kept_open`)."""
    removed = []
    for side, closed in _due(transcripts_dir, keep_received, now):
        if closed:
            side.unlink(missing_ok=True)
            removed.append(side)
    return removed


def kept_open(transcripts_dir: str | Path, keep_received: str, now: float | None = None
              ) -> list[Path]:
    """The sidecars the policy would delete but does not, because their transcript is
    open: a running job, or an interrupted one that may resume (it replays them)."""
    return [side for side, closed in _due(transcripts_dir, keep_received, now)
            if not closed]


def drop_after_close(transcript: str | Path, keep_received: str) -> bool:
    """``digests``: delete the closed transcript's sidecar now. Returns True if deleted."""
    if parse_keep_received(keep_received) != 0.0 or not is_closed(Path(transcript)):
        return False
    side = sidecar_path(transcript)
    existed = side.exists()
    side.unlink(missing_ok=True)
    return existed
