"""The node's SQLite job store: jobs, their state machine, events, artifacts, models.

States (DESIGN.md)::

    submitted -> approved -> psi -> training -> evaluating -> done
    any non-final state -> failed(reason) | cancelled

``submitted`` may also go straight to ``failed`` (the peer refused the job). A job that
holds a checkpoint goes from ``training``/``evaluating`` to ``interrupted`` when its run
stops without either party failing it, and back to ``training`` when it resumes. Scoring
and PSI-only jobs skip ``training``/``evaluating`` (``psi -> scoring -> done`` and
``psi -> done``). Invalid transitions raise :class:`InvalidTransition`.
One connection per call, WAL mode, so runner threads and the admin server can share
the store safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("submitted", "approved", "psi", "training", "evaluating", "scoring", "done",
          "failed", "cancelled", "interrupted")
FINAL = ("done", "failed", "cancelled")
_NEXT = {
    "submitted": {"approved"},
    "approved": {"psi"},
    "psi": {"training", "scoring", "done"},
    "training": {"evaluating", "done", "interrupted"},
    "evaluating": {"done", "interrupted"},
    "interrupted": {"training"},     # resumed from a checkpoint (docs/resume.md)
    "scoring": {"done"},
}


class InvalidTransition(ValueError):
    pass


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job {self.args[0]!r} on this node (see `fedjoint job list`)"


@dataclass
class JobRecord:
    job_id: str
    name: str
    algorithm: str
    role: str                 # "bank" | "platform"
    state: str
    spec: dict
    created: float
    updated: float
    error: str = ""
    metrics: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    role TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    artifacts TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
    history TEXT NOT NULL DEFAULT '[]',
    progress TEXT NOT NULL DEFAULT '{}',
    checkpoint TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    peer_digest TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    feature_names TEXT NOT NULL DEFAULT '[]'
);
"""

_JSON_COLS = ("spec", "metrics", "artifacts", "timings", "history", "progress", "checkpoint")


class JobStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(_SCHEMA)
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    @contextmanager
    def _conn(self):
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()

    # ---------------------------------------------------------------- jobs
    def create(self, job_id: str, name: str, algorithm: str, role: str, spec: dict,
               state: str = "submitted") -> JobRecord:
        now = time.time()
        with self._lock, self._conn() as c:
            try:
                c.execute("INSERT INTO jobs (job_id, name, algorithm, role, state, spec, "
                          "created, updated) VALUES (?,?,?,?,?,?,?,?)",
                          (job_id, name, algorithm, role, state, json.dumps(spec), now, now))
            except sqlite3.IntegrityError:
                raise ValueError(f"job {job_id!r} already exists") from None
        self.event(job_id, "state", {"state": state})
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        """By id, or by a unique id prefix (what an operator types)."""
        if not job_id:
            raise JobNotFound(job_id)
        with self._conn() as c:
            row = c.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                rows = c.execute("SELECT * FROM jobs WHERE substr(job_id, 1, ?) = ? "
                                 "ORDER BY created", (len(job_id), job_id)).fetchall()
                if len(rows) == 1:
                    row = rows[0]
        if row is None:
            raise JobNotFound(job_id)
        return _record(row)

    def list(self, limit: int = 100) -> list[JobRecord]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?",
                             (limit,)).fetchall()
        return [_record(r) for r in rows]

    def active(self) -> list[JobRecord]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM jobs WHERE state NOT IN (?,?,?) ORDER BY created",
                             FINAL).fetchall()
        return [_record(r) for r in rows]

    def transition(self, job_id: str, state: str, error: str = "") -> JobRecord:
        if state not in STATES:
            raise InvalidTransition(f"unknown state {state!r}")
        with self._lock, self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            row = c.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                c.execute("ROLLBACK")
                raise JobNotFound(job_id)
            cur = row["state"]
            ok = (state in ("failed", "cancelled") and cur not in FINAL) or \
                state in _NEXT.get(cur, set())
            if not ok:
                c.execute("ROLLBACK")
                raise InvalidTransition(f"job {job_id}: cannot go from {cur!r} to {state!r}")
            c.execute("UPDATE jobs SET state = ?, error = ?, updated = ? WHERE job_id = ?",
                      (state, error, time.time(), job_id))
            c.execute("COMMIT")
        fields = {"state": state, "from": cur}
        if error:
            fields["reason"] = error
        self.event(job_id, "state", fields)
        return self.get(job_id)

    def update(self, job_id: str, **values) -> None:
        """Set JSON columns (metrics, artifacts, timings, history, progress, checkpoint)."""
        sets, args = [], []
        for k, v in values.items():
            if k not in _JSON_COLS:
                raise ValueError(f"cannot update column {k!r}")
            sets.append(f"{k} = ?")
            args.append(json.dumps(v, default=_jsonable))
        if not sets:
            return
        with self._lock, self._conn() as c:
            c.execute(f"UPDATE jobs SET {', '.join(sets)}, updated = ? WHERE job_id = ?",
                      (*args, time.time(), job_id))

    # ---------------------------------------------------------------- events
    def event(self, job_id: str, event: str, fields: dict | None = None) -> None:
        with self._lock, self._conn() as c:
            c.execute("INSERT INTO events (job_id, ts, event, fields) VALUES (?,?,?,?)",
                      (job_id, time.time(), event, json.dumps(fields or {},
                                                              default=_jsonable)))

    def events(self, job_id: str, after: int = 0) -> list[dict]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id",
                             (job_id, after)).fetchall()
        return [{"id": r["id"], "ts": r["ts"], "event": r["event"],
                 **json.loads(r["fields"])} for r in rows]

    # ---------------------------------------------------------------- models
    def add_model(self, model_id: str, job_id: str, algorithm: str, path: str, digest: str,
                  peer_digest: str = "", metrics: dict | None = None,
                  feature_names: list | None = None) -> None:
        with self._lock, self._conn() as c:
            c.execute("INSERT OR REPLACE INTO models (model_id, job_id, algorithm, path, "
                      "digest, peer_digest, created, metrics, feature_names) "
                      "VALUES (?,?,?,?,?,?,?,?,?)",
                      (model_id, job_id, algorithm, path, digest, peer_digest, time.time(),
                       json.dumps(metrics or {}, default=_jsonable),
                       json.dumps(feature_names or [])))

    def models(self) -> list[dict]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM models ORDER BY created DESC").fetchall()
        return [_model(r) for r in rows]

    def model(self, model_id: str) -> dict:
        if not model_id:
            raise KeyError("no model id given (see `fedjoint model list`)")
        with self._conn() as c:
            row = c.execute("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
            if row is None:
                rows = c.execute("SELECT * FROM models WHERE substr(model_id, 1, ?) = ?",
                                 (len(model_id), model_id)).fetchall()
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise KeyError(f"no model {model_id!r} on this node (see `fedjoint model list`)")
        return _model(row)


def _jsonable(v):
    try:
        import numpy as np
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _record(row) -> JobRecord:
    d = dict(row)
    for k in _JSON_COLS:
        d[k] = json.loads(d[k])
    return JobRecord(**d)


def _model(row) -> dict:
    d = dict(row)
    d["metrics"] = json.loads(d["metrics"])
    d["feature_names"] = json.loads(d["feature_names"])
    return d
