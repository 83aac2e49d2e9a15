"""The platform's PSI query budget and OPRF key rotation: durable, per peer.

Every PSI lets the bank test the IDs it sends for membership in the platform's data
(|X| IDs of its choosing per job, in every mode). Unbalanced mode makes repeating this
cheap: the platform's key k is long-lived so that its cache can be reused, and a bank
that keeps old outputs can link them across jobs. The platform's node bounds both:

* **budget**: ``[policy] psi_max_queries_per_job`` and ``psi_max_queries_per_day``
  (a rolling 24 h summed over every job of the peer, so splitting one large query into
  many jobs gains nothing). The platform's job charges the bank's announced set size
  to the ledger right after the bank's ``psi.hello``, before it sends any blinded value
  or processes one of the bank's points (:data:`psi.protocol.Budget`); over budget, the
  job fails naming the limit and its node.toml key, and the refused charge is not
  recorded. A charge is spent: a job that fails later keeps it (the bank may already
  hold the replies). Concurrent jobs charge one at a time (SQLite ``BEGIN IMMEDIATE``).
* **rotation**: ``[policy] psi_key_rotation`` ("days:N" of the key's age, "queries:N"
  served under it, both, or "never"); a due rotation runs in the job's process before
  its PSI starts (the daemon never computes); ``fedjoint psi rotate`` rotates on
  demand. :meth:`psi.cache.KeyStore.rotate` re-encrypts the cache and erases the old key.

The ledger is SQLite in the node's state (``<data_dir>/psi/ledger.db``, WAL, like the
job store), so it survives restarts; each job process opens it itself. Nothing here
crosses the wire: what the platform learns (|X|) is in the bank's ``psi.hello``, and in
unbalanced mode the transcript's disclosure ledger counts the queries received
(``psi.oprf_query``); the charge is also in the job's PSI info (``budget``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from federation.config import JobSpec, NodeConfig
from psi.cache import KeyStore, key_id
from psi.protocol import PsiBudgetError

DAY_S = 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL, job_id TEXT NOT NULL, key_id TEXT NOT NULL,
    n INTEGER NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS queries_peer_ts ON queries(peer, ts);
CREATE TABLE IF NOT EXISTS rotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL, old_key_id TEXT NOT NULL, new_key_id TEXT NOT NULL,
    reason TEXT NOT NULL, n_ids INTEGER NOT NULL, seconds REAL NOT NULL, ts REAL NOT NULL);
"""


def ledger_path(cfg: NodeConfig) -> Path:
    return Path(cfg.data_dir) / "psi" / "ledger.db"


class PsiLedger:
    """Per-peer PSI queries and key rotations of this node (SQLite, one connection per
    call, safe across the node's job processes). ``clock``: seconds since the epoch."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path, self.clock = Path(path), clock
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(_SCHEMA)

    @contextmanager
    def _conn(self):
        c = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            yield c
        finally:
            c.close()

    def charge(self, *, peer: str, job_id: str, n: int, key_id: str, per_job: int,
               per_day: int, node: str) -> dict:
        """Record ``n`` queries of ``peer`` or raise :class:`PsiBudgetError` (nothing
        recorded). Returns what the job records: charged, used and left in the window."""
        now = self.clock()
        if n > per_job:
            raise PsiBudgetError(
                f"PSI query budget: the bank's set of {n} IDs is above [policy] "
                f"psi_max_queries_per_job = {per_job} in {node}'s node.toml; nothing was "
                "computed for it")
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")   # concurrent jobs charge one at a time
            try:
                rows = c.execute("SELECT n, ts FROM queries WHERE peer = ? AND ts > ? "
                                 "ORDER BY ts", (peer, now - DAY_S)).fetchall()
                used = sum(r[0] for r in rows)
                if used + n > per_day:
                    c.execute("ROLLBACK")
                    raise PsiBudgetError(
                        f"PSI query budget: {peer} looked up {used} IDs in the last 24 h; "
                        f"this job's {n} would exceed [policy] psi_max_queries_per_day = "
                        f"{per_day} in {node}'s node.toml ({max(per_day - used, 0)} left; "
                        f"{_frees(rows, used + n - per_day, n, per_day)}); nothing was "
                        "computed for it")
                c.execute("INSERT INTO queries (peer, job_id, key_id, n, ts) "
                          "VALUES (?, ?, ?, ?, ?)", (peer, job_id, key_id, n, now))
                c.execute("COMMIT")
            except sqlite3.Error:
                c.execute("ROLLBACK")
                raise
        return {"charged": n, "used_24h": used + n, "left_24h": per_day - used - n,
                "max_per_day": per_day, "max_per_job": per_job, "key_id": key_id}

    def used(self, peer: str) -> int:
        """Queries of ``peer`` in the rolling 24 h window ending now."""
        with self._conn() as c:
            (v,) = c.execute("SELECT COALESCE(SUM(n), 0) FROM queries WHERE peer = ? AND "
                             "ts > ?", (peer, self.clock() - DAY_S)).fetchone()
        return int(v)

    def served(self, peer: str, kid: str) -> int:
        """Queries of ``peer`` answered under OPRF key ``kid`` (unbalanced mode)."""
        with self._conn() as c:
            (v,) = c.execute("SELECT COALESCE(SUM(n), 0) FROM queries WHERE peer = ? AND "
                             "key_id = ?", (peer, kid)).fetchone()
        return int(v)

    def record_rotation(self, peer: str, rot, reason: str) -> None:
        with self._conn() as c:
            c.execute("INSERT INTO rotations (peer, old_key_id, new_key_id, reason, n_ids, "
                      "seconds, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (peer, rot.old_key_id, rot.new_key_id, reason, rot.n_ids, rot.seconds,
                       self.clock()))

    def rotations(self, peer: str, limit: int = 5) -> list[dict]:
        with self._conn() as c:
            rows = c.execute("SELECT old_key_id, new_key_id, reason, n_ids, seconds, ts "
                             "FROM rotations WHERE peer = ? ORDER BY id DESC LIMIT ?",
                             (peer, limit)).fetchall()
        keys = ("old_key_id", "new_key_id", "reason", "n_ids", "seconds", "ts")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _frees(rows: list, excess: int, n: int, per_day: int) -> str:
    """When enough of the window expires for ``n`` more queries."""
    if n > per_day:
        return "the set alone is larger than the daily budget"
    freed = 0
    for k, ts in rows:
        freed += k
        if freed >= excess:
            at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts + DAY_S))
            return f"enough frees up at {at}"
    return "the window is full"


class BudgetGuard:
    """The platform job's budget hook (:data:`psi.protocol.Budget`)."""

    def __init__(self, cfg: NodeConfig, job_id: str, ledger: PsiLedger | None = None):
        self.cfg, self.job_id = cfg, job_id
        self.ledger = ledger or PsiLedger(ledger_path(cfg))

    def __call__(self, peer: str, n: int, kid: str) -> dict:
        pol = self.cfg.policy
        return self.ledger.charge(peer=peer, job_id=self.job_id, n=int(n), key_id=kid,
                                  per_job=pol.psi_max_queries_per_job,
                                  per_day=pol.psi_max_queries_per_day, node=self.cfg.name)


