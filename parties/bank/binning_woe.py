"""Federated binning and WOE/IV, the bank's role (the label holder).

What each party holds at the end: a binning table per feature it owns. The bank bins
its own columns in plaintext (:func:`parties.common.woe.bin_column`: cut points,
counts, event rates, WOE, IV). For the platform's columns the bank holds the WOE/IV
rows of *anonymous* bins (``platform#k``, the platform's name only where its policy sets
``reveal_feature_names``); the platform holds the same bins' thresholds and counts.
Joining the two tables on the bin index gives the full table of a platform feature.

Protocol (message table in :mod:`parties.common.binning_woe_wire`):

1. The bank sends its public key and the Paillier ciphertexts of its 0/1 labels, each
   encrypted with fresh randomness (DRBG stream ``bin/labels``).
2. The platform cuts each of its columns into fine bins (the quantile / equal-width
   bins of the job, or for ``method = "monotonic"`` the ``n_prebins`` quantile
   pre-bins), computes per bin the number of rows and the homomorphic sum of the
   label ciphertexts, re-randomises every sum (the bank knows each label ciphertext's
   randomness, so a sum it could factor would tell it which rows formed the bin;
   the platform's ``refresh`` policy picks the obfuscator as for SecureBoost:
   ``djn_full`` by default, ``standard`` r^n against a malicious key holder) and
   sends counts and sums, features in a private random order.
3. The bank decrypts the event sums, range-checks them (``0 <= events <= count``,
   counts summing to n_rows), and computes WOE/IV. For ``monotonic`` it merges adjacent
   pre-bins itself (the same exact optimiser as for its own columns) and records each
   merged bin as a range of pre-bin indices.

Why the bins are sent in their true order. Merging needs adjacency, and the platform
cannot do the merging: it would have to compare WOE values it may not see. A
permutation inside a feature would hide only the shape of the event-rate curve, which
the bank's final (ordered) table states anyway. The order of quantile bins reveals no
threshold (every bin holds ~n/k rows whatever the values); for equal-width bins the
counts in order are the column's histogram, a disclosure the operator accepts by
allowing the algorithm. The features' order is permuted, so ``platform#k`` does not
name the k-th column.

What the bank learns: per anonymous platform bin its row count and event count
(ledger: ``row counts of anonymous platform bins``, ``event counts ... under the
bank's key``); nothing of the values or thresholds. What the platform learns: the
public key, n_rows and ciphertexts - nothing about the labels. Nothing computed from
the labels (WOE, the merge groups) is sent back: the platform's table keeps its
fine bins, and a later stage that WOE-encodes platform columns must ask for a policy
decision (not part of this protocol).
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import binning_woe_wire as W
from parties.common import woe
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import artifact_params
from secure_agg.keypolicy import describe_public_key


def train(ctx, data, params, cipher, policy) -> TrainOutcome:
    link = ctx.link
    try:
        y = woe.check_binary(data.y, "bank labels")
        own = {name: woe.bin_column(data.X[:, j], y, params, name)
               for j, name in enumerate(data.feature_names)}
        plat = _platform_tables(ctx, y, params, cipher)
    except Exception as exc:
        if isinstance(exc, woe.WoeError) and not exc.peer_message:
            exc.peer_message = "the bank's data cannot be binned (its operator sees why)"
        W.send_abort(link, exc)
        raise
    tables = {**own, **plat}
    ranking = woe.iv_ranking(tables)
    body = {"tables": own, "platform_tables": plat, "iv_ranking": ranking}
    model = ModelPart("binning", "bank", ctx.job_id, artifact_params(params), body,
                      list(data.feature_names))
    metrics = {"iv": {r["feature"]: r["iv"] for r in ranking}, "iv_ranking": ranking,
               "n_features": len(tables), "n_platform_features": len(plat)}
    return TrainOutcome(model=model, metrics=metrics)


def _platform_tables(ctx, y: np.ndarray, p, cipher) -> dict:
    link, n = ctx.link, len(y)
    link.send(W.K_INIT, {"version": W.PROTOCOL_VERSION, "n_rows": n,
                         "params": {k: getattr(p, k) for k in W.SHARED},
                         "key": describe_public_key(cipher, form="full"),
                         "chunk_rows": W.CHUNK_ROWS})
    ack = W.recv(link, W.K_ACK, "recv_json")
    if ack.get("n_rows") != n:
        raise ProtocolError(f"platform has {ack.get('n_rows')} aligned rows, bank has {n}: "
                            "the PSI alignment differs")
    # the obfuscators are drawn from the stream now (the same ciphertexts encrypt(m, rng)
    # would make) and computed ahead by the cipher's background workers
    with cipher.precompute_obfuscators(n, rng=ctx.rng.child("bin/labels")) as obf:
        for lo in range(0, n, W.CHUNK_ROWS):
            ct = cipher.encrypt(y[lo:lo + W.CHUNK_ROWS].astype(np.int64), bound_bits=1,
                                obfuscators=obf)
            link.send(W.K_LABELS, cipher.to_bytes(ct))
    meta = W.recv(link, W.K_META, "recv_json")
    feats = meta.get("features")
    nf = ack.get("n_features")
    if not isinstance(feats, list) or len(feats) != nf:
        raise ProtocolError(f"bin.meta: expected {nf} features")
    sizes = []
    for k, f in enumerate(feats):
        nb = f.get("n_bins") if isinstance(f, dict) else None
        if not isinstance(nb, int) or not 1 <= nb <= p.fine_bins:
            raise ProtocolError(f"bin.meta: feature {k}: n_bins {nb!r} not in "
                                f"[1, {p.fine_bins}]")
        sizes.append(nb + 1)                      # + the missing bin
    total = sum(sizes)
    counts = W.recv(link, W.K_COUNTS)
    if not isinstance(counts, np.ndarray) or counts.dtype.kind not in "iu" or \
            counts.shape != (total,):
        raise ProtocolError(f"bin.counts: expected {total} integers")
    counts = counts.astype(np.int64)
    blob = W.recv(link, W.K_SUMS)
    width = cipher.ciphertext_bytes
    if not isinstance(blob, bytes) or len(blob) != total * width:
        raise ProtocolError(f"bin.sums: expected {total} ciphertexts of {width} bytes")
    bound = max(int(n).bit_length(), 1)
    events = np.asarray(cipher.decrypt(cipher.from_bytes(blob, bound)), dtype=object)
    out, pos = {}, 0
    for k, (f, size) in enumerate(zip(feats, sizes, strict=True)):
        c, e = counts[pos:pos + size], events[pos:pos + size]
        pos += size
        if c.min() < 0 or int(c.sum()) != n or any(not 0 <= int(v) <= int(m)
                                                     for v, m in zip(e, c, strict=True)):
            raise ProtocolError(f"bin.counts/bin.sums: feature {k}: counts or event sums "
                                "out of range (corrupt or dishonest answer)")
        label = W.anonymous_label(k)
        if f.get("named"):   # a released name, kept apart from the bank's own names
            name = f.get("label")
            if not isinstance(name, str) or not 0 < len(name) <= 200:
                raise ProtocolError(f"bin.meta: feature {k}: a name of 1..200 characters")
            label = W.revealed_label(name)
        if label in out:
            raise ProtocolError(f"bin.meta: feature {k}: {label!r} announced twice")
        out[label] = _platform_table(c, np.array([int(v) for v in e], np.int64), p, label)
    return out


def _platform_table(counts, events, p, label: str) -> dict:
    """The bank's table of one platform feature: rows of anonymous (pre-)bins."""
    m = len(counts) - 1
    if p.method != "monotonic":
        groups = [(i, i) for i in range(m)]
        out = {"method": p.method}
    else:
        groups, trend = woe.monotonic_groups(counts, events, p, label)
        counts, events = woe.merge(counts, events, groups)
        out = {"method": p.method, "monotonic_trend": trend}
    labels = [f"bin {i}" if i == j else f"bins {i}-{j}" for i, j in groups] + ["Missing"]
    out.update(woe.table(counts, events, labels))
    out["platform_bins"] = [[i, j] for i, j in groups]
    return out
