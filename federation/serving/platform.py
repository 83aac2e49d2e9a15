"""The platform's side of online scoring: serving sessions, their feature stores, its
serving policy (``[serving]``) and the ledger of what it learns.

``serve.open`` (from the bank, over the mutual-TLS channel) sets up a session for one
model: the model must be listed in ``serving.models``, both parts' digests must match
(the two halves were trained together), and the algorithm's answerer must accept the
bank's setup. The platform then loads the model's dataset (the training job's
``peer_dataset``, the model's columns, as a scoring job loads it) and keys its rows by
the pseudonyms of their IDs under the session's key. ``serve.lookup`` answers one
micro-batch of pseudonyms: per row whether it holds the ID and the algorithm's answer
(default directions / 0 for IDs it does not hold), within ``serving.rate_per_s`` (a
token bucket holding one second's worth; a lookup needs one token and takes one per ID,
going into debt for a large batch) and ``serving.daily_budget`` (per UTC day, kept in
``data_dir/serving/budget.json``) IDs. Every lookup is appended to
``data_dir/serving/ledger.jsonl`` (time, model, session, the pseudonyms, how many were
held): exactly what the platform learns. :meth:`ServingHost.sessions` lists the open
sessions for ``fedjoint node serving`` (per peer and model: lookups, IDs, held,
opened, last lookup, the day's budget left).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from federation.serving import protocol as P
from federation.serving.protocol import Refused


@dataclass(eq=False)
class Session:
    sid: str
    model_id: str
    answerer: object
    index: dict            # pseudonym -> row of X
    X: np.ndarray          # the model's platform features, one row per held ID
    opened: float = field(default_factory=time.time)
    lookups: int = 0
    ids: int = 0
    held: int = 0
    last: float | None = None


class ServingHost:
    """Answers ``serve.open`` / ``serve.lookup`` / ``serve.close`` on the platform."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = Path(ctx.data_dir) / "serving"
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = time.monotonic
        self._tokens, self._tokens_at = None, self._clock()
        self._day, self._used, self._saved_at = self._load_budget()
        self._ledger = None

    def requests(self) -> dict:
        from federation.serving.export import reveal_answer
        return {P.K_OPEN: self._answering(self.open), P.K_LOOKUP: self._answering(self.lookup),
                P.K_CLOSE: self._answering(self.close),
                P.K_REVEAL: self._answering(lambda body: reveal_answer(self.ctx, body))}

    def _answering(self, fn):
        def handler(body: dict) -> dict:
            try:
                if self.ctx.cfg.party != "platform":
                    raise Refused("policy", f"{self.ctx.cfg.name} is a bank node; it "
                                  "answers no serving lookups")
                return {"ok": True, **fn(body)}
            except Refused as exc:
                if exc.code not in ("rate", "budget"):
                    self.ctx.log("serving.refused", {"code": exc.code, "reason": str(exc)},
                                 level="warning")
                return {"ok": False, "code": exc.code, "error": str(exc)}
        return handler

    # ------------------------------------------------------------------ sessions
    def open(self, body: dict) -> dict:
        from federation.runner import model_path, unbound_digest
        from parties import registry
        from parties.common.artifact import ModelPart
        from parties.common.serving import ServingInputError
        cfg = self.ctx.cfg
        model_id = body.get("model")
        if not isinstance(model_id, str) or model_id not in cfg.serving.models:
            raise Refused("policy", f"model {str(model_id)[:80]!r} may not be served: it is "
                          f"not in [serving] models of {cfg.name}")
        path = model_path(cfg, model_id)
        try:
            part = ModelPart.load(path)
            serving = registry.get(part.algorithm).serving
        except (ValueError, registry.RegistryError) as exc:
            raise Refused("model", f"no servable model {model_id!r} on {cfg.name} "
                          f"({str(exc)[:200]})") from None
        if serving is None:
            raise Refused("model", f"{part.algorithm} models cannot be served")
        if body.get("platform_digest") != unbound_digest(part) or \
                body.get("bank_digest") != part.peer_part_digest:
            raise Refused("model", f"the bank's part of model {model_id!r} and the part on "
                          f"{cfg.name} were not trained together (digest mismatch)")
        key = body.get("key")
        if not isinstance(key, str) or not P.KEY_RE.match(key):
            raise Refused("request", "serve.open: key: expected 64 hex digits")
        try:
            answerer = serving[1].answerer(part, body.get("setup") or {})
        except ServingInputError as exc:
            raise Refused("request", f"serve.open: {exc}") from None
        index, X = self._store(model_id, part, bytes.fromhex(key))
        s = Session(secrets.token_hex(16), model_id, answerer, index, X)
        with self._lock:
            self._sessions[s.sid] = s
            while len(self._sessions) > cfg.limits.serve_max_sessions:
                self._sessions.popitem(last=False)
        self.ctx.log("serving.opened", {"model": model_id, "session": s.sid[:8],
                                        "rows": len(index)})
        return {"session": s.sid, "dtype": answerer.answer_dtype,
                "width": answerer.answer_width}

    def _store(self, model_id: str, part, key: bytes) -> tuple[dict, np.ndarray]:
        """The model's platform rows keyed by pseudonym (as a scoring job loads them)."""
        from federation.config import ConfigError, parse_psi_params
        from federation.data import DataError, load_dataset
        from federation.jobstore import JobNotFound
        from psi.ids import normalise
        cfg = self.ctx.cfg
        try:
            # a pipeline stage's model <job>.<stage> reads its job's record
            spec = self.ctx.store.get(self.ctx.store.model(model_id)["job_id"]).spec
            ds = replace(cfg.dataset(spec["peer_dataset"]), columns=list(part.feature_names))
            id_type = parse_psi_params(spec.get("psi") or {}, "training job [psi]").id_type
            data = load_dataset(ds, need_label=False, categories=part.categories())
        except (JobNotFound, KeyError, ConfigError, DataError) as exc:
            raise Refused("model", f"the data of model {model_id!r} is not available on "
                          f"{cfg.name} ({str(exc)[:200]})") from None
        index = {P.pseudonym(key, normalise(str(i), id_type)): r
                 for r, i in enumerate(data.ids)}
        return index, np.asarray(data.X, dtype=np.float64)

    def close(self, body: dict) -> dict:
        with self._lock:
            s = self._sessions.pop(str(body.get("session", "")), None)
        if s is not None:
            self.ctx.log("serving.closed", {"model": s.model_id, "session": s.sid[:8],
                                            "lookups": s.lookups, "ids": s.ids,
                                            "held": s.held})
        self._save_budget(force=True)
        return {}

    # ------------------------------------------------------------------ lookups
    def lookup(self, body: dict) -> dict:
        cfg = self.ctx.cfg
        with self._lock:
            s = self._sessions.get(str(body.get("session", "")))
        if s is None:
            raise Refused("session", f"no serving session {str(body.get('session'))[:40]!r} "
                          f"on {cfg.name} (it restarted or dropped it): open a new one")
        if s.model_id not in cfg.serving.models:
            raise Refused("policy", f"model {s.model_id!r} is no longer in [serving] models "
                          f"of {cfg.name}")
        ids = body.get("ids")
        lim = cfg.limits.serve_max_batch_rows
        if not isinstance(ids, list) or not 0 < len(ids) <= lim:
            raise Refused("request", f"serve.lookup: ids: expected 1..{lim} pseudonyms "
                          f"(limits.serve_max_batch_rows = {lim})")
        if not all(isinstance(p, str) and P.PSEUDONYM_RE.match(p) for p in ids):
            raise Refused("request", "serve.lookup: ids: expected 32-hex-digit pseudonyms")
        left = self._spend(len(ids))
        rows = np.array([s.index.get(p, -1) for p in ids], dtype=np.int64)
        found = rows >= 0
        X = s.X[np.where(found, rows, 0)] if len(s.X) else \
            np.full((len(ids), s.X.shape[1]), np.nan)
        answers, ok = s.answerer.answer(X, found)
        held = found & ok
        with self._lock:
            s.lookups += 1
            s.ids += len(ids)
            s.held += int(held.sum())
            s.last = time.time()
        self._record({"t": round(time.time(), 3), "model": s.model_id, "session": s.sid[:8],
                      "n": len(ids), "held": int(held.sum()), "ids": ids})
        return {"found": P.encode_array(np.packbits(held)), "answers": P.encode_array(answers),
                "unknown_ids": cfg.serving.unknown_ids, "budget_left": left}

    def _spend(self, n: int) -> int:
        """Charge ``n`` IDs to the rate bucket and the day's budget, or refuse; returns
        what is left of the day's budget."""
        pol = self.ctx.cfg.serving
        with self._lock:
            now = self._clock()
            if self._tokens is None:
                self._tokens = pol.rate_per_s
            self._tokens = min(pol.rate_per_s,
                               self._tokens + (now - self._tokens_at) * pol.rate_per_s)
            self._tokens_at = now
            # a lookup needs one token and takes n (the bucket may go into debt), so a
            # batch larger than one second's worth passes and the average rate holds
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / pol.rate_per_s
                raise Refused("rate", f"over {self.ctx.cfg.name}'s serving.rate_per_s = "
                              f"{pol.rate_per_s:g} lookups per second (retry in {wait:.2f} s)")
            day = time.strftime("%Y-%m-%d", time.gmtime())
            if day != self._day:
                self._day, self._used = day, 0
            if self._used + n > pol.daily_budget:
                raise Refused("budget", f"over {self.ctx.cfg.name}'s serving.daily_budget = "
                              f"{pol.daily_budget} lookups for {day} (UTC); "
                              f"{self._used} used")
            self._tokens -= n
            self._used += n
            left = pol.daily_budget - self._used
        self._save_budget()
        return left

    def sessions(self) -> dict:
        """The open sessions and the day's budget (``fedjoint node serving``)."""
        pol, peer = self.ctx.cfg.serving, self.ctx.cfg.peer.name
        with self._lock:
            day = time.strftime("%Y-%m-%d", time.gmtime())
            used = self._used if day == self._day else 0
            rows = [{"peer": peer, "model": s.model_id, "session": s.sid[:8],
                     "opened": _iso(s.opened), "last_lookup": _iso(s.last),
                     "lookups": s.lookups, "ids": s.ids, "held": s.held,
                     "rows": len(s.index)} for s in self._sessions.values()]
        return {"party": "platform", "sessions": rows,
                "budget": {"peer": peer, "day": day, "daily_budget": pol.daily_budget,
                           "used": used, "left": max(pol.daily_budget - used, 0),
                           "rate_per_s": pol.rate_per_s}}

    # ------------------------------------------------------------------ files
    def _load_budget(self) -> tuple[str, int, float]:
        try:
            d = json.loads((self.dir / "budget.json").read_text())
            return str(d["day"]), int(d["used"]), 0.0
        except (OSError, ValueError, KeyError, TypeError):
            return time.strftime("%Y-%m-%d", time.gmtime()), 0, 0.0

    def _save_budget(self, force: bool = False) -> None:
        """At most once a second (and at close/stop): a crash forgets <= 1 s of use."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._saved_at < 1.0:
                return
            self._saved_at = now
            data = json.dumps({"day": self._day, "used": self._used})
        self.dir.mkdir(mode=0o700, exist_ok=True)
        tmp = self.dir / f"budget.json.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(data)
        os.replace(tmp, self.dir / "budget.json")

    def _record(self, rec: dict) -> None:
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            if self._ledger is None:
                self.dir.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(self.dir / "ledger.jsonl", os.O_WRONLY | os.O_APPEND |
                             os.O_CREAT, 0o600)
                self._ledger = os.fdopen(fd, "a", buffering=1)
            self._ledger.write(line)

    def stop(self) -> None:
        self._save_budget(force=True)
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            self._sessions.clear()


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
