"""What a party's report shows about its own part and its own data, gathered once for
the node (``report_data``) and the Python API (``RunResult.report``).

Reads only this party's holdings: its model part, its stored test scores (bank), its
dataset rows of a job's intersection, and a labelled scoring population's rows and
scores. Nothing is sent to the peer and no new value is learnt from it: the
platform's log-odds share on the test rows is ``logit(score)`` minus the bank's own
terms, which the test scores the bank already holds imply.

Per-variable PSI covers the writing party's own features: the bank's report has the
bank's variables; the platform's variables are measured by the platform's own report
of the same jobs (its node holds its rows of both intersections), and never reach the
bank.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from federation.data import DataError, Dataset, load_dataset
from federation.report import stats as S
from parties.common.artifact import ModelPart

PLATFORM_NOTE = ("Platform variables are not in the bank's report: no protocol sends "
                 "their distributions, so their PSI is computed by the platform's own "
                 "report of the same jobs (fedjoint job report on the platform's node, "
                 "with the same --oot).")
BANK_NOTE = ("Bank variables are not in the platform's report: they stay on the bank's "
             "node, whose own report shows their PSI.")


class ReportError(ValueError):
    """The report cannot be built as asked (message names the job, dataset or column)."""


def own_rows(ds_cfg, part: ModelPart | None, rows: np.ndarray | None,
             need_label: bool = False, label_kind: str = "binary") -> Dataset:
    """This party's dataset restricted to the model part's columns (all columns without
    a part), at ``rows`` (an intersection in the agreed order; all rows if None)."""
    if part is not None and part.feature_names:
        ds_cfg = replace(ds_cfg, columns=list(part.feature_names))
    try:
        data = load_dataset(ds_cfg, need_label=need_label, label_kind=label_kind,
                            categories=part.categories() if part is not None else None)
    except DataError as exc:
        raise ReportError(str(exc)) from None
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(data)):
            raise ReportError(f"dataset {ds_cfg.name!r} has {len(data)} rows; the job's "
                              "intersection names rows beyond them (has the file changed "
                              "since the job ran?)")
        data = data.take(rows)
    return data


def dev_rows(ds_cfg, part: ModelPart | None, rows: np.ndarray | None) -> Dataset:
    """:func:`own_rows` of a training job's intersection, with the 0/1 labels when the
    dataset has a binary label column (a multiclass or continuous one is left out)."""
    if ds_cfg.label_column:
        try:
            return own_rows(ds_cfg, part, rows, need_label=True)
        except ReportError:
            pass
    return own_rows(ds_cfg, part, rows)


def label_summary(dev: Dataset) -> dict:
    """Data-summary rows of the training job's intersection (the bank's labels)."""
    if dev.y is None or not len(dev):
        return {}
    return {"events in the intersection (all splits)": int(np.sum(dev.y)),
            "default rate (intersection, all splits)": float(np.mean(dev.y))}


def read_frame(path):
    """A CSV/Parquet file as the loader reads it (``ReportError`` naming the file)."""
    from federation.data import _read
    try:
        return _read(Path(path))
    except DataError as exc:
        raise ReportError(str(exc)) from None


def rows_of(data: Dataset, ids: list) -> Dataset:
    """The rows of ``data`` with these ids, in their order."""
    where = {str(i): k for k, i in enumerate(data.ids)}
    missing = [i for i in ids if str(i) not in where]
    if missing:
        raise ReportError(f"dataset {data.name!r} lacks {len(missing)} id(s) the job scored "
                          f"(first: {missing[0]!r}); has the file changed since the job ran?")
    return data.take(np.array([where[str(i)] for i in ids], dtype=np.int64))


def check_threshold(threshold) -> float | None:
    """The confusion matrix's threshold as asked: None (KS-optimal) or a number in
    (0, 1); ``ReportError`` otherwise."""
    if threshold is None:
        return None
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if isinstance(threshold, bool) or not 0.0 < t < 1.0:
        raise ReportError(f"threshold = {threshold!r}: expected a number in (0, 1), or none "
                          "for the KS-optimal score")
    return t


def pipeline(stages: list[tuple[str, ModelPart, dict]]) -> dict:
    """A pipeline's stages ``[(name, part, metrics)]`` -> ``{"stage", "part"}`` (the last
    ``train`` stage: the one the test scores are of), ``"binning"`` (the first binning
    stage's body), ``"params"`` (``stage.key``) and the ``"stages"`` table rows."""
    from parties import registry
    trained = [(n, p) for n, p, _ in stages
               if p.algorithm in registry.names() and registry.get(p.algorithm).kind == "train"]
    name, part = trained[-1] if trained else (stages[-1][0], stages[-1][1])
    binning = next((p.body for _, p, _ in stages if p.algorithm == "binning"), None)
    rows = []
    for n, p, m in stages:
        r = {"stage": n, "algorithm": p.algorithm, "features (this party)": len(p.feature_names)}
        for k in ("test_auc", "test_ks", "iv_ranking"):
            if k == "iv_ranking" and isinstance(m.get(k), list):
                r["features ranked by IV"] = len(m[k])
            elif isinstance(m.get(k), (int, float)):
                r[k] = m[k]
        kept = p.body.get("platform_selected") if p.algorithm == "selection" else None
        if isinstance(kept, list):
            r["platform features kept"] = len(kept)
        rows.append(r)
    return {"stage": name, "part": part, "binning": binning, "stages": rows,
            "params": {f"{n}.{k}": v for n, p, _ in stages for k, v in p.params.items()}}


def registered_explanation(part: ModelPart) -> dict:
    """The explanation the part's algorithm declares in the registry (none if it
    declares none)."""
    from parties import registry
    try:
        fn = registry.get(part.algorithm).explain
    except registry.RegistryError:
        return {}
    return fn(part) if fn is not None else {}


def explain(part: ModelPart, test: Dataset | None, test_scores: dict | None) -> dict:
    """Report fields of this party's model part: signed coefficients (LR), tree
    importance, a binning part's tables, the scorecard."""
    out = dict(registered_explanation(part))
    body = part.body
    if part.algorithm == "binning":
        out["binning"] = body
    if isinstance(body.get("scorecard"), dict):
        out["scorecard"] = body["scorecard"]
    rows = out.get("feature_importance") or []
    if rows and all("coefficient" in r for r in rows):
        out.pop("feature_importance")
        out.pop("measure", None)
        out["coefficients"] = _coefficients(part, rows, test, test_scores)
    return out


def _coefficients(part: ModelPart, rows: list[dict], test: Dataset | None,
                  test_scores: dict | None) -> dict:
    body = part.body
    coef = [{"feature": r["feature"], "coefficient": float(r["coefficient"]),
             "sign": "raises default odds" if r["coefficient"] > 0 else
             ("lowers default odds" if r["coefficient"] < 0 else "none")} for r in rows]
    out: dict = {"bank" if part.party == "bank" else "own": coef}
    if "intercept" in body and not isinstance(body["intercept"], list):
        out["intercept"] = float(body["intercept"])
    n_peer = body.get("peer_n_features")
    ok = (part.party == "bank" and test is not None and test_scores
          and test_scores.get("label_kind", "binary") == "binary"
          and not isinstance(body.get("intercept"), list))
    if ok:
        from parties.common.standardize import Standardizer
        X = test.X
        if isinstance(body.get("encoding"), dict):    # woe_lr: the LR sees WOE values
            from parties.common.woe_lr import Encoding
            X = Encoding.from_dict(body["encoding"]).transform(X)
        Xs = Standardizer.from_dict(body["standardizer"]).transform(X, "report")
        w = np.asarray(body["weights"], dtype=np.float64)
        terms = Xs * w
        p = np.clip(np.asarray(test_scores["p"], float), 1e-15, 1 - 1e-15)
        platform = np.log(p / (1 - p)) - terms.sum(axis=1) - out.get("intercept", 0.0)
        for r, t in zip(coef, terms.T, strict=True):
            r["spread of log-odds term (test rows)"] = float(np.std(t))
        out["platform"] = {"features (count)": n_peer if n_peer is not None else "n/a",
                           "coefficients": "held by the platform (not disclosed)",
                           "spread of its log-odds share (test rows)": float(np.std(platform)),
                           "mean of its log-odds share (test rows)": float(np.mean(platform))}
    elif n_peer is not None:
        out["platform"] = {"features (count)": n_peer,
                           "coefficients": "held by the platform (not disclosed)"}
    return out


def variable_stability(dev: Dataset, actual: Dataset, binning: dict | None,
                       party: str, card: dict | None = None) -> dict:
    """Per-variable PSI of this party's features between two populations of its rows:
    on the binning part's bins where it has the feature, else deciles of ``dev``;
    categorical features bin by level; missing values have their own bin. With a
    scorecard (``card``) whose points cover a feature's bins, the characteristic
    analysis too: ``sum_i (a_i - e_i) * points_i``, the shift of the mean score that the
    feature's change of distribution makes."""
    tables = (binning or {}).get("tables") or {}
    points: dict[str, list[float]] = {}
    for r in (card or {}).get("rows") or []:
        points.setdefault(str(r.get("feature")), []).append(float(r.get("points", 0.0)))
    out = []
    for j, name in enumerate(dev.feature_names):
        if name not in actual.feature_names:
            raise ReportError(f"the compared population lacks column {name!r} the model "
                              "was trained on")
        e, a = dev.X[:, j], actual.X[:, actual.feature_names.index(name)]
        if name in dev.categories:
            levels = [str(v) for v in dev.categories[name]]
            edges, labels = np.arange(1, len(levels)) - 0.5, [*levels, "Missing"]
            how = "levels"
        elif tables.get(name, {}).get("cuts") is not None:
            edges = np.asarray(tables[name]["cuts"], float)
            labels, how = S.interval_labels(edges), "binning part (WOE bins)"
        else:
            edges = S.quantile_edges(e)
            labels, how = S.interval_labels(edges), "deciles of the reference rows"
        t = S.psi_table(e, a, edges, labels)
        row = {"feature": name, "psi": t["psi"], "bins": t["bins"], "binned_by": how}
        pts = points.get(name)
        if how.startswith("binning") and pts is not None and len(pts) == len(edges) + 2:
            ec, ac = S.bin_shares(e, edges), S.bin_shares(a, edges)
            row["score shift (points)"] = float(np.dot(ac / ac.sum() - ec / ec.sum(), pts))
        out.append(row)
    return {"variables": out, "party": party,
            "note": PLATFORM_NOTE if party == "bank" else BANK_NOTE,
            "reference": f"the training job's intersection ({len(dev):,} rows) for the "
                         "variables; its test split for the score",
            "population": f"{actual.name} ({len(actual):,} rows)"}


def oot_scores(ids: list, p: list, labelled: Dataset, name: str) -> dict:
    """The ``oot`` field: a scoring job's scores with the labels of its rows."""
    if labelled.y is None:
        raise ReportError(f"dataset {labelled.name!r} has no label column: an out-of-time "
                          "evaluation needs the observed outcomes (set label_column)")
    y = np.asarray(labelled.y, dtype=np.float64)
    bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
    if bad.size:
        raise ReportError(f"dataset {labelled.name!r}: the label of id "
                          f"{labelled.ids[bad[0]]!r} is {y[bad[0]]!r}; an out-of-time "
                          "evaluation needs 0/1 labels")
    if len(ids) != len(y):
        raise ReportError(f"{len(ids)} scores but {len(y)} labelled rows")
    return {"name": name, "scores": {"ids": [str(i) for i in ids], "y": y.tolist(),
                                     "p": [float(v) for v in p]}}


def oot_multiclass(ids: list, p, labelled: Dataset, classes: list, name: str) -> dict:
    """The ``oot`` field of a multiclass model: the scoring job's class probabilities
    (columns in the model's class order) with the labels of its rows, mapped to the
    model's classes by value."""
    index = {str(c): i for i, c in enumerate(classes)}
    names = [str(labelled.classes[int(k)]) for k in labelled.y]
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise ReportError(f"dataset {labelled.name!r} has class(es) {unknown[:5]} the model "
                          f"was not trained on (its classes: {[str(c) for c in classes]})")
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (len(ids), len(classes)):
        raise ReportError(f"{p.shape[0]} scored rows of {p.shape[1]} classes; expected "
                          f"{len(ids)} of {len(classes)}")
    return {"name": name, "scores": {"ids": [str(i) for i in ids],
                                     "y": [index[n] for n in names], "p": p.tolist(),
                                     "classes": list(classes), "label_kind": "multiclass"}}
