"""Assembling the report page: which sections a job gets, in which order.

``render_report(data)`` takes the plain dict the node (``report_data``) or the Python
API (``RunResult.report``) builds; see :func:`render_report` for its keys. Binary jobs
get every section; multiclass jobs get one-vs-rest ROC curves and the K x K confusion
matrix instead of the binary sections; regression jobs get predicted-vs-actual and
residuals; stability (PSI), WOE/IV, scorecard, coefficients or importance, history,
timings and the transcript apply to every kind when their inputs exist.
"""

from __future__ import annotations

import json

import numpy as np

from federation.report import binary as B
from federation.report import model as M
from federation.report import stats as S
from federation.report.svg import (
    RENDER_CHECK,
    esc,
    grid,
    grid_table,
    kv_table,
    line_chart,
    scatter_chart,
)
from parties.common import metrics

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;
color:#222;max-width:1150px}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}.ok{color:#2ca02c;font-weight:600}
.bad{color:#d62728;font-weight:600}.muted{color:#777}figure{margin:0}
figcaption{font-size:.85rem;color:#555;text-align:center}details{margin:.3rem 0}
nav ol{columns:2}
"""


def _section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, body


def _regression(y: np.ndarray, p: np.ndarray) -> str:
    r = y - p
    plot = scatter_chart("predicted-vs-actual", y, p, "predicted vs actual (test rows)",
                         "actual", "predicted", identity=True)
    resid = scatter_chart("residuals", p, r, "residual vs predicted", "predicted",
                          "actual - predicted")
    q = np.quantile(r, [0.05, 0.5, 0.95])
    summary = {"rmse": metrics.rmse(y, p), "mae": metrics.mae(y, p), "r2": metrics.r2(y, p),
               "mean residual": float(r.mean()), "residual 5%": float(q[0]),
               "residual median": float(q[1]), "residual 95%": float(q[2]), "n": int(y.size)}
    return grid(plot, resid) + kv_table(summary)


def _multiclass(scores: dict, tag: str = "") -> str:
    """One-vs-rest ROC curves, per-class AUC / precision / recall and the K x K matrix."""
    y = np.asarray(scores["y"], dtype=np.int64)
    p = np.asarray(scores["p"], dtype=np.float64)
    classes = [str(c) for c in scores.get("classes") or range(p.shape[1])]
    rep = metrics.multiclass_report(y, p)
    cm = np.asarray(rep["confusion"])
    curves = {}
    for c, name in enumerate(classes[:6]):
        fpr, tpr, _ = metrics.roc_curve((y == c).astype(float), p[:, c])
        curves[f"{name} (AUC {rep['auc_per_class'][c]:.3f})"] = (fpr, tpr)
    roc = line_chart(f"roc-ovr{tag}", curves, "one-vs-rest ROC", "false positive rate",
                     "true positive rate", diagonal=True) if curves else ""
    tp, actual, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    per_class = [{"class": name, "rows": int(actual[c]), "predicted": int(predicted[c]),
                  "auc (one-vs-rest)": rep["auc_per_class"][c],
                  "precision": float(tp[c] / predicted[c]) if predicted[c] else float("nan"),
                  "recall": float(tp[c] / actual[c]) if actual[c] else float("nan")}
                 for c, name in enumerate(classes)]
    head = "".join(f"<th>predicted {esc(n)}</th>" for n in classes)
    body = "".join(f"<tr><th>actual {esc(n)}</th>" +
                   "".join(f"<td>{int(v):,}</td>" for v in cm[i]) + "</tr>"
                   for i, n in enumerate(classes))
    matrix = f"<h3>Confusion matrix</h3><table><tr><th></th>{head}</tr>{body}</table>"
    summary = {k: rep[k] for k in ("accuracy", "macro_f1", "auc", "log_loss", "n")}
    return grid(roc) + kv_table(summary) + grid_table(per_class) + matrix


def _multiclass_oot(dev: dict, oot: dict, name: str) -> str:
    """The development (test split) and out-of-time figures side by side, then the
    out-of-time population's own classes section."""
    a = metrics.multiclass_report(np.asarray(dev["y"], np.int64), np.asarray(dev["p"], float))
    b = metrics.multiclass_report(np.asarray(oot["y"], np.int64), np.asarray(oot["p"], float))
    rows = [{"metric": k, "development (test split)": a[k], f"out-of-time ({name})": b[k],
             "change": b[k] - a[k]} for k in ("accuracy", "macro_f1", "auc", "log_loss", "n")]
    return grid_table(rows) + "<h3>Out-of-time classes</h3>" + \
        _multiclass({**oot, "classes": dev.get("classes") or oot.get("classes")}, "-oot")


def _history(history: list[dict]) -> str:
    if not history:
        return '<p class="muted">no per-iteration history</p>'
    xs = [h.get("iteration", i) for i, h in enumerate(history)]
    whole = all(float(x).is_integer() for x in xs)
    charts = []
    for group in (("loss", "train_loss", "valid_loss", "test_loss"),
                  ("auc", "train_auc", "valid_auc", "test_auc"),
                  ("rmse", "train_rmse", "valid_rmse")):
        series = {k: (xs, [float(h.get(k, float("nan"))) for h in history])
                  for k in group[1:] if any(k in h for h in history)}
        if series:
            charts.append(line_chart(f"history-{group[0]}", series,
                                     f"{group[0]} per iteration", "iteration", group[0],
                                     int_x=whole))
    return grid(*charts)


def _data_summary(data: dict, scores: dict, oot: dict) -> dict:
    out = dict(data.get("data") or {})
    psi = data.get("psi") or {}
    for src, dst in (("own_size", "this party's rows"), ("peer_size", "peer's rows"),
                     ("intersection", "intersection (PSI)"), ("n_train", "training rows"),
                     ("n_test", "test rows")):
        if psi.get(src) is not None and dst not in out:
            out[dst] = psi[src]
    if scores.get("label_kind", "binary") == "binary" and scores.get("y") is not None:
        out["default rate (test rows)"] = float(np.mean(scores["y"]))
    if oot.get("scores", {}).get("y") is not None:
        out[f"out-of-time rows ({oot.get('name', '')})"] = len(oot["scores"]["y"])
        out["default rate (out-of-time)"] = float(np.mean(oot["scores"]["y"]))
    return out


def _score_psi(dev_p, oot_p) -> dict:
    edges = S.quantile_edges(dev_p)
    labels = S.interval_labels(edges)
    return S.psi_table(dev_p, oot_p, edges, labels)


def sections(data: dict) -> list[tuple[str, str, str]]:
    """(id, title, html) of every section this job's data supports, in report order."""
    job = data.get("job", {})
    scores = data.get("scores") or {}
    oot = data.get("oot") or {}
    kind = scores.get("label_kind", "binary")
    out = [_section("job", "Job", kv_table(job)),
           _section("hyper-parameters", "Hyper-parameters",
                    M.hyper_parameters(data.get("params") or {},
                                       data.get("evaluation") or {})),
           _section("data", "Data summary", kv_table(_data_summary(data, scores, oot)))]
    if data.get("stages"):
        out.insert(1, _section("stages", "Pipeline stages", grid_table(data["stages"]) +
                               "<p class='muted'>The sections below are of the last "
                               "training stage; WOE/IV of the first binning stage.</p>"))
    if data.get("metrics"):
        # the job's accuracy is at p >= 0.5 (the confusion sections use the threshold)
        rows = [{"split": split, **{("accuracy at p >= 0.5" if k == "accuracy" else k): v
                                    for k, v in vals.items()}}
                for split, vals in data["metrics"].items()]
        out.append(_section("metrics", "Metrics as the job recorded them", grid_table(rows)))
    has_scores = scores.get("y") is not None and len(scores.get("y", [])) > 1
    y = np.asarray(scores.get("y", []), float)
    p = np.asarray(scores.get("p", []), float)
    if has_scores and kind == "multiclass":
        out.append(_section("classes", "Classes (test rows)", _multiclass(scores)))
        os_ = oot.get("scores") or {}
        if os_.get("y") is not None and len(os_["y"]) > 1:
            out.append(_section("oot", f"Out-of-time evaluation ({oot.get('name', '')})",
                                _multiclass_oot(scores, os_, str(oot.get("name", "")))))
    elif has_scores and kind == "continuous":
        out.append(_section("regression", "Regression (test rows)", _regression(y, p)))
    elif has_scores:
        thr, how = B.choose_threshold(y, p, data.get("threshold"))
        out += [_section("discrimination", "ROC, KS and precision-recall (test rows)",
                         B.discrimination(y, p)),
                _section("deciles", "Lift and gain by decile (test rows)",
                         B.decile_section(y, p)),
                _section("distribution", "Score distribution by class (test rows)",
                         B.distribution(y, p)),
                _section("calibration", "Calibration (test rows)",
                         B.calibration_section(y, p)),
                _section("confusion", "Confusion matrix (test rows)",
                         B.confusion_section(y, p, thr, how))]
        os_ = oot.get("scores") or {}
        if os_.get("y") is not None and len(os_["y"]) > 1:
            out.append(_section("oot", f"Out-of-time evaluation ({oot.get('name', '')})",
                                B.out_of_time((y, p), (np.asarray(os_["y"], float),
                                                       np.asarray(os_["p"], float)),
                                              thr, str(oot.get("name", "")))))
    out.append(_stability(data, scores, oot, kind))
    if data.get("binning"):
        out.append(_section("woe-iv", "WOE / IV (binning part)", M.woe_iv(data["binning"])))
    if data.get("scorecard"):
        out.append(_section("scorecard", "Scorecard", M.scorecard(data["scorecard"])))
    if data.get("coefficients"):
        out.append(_section("coefficients", "Coefficients (logistic regression)",
                            M.coefficients(data["coefficients"])))
    elif data.get("feature_importance"):
        measure = data.get("measure") or "total gain"
        out.append(_section("importance", f"Feature importance ({measure})",
                            M.tree_importance(data["feature_importance"], measure)))
    out.append(_section("history", "Training history", _history(data.get("history") or [])))
    if data.get("timings"):
        out.append(_section("timings", "Timings", M.timings(data["timings"])))
    if data.get("transcript"):
        out.append(_section("transcript", "Transcript", M.transcript(data["transcript"])))
    return out


def _stability(data: dict, scores: dict, oot: dict, kind: str) -> tuple[str, str, str]:
    st = data.get("stability") or {}
    os_ = oot.get("scores") or {}
    score = None
    if kind != "multiclass" and scores.get("p") is not None and os_.get("p") is not None \
            and len(os_["p"]) and len(scores["p"]):
        score = _score_psi(np.asarray(scores["p"], float), np.asarray(os_["p"], float))
    if score is None and not st.get("variables"):
        body = ('<p class="muted">No out-of-time or scoring population was given, so there '
                "is no stability to measure (fedjoint job report --oot, or "
                "RunResult.report(oot=...)).</p>")
    else:
        body = M.stability(score, st.get("variables") or [], st.get("note", ""),
                           st.get("reference", "the training job's test split (scores) "
                                  "and training rows (variables)"),
                           st.get("population", str(oot.get("name", "out-of-time"))),
                           st.get("party", "bank"))
    return _section("stability", "Population stability (PSI)", body)


def render_report(data: dict) -> str:
    """HTML for one job.

    ``data`` keys (all optional except ``job``): ``job`` (id, name, algorithm, state...),
    ``params`` (hyper-parameters), ``evaluation``, ``data`` (extra data-summary rows),
    ``psi`` (intersection figures), ``metrics`` ({split: {name: value}}), ``history``,
    ``scores`` (test rows: {"y", "p", "label_kind"}; multiclass ``p`` is (n, K) with
    ``classes``), ``threshold`` (None: the KS-optimal score), ``oot`` ({"name",
    "scores": {"y", "p"}}), ``stability`` ({"variables": [{feature, psi, bins,
    binned_by}], "note", "reference", "population"}), ``binning`` (a binning part's
    body), ``scorecard`` (the bank part's ``body["scorecard"]``), ``coefficients``
    ({"bank": [{feature, coefficient, ...}], "intercept", "platform": {...}}),
    ``feature_importance`` + ``measure`` (trees), ``stages`` (a pipeline's stage rows),
    ``timings``, ``transcript``.
    """
    job = data.get("job", {})
    title = f"fedjoint job {job.get('id', '?')} — {job.get('algorithm', '')}"
    secs = sections(data)
    nav = "".join(f'<li><a href="#{sid}">{esc(t)}</a></li>' for sid, t, _ in secs)
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1>", f"<p class='muted'>{esc(job.get('name', ''))}</p>",
           f"<nav><ol>{nav}</ol></nav>"]
    out += [f'<section id="{sid}"><h2>{esc(t)}</h2>{body}</section>' for sid, t, body in secs]
    out.append(RENDER_CHECK)
    out.append(f"<script type='application/json' id='report-data'>"
               f"{esc(json.dumps({'job': job}, default=str))}</script></body></html>")
    return "\n".join(out)
