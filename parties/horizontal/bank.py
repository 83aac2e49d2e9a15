"""A bank's side of a horizontal job: the Flower ClientApp's message handlers.

The runtime (``federation.horizontal``) builds the ClientApp with
:func:`make_client_app`, passing ``open_bank(context, job)``: it applies the bank's
node.toml policy (join or refuse, which dataset, which columns) and returns a
:class:`BankSide` (the rows, the transcript ledger, the report sink). Everything else
here is the algorithm: answer the join, compute the phase vectors
(:mod:`parties.horizontal.wire`), run this bank's SecAgg client.

Flower runs each message in a fresh ``flwr-clientapp`` process, so nothing survives
between messages but ``context.state`` (kept on the bank's SuperNode, never sent).
The SecAgg client of a round is therefore rebuilt at each stage from a 32-byte seed
drawn from the OS CSPRNG at its first stage and stored there, replaying the earlier
stages on the stored server messages (the client's randomness is a DRBG of that seed,
so the replay re-derives the same keys, shares and masks; the update is computed
once, at the masked-input stage, and stored for the unmask replay).

What the bank sends: its refusal reason or its feature count (join); per sum, its
SecAgg messages (advertise keys, sealed shares, masked vector, unmask shares) — or,
with ``secure_aggregation = false``, its vector in the clear. It learns the global
model after each round and the federation's totals (train/valid/test rows and
positives). Its own test metrics stay at the bank (its report).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from parties.common.metrics import binary_report
from parties.horizontal.model import (
    build_model,
    dp_epsilon,
    get_flat,
    pos_weight_of,
    predict,
    set_flat,
    split_rows,
    train_local,
    train_local_dp,
    weighted_loss,
)
from parties.horizontal.params import HorizontalParams
from parties.horizontal.wire import (
    CLOSE_TYPE,
    ENV_PREFIX,
    JOIN_TYPE,
    PLAIN_TYPE,
    RECORD,
    STAGE_TYPES,
    bytes_vec,
    ledger_payload,
    phase_dim,
    vec_bytes,
)
from secure_agg.rng import Drbg
from secure_agg.secagg import SecAggClient, SecAggError, SecAggParams, decode_message, encode

JOB_STATE, SA_STATE, DP_STATE, SUMS_STATE = "fj_job", "fj_sa", "fj_dp", "fj_sums"


class BankRefused(ValueError):
    """This bank's policy or data refuses the job (the message names the key/column)."""


class NoLedger:
    """The ledger interface: record what crosses (the runtime writes the transcript)."""

    def received(self, kind: str, payload: bytes, env: dict) -> None:
        return None

    def sent(self, kind: str, payload: bytes) -> dict:
        return {}

    def statement(self, model_digest: str) -> dict:
        return {}

    def close(self, own: dict, peer: dict) -> None:
        return None


@dataclass
class BankSide:
    name: str
    X: np.ndarray                 # float64, the job's columns in the job's order
    y: np.ndarray                 # 0/1
    ledger: object = field(default_factory=NoLedger)
    report: object = None         # callable(dict) -> None: the bank's own job report
    signing_key: object = None    # Ed25519 private key (signed SecAgg rounds)
    peer_keys: dict = field(default_factory=dict)   # bank name -> Ed25519 public key

    def __post_init__(self):
        self.X = np.asarray(self.X, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64).ravel()
        if self.X.ndim != 2 or len(self.X) != len(self.y):
            raise BankRefused(f"{self.name}: features {self.X.shape} and labels "
                              f"{self.y.shape} do not match")
        if not np.all(np.isfinite(self.X)):
            raise BankRefused(f"{self.name}: features have missing or non-finite values "
                              "(horizontal jobs need complete numeric columns)")
        if not np.all((self.y == 0) | (self.y == 1)):
            raise BankRefused(f"{self.name}: the label column must be 0/1")


