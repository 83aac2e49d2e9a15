"""Feature selection, the bank's role: it applies the rules of
:mod:`parties.common.selection` to its binning input (``data.inputs["binning"]``, this
party's part of an earlier ``binning`` output) and tells the platform which of its
anonymous features are kept.

What crosses: ``sel.init`` (params, the platform labels the bank knows, row counts),
with ``psi_max > 0`` the platform's ``sel.counts`` (rows per anonymous fine bin on the
training and validation rows), then ``sel.keep`` (the kept platform labels, sorted).
What the bank learns: those counts only. What the platform learns: which of its
features are kept (one bit each), never an IV, PSI or rank. The bank's model part holds
its kept columns (``feature_names``), the kept platform labels and the whole report
(IV, PSI, kept, reason per feature).
"""

from __future__ import annotations

import numpy as np

from parties.common import selection as S
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import artifact_params


def train(ctx, data, params, cipher, policy) -> TrainOutcome:
    link = ctx.link
    try:
        part = S.binning_input(data, "bank")
        own, plat = part.body.get("tables") or {}, part.body.get("platform_tables") or {}
        missing = [f for f in own if f not in data.feature_names]
        if missing:
            raise S.SelectionError(f"selection: the bank's rows lack column(s) {missing} of "
                                   f"its binning input {part.job_id!r}",
                                   "the bank's rows do not match its binning input")
        cols = {f: data.X[:, data.feature_names.index(f)] for f in own}
        n_train = len(data.X)
        n_valid = 0 if data.X_valid is None else len(data.X_valid)
        if params.psi_max > 0 and n_valid == 0:
            raise S.SelectionError(f"selection: psi_max = {params.psi_max} compares the "
                                   "training rows with the validation rows, and there are "
                                   "none (set [evaluation] valid_fraction)")
        labels = sorted(plat)
        link.send(S.K_INIT, {"version": S.PROTOCOL_VERSION, "params": S.shared_params(params),
                             "labels": labels, "n_train": n_train, "n_valid": n_valid})
        psis = None
        if params.psi_max > 0:
            psis = _own_psi(data, own)
            psis.update(_platform_psi(link, plat, labels, n_train, n_valid))
        woe_cols = ({f: S.woe_encode(x, own[f]) for f, x in cols.items()}
                    if params.max_corr < 1.0 else None)
        ivs = {f: float(t["iv"]) for f, t in {**own, **plat}.items()}
        report = S.select(ivs, params, psis=psis, woe_columns=woe_cols)
    except Exception as exc:
        S.send_abort(link, exc)
        raise
    kept = {r["feature"] for r in report if r["kept"]}
    keep_plat = sorted(f for f in plat if f in kept)
    link.send(S.K_KEEP, {"keep": keep_plat})
    own_kept = [f for f in data.feature_names if f in own and f in kept]
    body = {"selected": own_kept, "platform_selected": keep_plat, "report": report,
            "binning": part.job_id}
    model = ModelPart("selection", "bank", ctx.job_id, artifact_params(params), body,
                      own_kept)
    order = [r["feature"] for r in report if r["kept"]]
    dropped: dict[str, int] = {}
    for r in report:
        if not r["kept"]:
            rule = r["reason"].split(" ")[-2] if r["reason"] else ""
            dropped[rule] = dropped.get(rule, 0) + 1
    metrics = {"selected": order, "n_selected": len(order), "n_bank_selected": len(own_kept),
               "n_platform_selected": len(keep_plat), "dropped": dropped,
               "selection": report}
    return TrainOutcome(model=model, metrics=metrics)


def _own_psi(data, own: dict) -> dict[str, float]:
    out = {}
    for f, table in own.items():
        j = data.feature_names.index(f)
        size = len(table["bins"])
        t = np.bincount(S.bin_index(data.X[:, j], table), minlength=size)
        v = np.bincount(S.bin_index(data.X_valid[:, j], table), minlength=size)
        out[f] = S.psi(t, v)
    return out


def _platform_psi(link, plat: dict, labels: list[str], n_train: int, n_valid: int
                  ) -> dict[str, float]:
    from parties.common.woe import merge
    sizes = [S.fine_bins(plat[f]) for f in labels]
    arr = S.check_counts(S.recv(link, S.K_COUNTS), sizes, n_train, n_valid)
    out, pos = {}, 0
    for f, size in zip(labels, sizes, strict=True):
        fine = arr[:, pos:pos + size]
        pos += size
        groups = [tuple(g) for g in plat[f]["platform_bins"]]
        t, _ = merge(fine[0], None, groups)
        v, _ = merge(fine[1], None, groups)
        out[f] = S.psi(t, v)
    return out
