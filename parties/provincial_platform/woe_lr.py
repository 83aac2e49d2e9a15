"""WOE logistic regression and its scorecard, platform (passive party, features only).

The protocol and what each party learns are in ``parties/bank/woe_lr.py`` and
docs/scorecard.md (this module mirrors the bank's steps and never imports the bank's
package). The platform reads its part of the ``binning`` input (its fine bins' cut
points and the label the bank knows each feature by) and, if given, the
``selection``'s ``selected`` features; it receives from the bank one value per fine bin
of each selected feature (an affine image of the bin's WOE, the map unknown to it),
encodes its own columns with them (a missing cell takes the missing bin's value), runs
logistic regression's platform role on the encoded columns, and keeps its points per
fine bin (``-factor * w * (v - mean) / scale``) in its model part. It tells the bank
one value: its best achievable total points. At scoring time it sends its partial
score per row, as logistic regression does.
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import lr_common as C
from parties.common import woe_lr as W
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import artifact_params
from parties.common.role import PartyData
from parties.provincial_platform import lr as platform_lr

PARTY = "platform"
MAX_VALUE = 1e6   #: bound on an announced bin value (WOE is within +-20 for any counts)


def train(ctx, data: PartyData, params: W.WoeLRParams, cipher, policy) -> TrainOutcome:
    peer = C.Peer(ctx.link)
    err = shown = None
    try:
        binning, names = _own(data)
    except W.WoeLRError as exc:
        err, shown = str(exc), _shown(exc, policy)
    setup = peer.recv_json(W.K_SETUP)
    if err is None:
        try:
            enc = _encoding(setup, binning, names, params)
        except (W.WoeLRError, ProtocolError) as exc:
            err = shown = str(exc)
    peer.send_json(W.K_READY, {"ok": err is None, "error": shown,
                               "n_features": None if err else len(names)})
    if err is not None:
        raise W.WoeLRError(err, peer_reason=shown)
    cols = [data.feature_names.index(n) for n in names]
    X = enc.transform(W.check_columns(data.X, data.feature_names,
                                      "platform training data")[:, cols])
    Xv = None if data.X_valid is None else enc.transform(W.check_columns(
        data.X_valid, data.feature_names, "platform validation data")[:, cols])
    out = platform_lr.train(ctx, PartyData(X, names, X_valid=Xv), params.lr(), cipher, policy)
    factor, _ = params.scaling()
    pts = W.platform_points(out.model.body["weights"], out.model.body["standardizer"], enc,
                            factor)
    best = float(sum(float(v.max()) for v in pts))
    peer.send_json(W.K_BEST, {"best_points": best})
    tables = binning.body["tables"]
    points = [{"feature": n, "bank_label": tables[n]["bank_label"],
               "bins": [{"bin": b["interval"], "points": float(v)}
                        for b, v in zip(tables[n]["bins"], pts[j], strict=True)]}
              for j, n in enumerate(names)]
    body = {**out.model.body, "encoding": enc.to_dict(), "binning": binning.job_id,
            "points": points, "best_points": best}
    part = ModelPart(W.ALGORITHM, PARTY, ctx.job_id, artifact_params(params), body, names)
    C.exchange_part_digests(peer, part, send_first=False, peer_label="bank")
    return TrainOutcome(part, out.metrics, out.history, out.timings)


def _shown(exc: W.WoeLRError, policy) -> str:
    """What the bank is told: the message without the platform's column names."""
    return str(exc) if policy.reveal_feature_names else W.OWN_DATA.format(party="platform")


def _own(data: PartyData) -> tuple[ModelPart, list[str]]:
    binning = W.binning_input(data.inputs, PARTY)
    tables = binning.body.get("tables") or {}
    keep = W.selected(data.inputs, "selected")
    names = [n for n in data.feature_names if n in tables] if keep is None else list(keep)
    absent = [n for n in names if n not in data.feature_names or n not in tables]
    if absent:
        raise W.WoeLRError(f"platform feature(s) {absent} are selected but missing from the "
                           "training data or the binning input")
    if not names:
        raise W.WoeLRError("no platform feature of the training data has a binning table")
    return binning, [n for n in data.feature_names if n in names]


def _encoding(setup: dict, binning: ModelPart, names: list[str], p) -> W.Encoding:
    """The bank's per-bin values for this party's features, checked."""
    if setup.get("version") != W.PROTOCOL_VERSION:
        raise W.WoeLRError(f"bank speaks {setup.get('version')!r}, this platform "
                           f"{W.PROTOCOL_VERSION}")
    theirs = setup.get("params") or {}
    diff = [k for k in W.SHARED if theirs.get(k) != getattr(p, k)]
    if diff:
        raise W.WoeLRError(f"bank and platform scorecard parameters differ: {', '.join(diff)}")
    if setup.get("binning") != binning.job_id:
        raise W.WoeLRError(f"the bank's binning input is job {setup.get('binning')!r}, the "
                           f"platform's {binning.job_id!r}: both must come from one job")
    feats = setup.get("features")
    tables = binning.body["tables"]
    want = {tables[n]["bank_label"]: n for n in names}
    if not isinstance(feats, dict) or set(feats) != set(want):
        got = len(feats) if isinstance(feats, dict) else 0
        raise W.WoeLRError(f"the bank encodes {got} platform feature(s), this platform "
                           f"selected {len(want)}: the selections differ")
    cuts, values = [], []
    for n in names:
        c = np.asarray(tables[n]["cuts"], np.float64)
        v = feats[tables[n]["bank_label"]]
        if not isinstance(v, list) or len(v) != len(c) + 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ProtocolError(f"{W.K_SETUP}: expected {len(c) + 2} numbers for "
                                f"{tables[n]['bank_label']}")
        arr = np.asarray(v, np.float64)
        if not np.isfinite(arr).all() or np.abs(arr).max() > MAX_VALUE:
            raise ProtocolError(f"{W.K_SETUP}: values out of range for "
                                f"{tables[n]['bank_label']}")
        cuts.append(c)
        values.append(arr)
    return W.Encoding(cuts, values)


def predict(ctx, model: ModelPart, X) -> np.ndarray:
    """Send this party's partial scores to the bank (disclosed, as LR's); returns them."""
    peer = C.Peer(ctx.link)
    enc = W.Encoding.from_dict(model.body["encoding"])
    Xs = C.scoring_handshake(peer, model, enc.transform(
        W.check_columns(X, model.feature_names, "platform scoring data")), PARTY, "bank",
        algorithm=W.ALGORITHM, what="WOE scorecard", error=W.WoeLRError)
    z = C.linear_predictor(Xs, model.body["weights"])
    peer.send_array(C.K_PARTIAL_SCORE, z)
    return z