def job_psi_budget(spec: JobSpec, cfg: NodeConfig, job_id: str,
                   log: Callable[[str, dict], None] | None = None) -> BudgetGuard | None:
    """What a job process on this node needs for its PSI: on the platform, the budget
    hook, after rotating the OPRF key if the policy says it is due (unbalanced mode)."""
    if cfg.party != "platform":
        return None
    ledger = PsiLedger(ledger_path(cfg))
    if spec.psi.get("mode") == "unbalanced":
        rot = rotate_if_due(cfg, ledger)
        if rot is not None and log is not None:
            log("psi.key_rotated", rot)
    return BudgetGuard(cfg, job_id, ledger)


def _dirs(cfg: NodeConfig) -> tuple[str, str]:
    from federation.runner import psi_dirs
    return psi_dirs(cfg)


def rotation_due(cfg: NodeConfig, ledger: PsiLedger) -> tuple[str, str] | None:
    """(current key id, why it is due) if ``psi_key_rotation`` says the key must go."""
    days, queries = cfg.policy.key_rotation
    keys, peer = KeyStore(_dirs(cfg)[0]), cfg.peer.name
    with keys.using(peer):
        created = keys.created(peer)
        if created is None:
            return None
        kid = key_id(keys.oprf_key(peer, create=False))
    age = (ledger.clock() - created) / DAY_S
    if days is not None and age >= days:
        return kid, f"the key is {age:.1f} days old (psi_key_rotation = days:{days:g})"
    served = ledger.served(peer, kid)
    if queries is not None and served >= queries:
        return kid, (f"{served} queries served under the key (psi_key_rotation = "
                     f"queries:{queries})")
    return None


def rotate_if_due(cfg: NodeConfig, ledger: PsiLedger) -> dict | None:
    due = rotation_due(cfg, ledger)
    return rotate(cfg, due[1], ledger, if_key_id=due[0]) if due else None


def rotate(cfg: NodeConfig, reason: str, ledger: PsiLedger | None = None,
           if_key_id: str | None = None) -> dict | None:
    """Rotate the peer's OPRF key now and re-encrypt its caches (None if ``if_key_id``
    is given and another process rotated that key meanwhile)."""
    if cfg.party != "platform":
        raise ValueError(f"{cfg.name} is the bank's node: only the platform holds OPRF keys")
    ledger = ledger or PsiLedger(ledger_path(cfg))
    key_dir, cache_dir = _dirs(cfg)
    rot = KeyStore(key_dir).rotate(cfg.peer.name, cache_dir, workers=cfg.workers,
                                   if_key_id=if_key_id)
    if rot is None:
        return None
    ledger.record_rotation(cfg.peer.name, rot, reason)
    return {**rot.to_dict(), "reason": reason}


def status(cfg: NodeConfig) -> dict:
    """The peer's budget use, the current key and when it rotates next."""
    ledger = PsiLedger(ledger_path(cfg))
    pol, peer = cfg.policy, cfg.peer.name
    keys = KeyStore(_dirs(cfg)[0])
    out = {"peer": peer, "used_24h": ledger.used(peer),
           "max_per_day": pol.psi_max_queries_per_day,
           "max_per_job": pol.psi_max_queries_per_job,
           "key_rotation": pol.psi_key_rotation, "key_id": "", "rotations":
           ledger.rotations(peer)}
    with keys.using(peer):
        created = keys.created(peer)
        kid = key_id(keys.oprf_key(peer, create=False)) if created is not None else ""
    if kid:
        out.update(key_id=kid, key_created=created,
                   key_age_days=round((ledger.clock() - created) / DAY_S, 3),
                   served_under_key=ledger.served(peer, kid))
        due = rotation_due(cfg, ledger)
        out["rotation_due"] = due[1] if due else ""
    return out