def job_from(cfg) -> dict:
    try:
        job = {"job_id": str(cfg["job_id"]), "algorithm": str(cfg["algorithm"]),
               "columns": json.loads(cfg["columns"]), "params": json.loads(cfg["params"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise BankRefused(f"malformed join message ({exc})") from None
    if not (isinstance(job["columns"], list) and job["columns"]
            and all(isinstance(c, str) for c in job["columns"])):
        raise BankRefused("join message: columns must be a non-empty list of names")
    job["params_obj"] = HorizontalParams.from_wire(job["params"])
    return job


class _Bank:
    """One message's work at the bank."""

    def __init__(self, side: BankSide, job: dict, context: Context):
        self.side, self.job, self.ctx = side, job, context
        self.p: HorizontalParams = job["params_obj"]
        self.rows = split_rows(len(side.y), self.p)
        self.model = build_model(job["algorithm"], side.X.shape[1], self.p, self.p.seed)
        self.n_params = len(get_flat(self.model))

    def part(self, name: str):
        idx = self.rows[name]
        return self.side.X[idx], self.side.y[idx]

    def vector(self, phase: str, cfg) -> np.ndarray:
        if phase == "counts":
            _, ytr = self.part("train")
            return np.array([len(ytr), ytr.sum(), len(self.rows["valid"]),
                             len(self.rows["test"])], dtype=np.float64)
        theta = bytes_vec(cfg.get("theta"), self.n_params, "global model")
        tot = bytes_vec(cfg.get("totals"), 4, "federation totals")
        set_flat(self.model, theta)
        pw = pos_weight_of(self.p, tot[1], tot[0])
        if phase == "fit":
            Xtr, ytr = self.part("train")
            Xva, yva = self.part("valid")
            w, v = len(ytr) / tot[0], len(yva) / max(tot[2], 1)
            vloss = weighted_loss(self.model, Xva, yva, pw)
            seed = int.from_bytes(hashlib.sha256(
                f"{self.p.seed}/{cfg.get('round')}/{self.side.name}".encode()).digest()[:4], "big")
            if self.p.dp_noise_multiplier > 0:
                tloss, hist = train_local_dp(self.model, Xtr, ytr, self.p, pw, seed)
                self._dp_history(hist)
            else:
                tloss = train_local(self.model, Xtr, ytr, self.p, pw, seed=seed)
            return np.concatenate([w * (get_flat(self.model) - theta), [w, v, v * vloss, w * tloss]])
        if phase == "test":
            Xte, yte = self.part("test")
            scores = predict(self.model, Xte)
            rep = binary_report(yte, scores)
            if self.p.dp_noise_multiplier > 0:
                rep["dp_epsilon"] = dp_epsilon(self._dp_history([]), self.p.dp_delta)
                rep["dp_delta"] = self.p.dp_delta
            if self.side.report is not None:
                self.side.report({"job_id": self.job["job_id"], "bank": self.side.name,
                                  "algorithm": self.job["algorithm"], "metrics": rep,
                                  "scores": {"y": yte.tolist(), "p": scores.tolist()},
                                  "history": json.loads(cfg.get("history", "[]")),
                                  "theta_sha256": hashlib.sha256(theta.tobytes()).hexdigest()})
            t = len(yte) / max(tot[3], 1)
            return np.array([t * rep["log_loss"], t * rep["accuracy"], t])
        raise BankRefused(f"unknown phase {phase!r}")

    def _dp_history(self, add: list) -> list:
        """This bank's DP-SGD history over the job (kept in its context.state)."""
        rec = self.ctx.state.config_records.get(DP_STATE)
        hist = json.loads(rec["history"]) if rec is not None else []
        if add:
            hist += [list(h) for h in add]
            self.ctx.state[DP_STATE] = ConfigRecord({"history": json.dumps(hist)})
        return hist

    def checked(self, phase: str, cfg, clip: float | None) -> np.ndarray:
        vec = self.vector(phase, cfg)
        if vec.shape != (phase_dim(phase, self.n_params),):
            raise BankRefused(f"{phase} vector has shape {vec.shape}")
        if clip is not None and np.abs(vec).max() > clip:
            i = int(np.abs(vec).argmax())
            raise BankRefused(f"{self.side.name}: {phase} coordinate {i} is {vec[i]:.6g}, "
                              f"beyond the job's clip {clip:g} (raise params.clip): "
                              "refused rather than clipped into a wrong sum")
        return vec


def _sa_params(st) -> SecAggParams:
    return SecAggParams(num_clients=int(st["n"]), threshold=int(st["t"]), dim=int(st["dim"]),
                        clip=float(st["clip"]), bits=int(st["bits"]),
                        mod_bits=int(st["mod_bits"]), session=bytes(st["session"]),
                        signed=bool(st["signed"]))


def _signing(side: BankSide, st) -> dict:
    """A signed round's keys: this bank's, and each client's by the name the aggregator
    gives it, from the keys this bank was configured with (never from the aggregator)."""
    if not st["signed"]:
        return {}
    try:
        names = json.loads(st["names"])
    except (TypeError, ValueError):
        raise SecAggError("signed round without the clients' names") from None
    if not isinstance(names, list) or len(names) != int(st["n"]) \
            or names[int(st["cid"])] != side.name:
        raise SecAggError(f"{side.name}: the aggregator's client names {names!r} do not "
                          f"name this bank as client {st['cid']}")
    if side.signing_key is None:
        raise BankRefused(f"{side.name}: a signed round needs this bank's signing key")
    unknown = [n for n in names if n != side.name and n not in side.peer_keys]
    if unknown:
        raise BankRefused(f"{side.name}: signed round with bank(s) {unknown} whose signing "
                          "keys this bank's [horizontal.peers] does not list")
    return {"signing_key": side.signing_key,
            "peer_keys": {i: side.peer_keys[n] for i, n in enumerate(names) if n != side.name}}


def _secagg(bank: _Bank, stage: str, cfg, state) -> bytes:
    """This bank's SecAgg client at ``stage``, rebuilt from the state (module doc)."""
    if stage == "advertise":
        st = {k: cfg[k] for k in ("phase", "cid", "n", "t", "dim", "clip", "bits",
                                  "mod_bits", "session", "signed", "names")}
        st["seed"] = os.urandom(32)
        state[SA_STATE] = ConfigRecord(st)
    st = state.config_records.get(SA_STATE)
    if st is None:
        raise SecAggError(f"{stage}: no SecAgg round in progress at this bank")
    params = _sa_params(st)
    client = SecAggClient(int(st["cid"]), params, Drbg(bytes(st["seed"]), "fedjoint/bank"),
                          **_signing(bank.side, st))
    out = client.advertise()
    if stage == "advertise":
        return encode(out)
    keys = decode_message(cfg["msg"] if stage == "share_keys" else st["keys"])
    out = client.share_keys(keys)
    if stage == "share_keys":
        st["keys"] = bytes(cfg["msg"])
        return encode(out)
    if stage == "masked_input":
        _once_per_sum(state, str(st["phase"]), cfg)
        st["bundle"] = bytes(cfg["msg"])
        vec = bank.checked(str(st["phase"]), cfg, params.clip)
        st["update"] = vec_bytes(vec)
    vec = bytes_vec(st["update"], params.dim, "stored update")
    out = client.masked_input(decode_message(st["bundle"]), vec)
    if stage == "masked_input":
        return encode(out)
    # the client is rebuilt for every message: the first unmask request it answered is
    # kept, and a different second one refused (two could reveal both shares of a bank)
    answered = decode_message(st["unmask"]) if "unmask" in st else None
    reply = encode(client.unmask(decode_message(cfg["msg"]), answered=answered))
    st["unmask"] = bytes(cfg["msg"])
    return reply


def _once_per_sum(state, phase: str, cfg) -> None:
    """Mask this bank's vector for each (phase, round) of the job once: two sums of the
    same vectors over different sets of banks would give the aggregator their
    difference, one bank's update (the aggregator chooses sessions, so the bank keys on
    what it computes)."""
    key = f"{phase}/{cfg.get('round', '')}"
    done = state.config_records.get(SUMS_STATE)
    if done is None:
        done = state[SUMS_STATE] = ConfigRecord({"done": [""]})
    if key in done["done"]:
        raise SecAggError(f"a second secure sum of this bank's {key} vector; refused (two "
                          "sums over different banks would reveal one bank's update)")
    done["done"] = [*done["done"], key]


def make_client_app(open_bank) -> ClientApp:
    """The bank's ClientApp; ``open_bank(context, job) -> BankSide`` (raises
    BankRefused with the policy's reason)."""
    app = ClientApp()

    def handler(mtype: str, work):
        def handle(msg: Message, context: Context) -> Message:
            cfg = msg.content.config_records[RECORD]
            if mtype == JOIN_TYPE:
                job = job_from(cfg)
                context.state[JOB_STATE] = ConfigRecord(
                    {k: cfg[k] for k in ("job_id", "algorithm", "columns", "params")})
            else:
                if JOB_STATE not in context.state.config_records:
                    raise BankRefused(f"{mtype} before this bank joined a job")
                job = job_from(context.state.config_records[JOB_STATE])
            side = open_bank(context, job)
            side.ledger.received(mtype, ledger_payload(mtype, cfg),
                                 {k: cfg[k] for k in cfg.keys() if k.startswith(ENV_PREFIX)})
            out = work(_Bank(side, job, context), cfg, context.state)
            closing = out.pop("_closing", None)
            out.update(side.ledger.sent(mtype + ".reply", ledger_payload(mtype, ConfigRecord(out))))
            if closing is not None:
                side.ledger.close(*closing)
            return Message(RecordDict({RECORD: ConfigRecord(out)}), reply_to=msg)
        return handle

    def join(bank: _Bank, cfg, state) -> dict:
        return {"n_features": int(bank.side.X.shape[1]), "n_params": bank.n_params}

    def plain(bank: _Bank, cfg, state) -> dict:
        return {"vec": vec_bytes(bank.checked(str(cfg["phase"]), cfg, None))}

    def close(bank: _Bank, cfg, state) -> dict:
        try:
            peer = json.loads(cfg.get("statement", "{}"))
        except ValueError:
            raise BankRefused("close: the aggregator's statement is not JSON") from None
        own = bank.side.ledger.statement(str(cfg.get("model_sha256", "")))
        return {"statement": json.dumps(own, sort_keys=True), "_closing": (own, peer)}

    app.query("join")(handler(JOIN_TYPE, join))
    app.train("plain")(handler(PLAIN_TYPE, plain))
    app.query("close")(handler(CLOSE_TYPE, close))
    for stage, mtype in STAGE_TYPES.items():
        def work(bank, cfg, state, stage=stage):
            return {"msg": _secagg(bank, stage, cfg, state)}
        app.train(mtype.split(".", 1)[1])(handler(mtype, work))
    return app
