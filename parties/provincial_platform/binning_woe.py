"""Federated binning and WOE/IV, the platform's role (features, no labels).

The platform receives the bank's public key and the Paillier ciphertexts of the bank's
labels, bins each of its columns (quantile / equal-width bins, or the quantile
pre-bins of the monotonic method), and answers per bin with the row count and the
re-randomised homomorphic sum of the label ciphertexts, features in a private random
order (``platform#k`` on the bank's side; its own name only with
``reveal_feature_names``). It learns nothing about the labels: it sees ciphertexts
only and receives nothing computed from them. Its model part holds, per feature, the
cut points, bin intervals and counts, and the anonymous label the bank knows the
feature by. Design and disclosures: :mod:`parties.bank.binning_woe`.
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import binning_woe_wire as W
from parties.common import woe
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import artifact_params
from parties.provincial_platform.secureboost import refresh_mode
from secure_agg.keypolicy import peer_public_cipher


def train(ctx, data, params, cipher, policy) -> TrainOutcome:
    link = ctx.link
    try:
        out = _run(ctx, data, params, policy)
    except Exception as exc:
        W.send_abort(link, exc)
        raise
    model = ModelPart("binning", "platform", ctx.job_id, artifact_params(params),
                      {"tables": out}, list(data.feature_names))
    return TrainOutcome(model=model, metrics={"n_features": len(out)})


def _run(ctx, data, p, policy) -> dict:
    link, n = ctx.link, int(data.X.shape[0])
    init = W.recv(link, W.K_INIT, "recv_json")
    if init.get("version") != W.PROTOCOL_VERSION:
        raise ProtocolError(f"bank speaks binning protocol {init.get('version')}, this "
                            f"platform {W.PROTOCOL_VERSION}")
    theirs = init.get("params") or {}
    for k in W.SHARED:
        if theirs.get(k) != getattr(p, k):
            raise ProtocolError(f"parameter {k} differs: bank {theirs.get(k)!r}, platform "
                                f"{getattr(p, k)!r}")
    link.send(W.K_ACK, {"n_rows": n, "n_features": len(data.feature_names)})
    if init.get("n_rows") != n:
        raise ValueError(f"bank has {init.get('n_rows')} aligned rows, platform has {n}: "
                         "the PSI alignment differs")
    chunk = init.get("chunk_rows")
    if not isinstance(chunk, int) or not 1 <= chunk <= W.CHUNK_ROWS:
        raise ProtocolError(f"bin.init: chunk_rows {chunk!r} not in [1, {W.CHUNK_ROWS}]")
    pk = peer_public_cipher(init.get("key", {}), policy.keys, ctx.workers)

    # own cuts first: a column that cannot be binned fails before any label arrives
    order = ctx.rng.child("bin/order").numpy().permutation(len(data.feature_names))
    cuts, bins = [], []
    for k, j in enumerate(order):
        name = data.feature_names[j]
        shown = name if policy.reveal_feature_names else W.anonymous_label(k)
        try:
            c = woe.cut_points(data.X[:, j], p.cut_method, p.fine_bins, shown)
        except woe.WoeError as exc:   # the peer is told the label it knows, not the name
            raise woe.WoeError(f"{exc} [platform column {name!r}]", str(exc)) from None
        b = woe.assign(data.X[:, j], c)
        cuts.append(c)
        bins.append(np.where(b == woe.MISSING, len(c) + 1, b))

    labels = []
    width = pk.ciphertext_bytes
    for lo in range(0, n, chunk):
        rows = min(chunk, n - lo)
        blob = W.recv(link, W.K_LABELS)
        if not isinstance(blob, bytes) or len(blob) != rows * width:
            raise ProtocolError(f"bin.labels: expected {rows} ciphertexts of {width} bytes")
        labels.append(pk.from_bytes(blob, 1))
    vec = pk.concat(labels) if len(labels) != 1 else labels[0]

    width_bins = max(len(c) for c in cuts) + 2
    matrix = np.stack(bins, axis=1).astype(np.int64)
    hist = pk.histogram(vec, matrix, width_bins)
    take = np.concatenate([k * width_bins + np.arange(len(c) + 2)
                           for k, c in enumerate(cuts)])
    # the node's refresh policy, as for SecureBoost histograms: "djn_full" (semi-honest
    # key holder, fixed-base, ~5x cheaper) unless the policy asks for "standard" r^n
    sums = pk.rerandomize(pk.take(hist, take), ctx.rng.child("bin/rerandomize"),
                          obfuscation=refresh_mode("djn_full", policy))
    counts = np.concatenate([np.bincount(b, minlength=len(c) + 2).astype(np.int64)
                             for b, c in zip(bins, cuts, strict=True)])
    link.send(W.K_META, {"features": [
        {"label": data.feature_names[j] if policy.reveal_feature_names
         else W.anonymous_label(k), "named": bool(policy.reveal_feature_names),
         "n_bins": len(cuts[k]) + 1} for k, j in enumerate(order)]})
    link.send(W.K_COUNTS, counts)
    link.send(W.K_SUMS, pk.to_bytes(sums))

    out, pos = {}, 0
    for k, j in enumerate(order):
        size = len(cuts[k]) + 2
        c = counts[pos:pos + size]
        pos += size
        intervals = woe.interval_labels(cuts[k])
        out[data.feature_names[j]] = {
            "bank_label": W.revealed_label(data.feature_names[j])
            if policy.reveal_feature_names else W.anonymous_label(k),
            "method": p.method, "cuts": [float(v) for v in cuts[k]],
            "bins": [{"bin": i if i < size - 1 else "Missing", "interval": intervals[i],
                      "count": int(c[i])} for i in range(size)]}
    return out
