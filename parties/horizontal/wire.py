"""What a horizontal job's Flower messages carry, and their checks.

Every message's content is one ``ConfigRecord`` named ``"fj"`` of scalars and bytes:
no pickled objects, no Flower ``ArrayRecord`` (whose arrays could carry any dtype).
A float vector is little-endian float64 bytes whose length is checked against the
shape the receiver expects; SecAgg messages are :mod:`secure_agg.secagg_wire` bytes.

=====================  ====================  =========================================
message type           aggregator -> bank    bank -> aggregator
=====================  ====================  =========================================
``query.join``         job id, algorithm,    ``n_features`` (or an error naming the
                       columns, params       policy key / column that refused)
``train.plain``        phase, inputs         the bank's vector (float64), in the clear
``train.sa_advertise`` phase, SecAgg params  ``AdvertiseKeys``
``train.sa_share``     ``KeyList``           ``ShareKeys``
``train.sa_masked``    ``ShareBundle``,      ``MaskedInput``
                       phase inputs
``train.sa_unmask``    ``UnmaskRequest``     ``UnmaskShares``
``query.close``        outcome               digest of the bank's transcript statement
=====================  ====================  =========================================

Phases (what the summed vector is, per bank ``k``; ``N`` are the federation totals):
``counts`` = [train rows, train positives, valid rows, test rows]; ``fit`` =
[w_k (theta_k - theta), w_k, v_k, v_k valid_loss(theta), w_k train_loss] with w_k =
n_train_k / N_train, v_k = n_valid_k / N_valid; ``test`` = [t_k loss, t_k accuracy, t_k]
with t_k = n_test_k / N_test. Only the sum of each reaches the aggregator when secure
aggregation is on.
"""

from __future__ import annotations

import json

import numpy as np

RECORD = "fj"
PHASES = ("counts", "fit", "test")
STAGE_TYPES = {"advertise": "train.sa_advertise", "share_keys": "train.sa_share",
               "masked_input": "train.sa_masked", "unmask": "train.sa_unmask"}
PLAIN_TYPE = "train.plain"
JOIN_TYPE = "query.join"
CLOSE_TYPE = "query.close"


class WireError(ValueError):
    """A message does not have the shape its type declares."""


def vec_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f8").tobytes()


def bytes_vec(data, dim: int, what: str) -> np.ndarray:
    """``data`` as a float64 vector of exactly ``dim`` finite values."""
    if not isinstance(data, (bytes, bytearray)):
        raise WireError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) != 8 * dim:
        raise WireError(f"{what}: {len(data)} bytes, expected {8 * dim} "
                        f"({dim} float64 values): an update of the wrong shape")
    v = np.frombuffer(bytes(data), dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise WireError(f"{what}: non-finite values")
    return v


def phase_dim(phase: str, n_params: int) -> int:
    if phase == "counts":
        return 4
    if phase == "fit":
        return n_params + 4
    if phase == "test":
        return 3
    raise WireError(f"unknown phase {phase!r}: expected one of {PHASES}")


def content_bytes(cfg) -> int:
    """Bytes of a message's payload values (what the benchmark counts per bank)."""
    n = 0
    for v in cfg.values():
        n += len(v) if isinstance(v, (bytes, bytearray, str)) else 8
    return n


ENV_PREFIX = "env_"   # envelope fields (seq, signature): not part of the signed payload


def canonical(cfg) -> bytes:
    """Deterministic bytes of a record's payload (the transcript's digest input):
    sorted keys, each value tagged by type and length-prefixed; ``env_*`` fields out."""
    out = []
    for key in sorted(k for k in cfg.keys() if not k.startswith(ENV_PREFIX)):
        v = cfg[key]
        if isinstance(v, bool):
            tag, body = b"?", b"1" if v else b"0"
        elif isinstance(v, int):
            tag, body = b"i", str(v).encode()
        elif isinstance(v, float):
            tag, body = b"f", repr(v).encode()
        elif isinstance(v, str):
            tag, body = b"s", v.encode()
        elif isinstance(v, (bytes, bytearray)):
            tag, body = b"b", bytes(v)
        else:
            raise WireError(f"field {key!r}: unsupported value type {type(v).__name__}")
        k = key.encode()
        out += [len(k).to_bytes(2, "big"), k, tag, len(body).to_bytes(8, "big"), body]
    return b"".join(out)


def ledger_payload(mtype: str, cfg) -> bytes:
    """What the transcript records for a message: :func:`canonical` of its record, but
    for the closing exchange the signed statement itself (fedjoint's ``job.outcome``
    payload: compact sorted JSON)."""
    if mtype.startswith(CLOSE_TYPE):
        try:
            stmt = json.loads(cfg["statement"])
        except (KeyError, TypeError, ValueError):
            raise WireError(f"{mtype}: no JSON statement") from None
        return json.dumps(stmt, sort_keys=True, separators=(",", ":"),
                          allow_nan=False).encode()
    return canonical(cfg)
