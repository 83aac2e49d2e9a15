"""Checkpoint and restart records: what a resumed job's transcript means.

A job that can resume writes a ``checkpoint`` record after each tree / epoch::

    {"type": "checkpoint", "n": 3, "stage": "train", "step": 3, "sent": 41,
     "received": 40, "file": "<sha256 of the checkpoint file>"}

``n`` numbers the job's checkpoints from 1; ``sent`` / ``received`` count the messages
the pipeline had sent and consumed at that point (a consistent cut: the two parties'
checkpoint ``n`` mirror each other's counts). When the job resumes from checkpoint
``n``, the writer appends a ``restart`` record::

    {"type": "restart", "checkpoint": 3, "sent": 41, "received": 40, "reason": "...",
     "discarded": {"sent": 2, "received": 3}, "file": "<sha256>"}

From a restart record on, the transcript's *effective* messages are the first ``sent``
sent and ``received`` received messages before it, then the messages after it: the
messages of the interrupted round (``discarded``) stay in the chain, signed, but count
in no root, ledger or agreement check, and the reopened stream numbers its messages
from ``sent + 1`` / ``received + 1``. Checkpoints numbered above ``n`` before the
restart are discarded with them.
"""

from __future__ import annotations

from federation.transcript.records import DIRECTIONS

CHECKPOINT = "checkpoint"
RESTART = "restart"


def effective(records: list[dict]) -> tuple[dict[str, list[tuple[int, dict]]], list[dict]]:
    """The effective messages per direction (``(record index, record)``) and checkpoint
    records of a transcript, with every restart applied (see the module docstring).
    Records are taken as they are; :mod:`federation.audit.verify` checks them."""
    msgs: dict[str, list[tuple[int, dict]]] = {d: [] for d in DIRECTIONS}
    points: list[dict] = []
    for i, rec in enumerate(records):
        typ = rec.get("type")
        if typ == "msg" and rec.get("dir") in DIRECTIONS:
            msgs[rec["dir"]].append((i, rec))
        elif typ == CHECKPOINT:
            points.append(rec)
        elif typ == RESTART:
            n, s, r = rec.get("checkpoint"), rec.get("sent"), rec.get("received")
            if isinstance(n, int) and isinstance(s, int) and isinstance(r, int):
                del msgs["sent"][max(s, 0):]
                del msgs["received"][max(r, 0):]
                points = [p for p in points if isinstance(p.get("n"), int) and p["n"] <= n]
    return msgs, points
