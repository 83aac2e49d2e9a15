"""A transcript as data for display: per-record rows and rounds of the exchange.

:func:`timeline` groups messages into rounds from the writer's view (also used by
replay to show per-round status); :func:`show` adds the verification summary.
"""

from __future__ import annotations

from pathlib import Path

from federation.audit.verify import verify
from federation.transcript import NOT_REPLAYED, Transcript, load


def timeline(t: Transcript, status: dict[int, str] | None = None,
             elapsed: dict[int, float] | None = None) -> list[dict]:
    """Rounds of the exchange from this party's view: a round is a run of messages it
    sent followed by the run of messages it received next. Each round lists its kinds
    with counts and bytes; with replay status, whether every message matched."""
    rounds: list[dict] = []
    cur: dict | None = None
    t_start = t.header.get("t", 0.0)
    for i, r in enumerate(t.records):
        if r.get("type") != "msg":
            continue
        d = r.get("dir")
        if cur is None or (d == "sent" and cur["_last"] == "received"):
            cur = {"round": len(rounds) + 1, "first_record": i,
                   "t": round(float(r.get("t", t_start)) - float(t_start), 3),
                   "sent": {}, "received": {}, "bytes": {"sent": 0, "received": 0},
                   "_st": []}
            rounds.append(cur)
        cur["_last"] = d
        k = r.get("kind", "?")
        cur[d][k] = cur[d].get(k, 0) + 1
        cur["bytes"][d] += int(r.get("len", 0))
        cur["last_record"] = i
        if status is not None:
            control = k in NOT_REPLAYED
            cur["_st"].append("skipped" if control else status.get(i, "not reached"))
    for c in rounds:
        c.pop("_last", None)
        st = c.pop("_st")
        if status is not None:
            if "MISMATCH" in st:
                c["replay"] = "MISMATCH"
            elif all(s in ("matched", "fed", "skipped") for s in st):
                c["replay"] = "ok"
            else:
                c["replay"] = "not reached"
    return rounds


def show(transcript_path: str | Path) -> dict:
    """Everything ``fedjoint audit show`` prints: summary, per-record rows, rounds."""
    t = load(transcript_path)
    v = verify(transcript_path)
    t0 = t.header.get("t", 0.0)
    rows = []
    for i, r in enumerate(t.records):
        row = {"i": i, "type": r.get("type"), "t": round(float(r.get("t", t0)) - t0, 3)}
        if r.get("type") == "msg":
            row.update({k: r.get(k) for k in ("dir", "seq", "kind", "ptype", "len")})
            row["sha256"] = r.get("sha256")
            if r.get("disc"):
                row["disclosure"] = r["disc"]
        elif r.get("type") == "outcome":
            row["model_digests"] = {n: s.get("model_digest")
                                    for n, s in r.get("statements", {}).items()}
        elif r.get("type") == "abort":
            row["reason"] = r.get("reason")
        rows.append(row)
    return {"summary": v.summary, "verified": v.ok,
            "errors": [str(e) for e in v.errors], "records": rows, "rounds": timeline(t)}
