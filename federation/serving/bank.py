"""A served model on the bank's node: its part, its serving session with the platform,
lookups and scoring (no HTTP here: :mod:`.app` calls :meth:`ServedModel.score_rows`).

``ServedModel`` loads the bank's model part and the training job's ID type from the
node's data directory, opens a session on the platform (``serve.open``: model id, both
parts' digests, a fresh 256-bit pseudonym key, the algorithm's setup) and scores a
micro-batch with one ``serve.lookup`` round trip. A session the platform no longer
knows (it restarted) is opened again, with a new key, and the lookup retried once. An
unreachable platform, a lookup not answered within ``limits.serve_lookup_timeout_s``
or a refusal raise :class:`ServingError` with the HTTP status the API answers (503,
429 for rate and budget, 403 for policy). Each answered lookup is appended to
``data_dir/serving/<model>.ledger.jsonl`` (time, rows, how many the platform held, the
values it disclosed): what the bank learned. While a session is open the serving process
keeps ``data_dir/serving/sessions/<pid>-<model>.json`` (0600; rewritten at most once a
second, removed at close) with its counters and the platform's last reported budget
left: :func:`bank_sessions` reads them for ``fedjoint node serving``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from federation.serving import protocol as P

_STATUS = {"rate": 429, "budget": 429, "policy": 403, "model": 409, "request": 502,
           "session": 503}


#: serve.open waits this long: the platform loads the model's dataset and keys it by
#: pseudonym (43 s for a million rows of 10 features on the loaded development VM)
OPEN_TIMEOUT_S = 300.0


class ServingError(Exception):
    """A request that cannot be scored now: ``status`` (HTTP) and a message."""

    def __init__(self, status: int, message: str, field: str = ""):
        super().__init__(message)
        self.status, self.field = status, field


class ServedModel:
    def __init__(self, cfg, model_id: str, channel=None):
        from federation.config import parse_psi_params
        from federation.jobstore import JobStore
        from federation.node.peer import make_channel
        from federation.runner import model_path, unbound_digest
        from parties import registry
        from parties.common.artifact import ModelPart
        self.cfg = cfg
        store = JobStore(Path(cfg.data_dir) / "jobs.db")
        try:
            rec = store.model(model_id)
        except KeyError as exc:
            raise ServingError(404, str(exc.args[0]), "model") from None
        self.model_id = rec["model_id"]
        part = ModelPart.load(model_path(cfg, self.model_id))
        serving = registry.get(part.algorithm).serving
        if serving is None:
            raise ServingError(409, f"{part.algorithm} models cannot be served", "model")
        self.algorithm = part.algorithm
        self.scorer = serving[0].scorer(part)
        self.features = list(self.scorer.features)
        self._feature_index = {n: j for j, n in enumerate(self.features)}
        #: categorical bank features (name -> the part's levels): a request gives a level
        self.categories = dict(getattr(self.scorer, "categories", None) or {})
        self._codes: dict = {}
        #: values the platform discloses per scored row (split decisions / partial scores)
        self.values_per_row = len(self.scorer.keys) if hasattr(self.scorer, "keys") else \
            self.scorer.answer_width
        spec = store.get(rec["job_id"]).spec   # a pipeline stage's model: its job
        self.id_type = parse_psi_params(spec.get("psi") or {}, "training job [psi]").id_type
        self._open_body = {"model": self.model_id, "bank_digest": unbound_digest(part),
                           "platform_digest": part.peer_part_digest,
                           "setup": self.scorer.setup}
        self.channel = channel or make_channel(cfg)
        self._lock = threading.Lock()
        self._session: tuple[str, bytes] | None = None
        self.counters = {"requests": 0, "rows": 0, "lookups": 0, "held": 0, "no_data": 0,
                         "refused": 0, "values_received": 0, "reopened": 0, "errors": 0,
                         "unseen_levels": 0}
        self._ledger = None
        self._opened: float | None = None
        self._budget_left: int | None = None
        self._status_at = 0.0
        self._status_path = Path(cfg.data_dir) / "serving" / "sessions" / \
            f"{os.getpid()}-{self.model_id}.json"

    # ------------------------------------------------------------------ session
    def open(self) -> tuple[str, bytes]:
        """(session id, key) of a new session on the platform."""
        from federation.channel import ControlError, PeerUnreachable
        key = secrets.token_bytes(32)
        try:
            rep = self.channel.request(P.K_OPEN, {**self._open_body, "key": key.hex()},
                                       timeout=OPEN_TIMEOUT_S)
        except (PeerUnreachable, ControlError) as exc:
            raise ServingError(503, f"the platform cannot open serving: {exc}") from None
        self._check_reply(rep)
        if rep.get("dtype") != self.scorer.answer_dtype or \
                rep.get("width") != self.scorer.answer_width:
            raise ServingError(502, "the platform's answers would not fit this model part")
        sid = str(rep.get("session", ""))
        if not P.SESSION_RE.match(sid):
            raise ServingError(502, "the platform answered serve.open without a session")
        with self._lock:
            self._session = (sid, key)
            self._opened = time.time()
        self._write_status(force=True)
        return sid, key

    def close(self) -> None:
        with self._lock:
            sess, self._session = self._session, None
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
        self._status_path.unlink(missing_ok=True)
        if sess is not None:
            try:
                self.channel.request(P.K_CLOSE, {"session": sess[0]}, timeout=2.0)
            except Exception:  # noqa: BLE001 - the platform may be gone; it drops it anyway
                pass

    def _check_reply(self, rep: dict) -> None:
        if not rep.get("ok"):
            code = str(rep.get("code", ""))
            raise ServingError(_STATUS.get(code, 502),
                               f"refused by the platform: {str(rep.get('error'))[:300]}",
                               "id" if code == "request" else "")

    # ------------------------------------------------------------------ scoring
    def features_row(self, features: dict) -> np.ndarray:
        """One applicant's bank features in model order (None -> NaN); ServingError (422)
        naming the feature that is missing, unexpected or not a number."""
        missing = [n for n in self.features if n not in features]
        if missing:
            raise ServingError(422, f"missing feature(s) {', '.join(missing[:5])}: the model "
                               f"needs {len(self.features)} bank features", f"features.{missing[0]}")
        extra = [n for n in features if n not in self._feature_index]
        if extra:
            raise ServingError(422, f"unexpected feature(s) {', '.join(map(str, extra[:5]))}; "
                               f"the model's bank features are {', '.join(self.features)}",
                               f"features.{extra[0]}")
        row = []
        for n in self.features:
            v = features[n]
            if n in self.categories:
                row.append(self.level_code(n, v))
            elif v is None:
                row.append(math.nan)
            elif type(v) in (int, float) and math.isfinite(_float(v)):
                row.append(float(v))
            else:
                what = "a finite number" if type(v) in (int, float) else \
                    f"a number or null, got {type(v).__name__}"
                raise ServingError(422, f"feature {n}: expected {what}", f"features.{n}")
        return np.array(row)

    def level_code(self, name: str, v) -> float:
        """A categorical feature's value (a level as text or integer, or null) -> its
        level index, mapped as the loader maps a CSV cell ``str(v)`` with the part's
        levels (:func:`federation.data.category_codes`): missing and unseen -> NaN
        (the default direction; unseen ones counted)."""
        if v is None:
            return math.nan
        if type(v) not in (str, int, float) or len(str(v)) > 256:
            raise ServingError(422, f"feature {name}: expected a level (a string or an "
                               "integer) or null", f"features.{name}")
        key = (name, str(v))
        code = self._codes.get(key)
        if code is None:
            import pandas as pd

            from federation.data import category_codes
            codes, _, unseen = category_codes(pd.Series([str(v)], dtype=object), name,
                                              Path("request"), self.categories[name], 0)
            code = (float(codes[0]), bool(unseen))
            if len(self._codes) >= 65536:
                self._codes.clear()
            self._codes[key] = code
        if code[1]:
            with self._lock:
                self.counters["unseen_levels"] += 1
        return code[0]

    def check_rows(self, X: np.ndarray) -> None:
        """Raise ServingError (422) if the model cannot take a row of ``X``, naming the
        feature; the exception's ``row`` is the first such row."""
        from parties.common.serving import ServingInputError
        try:
            return self.scorer.check(X)
        except ServingInputError:
            pass
        for i in range(len(X)):       # only on the error path: which row, which feature
            try:
                self.scorer.check(X[i:i + 1])
            except ServingInputError as exc:
                err = ServingError(422, str(exc), "features")
                err.row = i
                raise err from None

    def normalised_id(self, raw) -> str:
        from psi.ids import normalise
        if not isinstance(raw, str) or not raw.strip() or len(raw) > 256:
            raise ServingError(422, "id: expected a non-empty string of at most 256 "
                               "characters", "id")
        return normalise(raw, self.id_type)

    def score_rows(self, ids: list[str], X: np.ndarray) -> list[dict]:
        """Scores of a micro-batch (normalised ids, features in model order): one lookup."""
        found, answers, unknown = self._lookup(ids)
        sc = self.scorer.score(X, answers, found)
        refuse = unknown == "refuse"
        out = []
        for i in range(len(ids)):
            if refuse and not found[i]:
                out.append({"error": "the platform holds no data for this applicant "
                            "(its serving.unknown_ids = \"refuse\")", "status": 404})
                continue
            r = {"platform_data": bool(found[i])}
            if sc.score is not None:
                r["score"] = float(sc.score[i])
            if sc.probability is not None:
                r["probability"] = float(sc.probability[i])
            if sc.probabilities is not None:
                p = sc.probabilities[i]
                r["class"] = sc.classes[int(np.argmax(p))]
                r["probabilities"] = {str(c): float(v)
                                      for c, v in zip(sc.classes, p, strict=True)}
            if sc.extra is not None:
                r.update(sc.extra[i])
            out.append(r)
        with self._lock:
            c = self.counters
            c["rows"] += len(ids)
            c["lookups"] += 1
            c["held"] += int(found.sum())
            c["no_data"] += int((~found).sum()) if not refuse else 0
            c["refused"] += int((~found).sum()) if refuse else 0
            c["values_received"] += self.values_per_row * len(ids)
        self._record(len(ids), int(found.sum()), self.values_per_row * len(ids))
        return out

    def _lookup(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
        from federation.channel import ControlError, PeerUnreachable
        for attempt in (0, 1):
            with self._lock:
                sess = self._session
            if sess is None:
                sess = self.open()
            sid, key = sess
            body = {"session": sid, "ids": [P.pseudonym(key, i) for i in ids]}
            try:
                rep = self.channel.request(P.K_LOOKUP, body,
                                           timeout=self.cfg.limits.serve_lookup_timeout_s)
            except (PeerUnreachable, ControlError) as exc:
                raise ServingError(503, f"the platform did not answer: {str(exc)[:300]}") \
                    from None
            if not rep.get("ok") and rep.get("code") == "session" and attempt == 0:
                with self._lock:
                    self._session = None
                    self.counters["reopened"] += 1
                continue
            self._check_reply(rep)
            if type(rep.get("budget_left")) is int:
                self._budget_left = rep["budget_left"]
            n = len(ids)
            try:
                found = np.unpackbits(P.decode_array(rep.get("found"), "u1", ((n + 7) // 8,),
                                                     "serve.answer found"), count=n
                                      ).astype(bool)
                answers = P.decode_array(rep.get("answers"), self.scorer.answer_dtype,
                                         (n, self.scorer.answer_width), "serve.answer answers")
            except ValueError as exc:
                raise ServingError(502, f"the platform's answer is malformed: {exc}") from None
            return found, answers, str(rep.get("unknown_ids", "no_data"))
        raise ServingError(503, "the platform keeps dropping the serving session")

    def _record(self, n: int, held: int, values: int) -> None:
        line = json.dumps({"t": round(time.time(), 3), "n": n, "held": held,
                           "values": values}, separators=(",", ":")) + "\n"
        with self._lock:
            if self._ledger is None:
                d = Path(self.cfg.data_dir) / "serving"
                d.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(d / f"{self.model_id}.ledger.jsonl",
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._ledger = os.fdopen(fd, "a", buffering=1)
            self._ledger.write(line)
        self._write_status()

    def _write_status(self, force: bool = False) -> None:
        """This session's line of ``fedjoint node serving`` (at most once a second)."""
        now = time.monotonic()
        with self._lock:
            if (not force and now - self._status_at < 1.0) or self._session is None:
                return
            self._status_at = now
            doc = {"pid": os.getpid(), "peer": self.cfg.peer.name, "model": self.model_id,
                   "session": self._session[0][:8], "opened": _iso(self._opened),
                   "updated": _iso(time.time()), "budget_left": self._budget_left,
                   "counters": dict(self.counters)}
        d = self._status_path.parent
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = d / f".{self._status_path.name}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self._status_path)

    def describe(self) -> dict:
        with self._lock:
            counters = dict(self.counters)
            session = self._session is not None
        return {"model": self.model_id, "algorithm": self.algorithm,
                "features": self.features, "session_open": session, "counters": counters}


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:         # a JSON integer beyond float range
        return math.inf


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def bank_sessions(cfg) -> dict:
    """The bank's open serving sessions: the status files of running ``fedjoint serve``
    processes (a file whose process is gone is skipped)."""
    rows = []
    for p in sorted((Path(cfg.data_dir) / "serving" / "sessions").glob("*.json")):
        try:
            doc = json.loads(p.read_text())
            os.kill(int(doc["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        c = doc.get("counters") or {}
        rows.append({"peer": doc.get("peer"), "model": doc.get("model"),
                     "session": doc.get("session"), "opened": doc.get("opened"),
                     "updated": doc.get("updated"), "pid": doc.get("pid"),
                     "lookups": c.get("lookups", 0), "ids": c.get("rows", 0),
                     "held": c.get("held", 0), "budget_left": doc.get("budget_left")})
    return {"party": "bank", "sessions": rows}
