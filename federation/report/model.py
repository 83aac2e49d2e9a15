"""Report sections about the model and the job: hyper-parameters, data summary, WOE/IV
tables, scorecard, coefficients or tree importance, stability, timings, transcript.

Everything shown is held by the party writing the report: for the bank, its own
features by name and values; the platform's features only under the labels its policy
released (``platform#k`` otherwise), never a platform value or threshold.
"""

from __future__ import annotations

from federation.report import stats as S
from federation.report.svg import (
    bar_chart,
    columns_chart,
    esc,
    fmt,
    grid,
    grid_table,
    kv_table,
)

_COUNT_WORDS = ("chunks", "count", "rows", "bytes", "n_", "messages", "trees", "epochs")


def hyper_parameters(params: dict, evaluation: dict) -> str:
    out = kv_table(params) if params else '<p class="muted">no parameters recorded</p>'
    if evaluation:   # the job's threshold made only its recorded accuracy / confusion
        ev = {("threshold (the job's own recorded metrics; the report states its own)"
               if k == "threshold" else k): v for k, v in evaluation.items()}
        out += "<h3>Evaluation settings</h3>" + kv_table(ev)
    return out


def woe_iv(binning: dict) -> str:
    """The binning part's IV ranking and each feature's table (bank features with their
    intervals; platform features as anonymous bins, with no threshold)."""
    tables = {**(binning.get("tables") or {}), **(binning.get("platform_tables") or {})}
    if not tables:
        return '<p class="muted">the binning part holds no table</p>'
    ranking = binning.get("iv_ranking") or [{"feature": f, "iv": t.get("iv", float("nan"))}
                                            for f, t in tables.items()]
    plat = set(binning.get("platform_tables") or {})
    rank_rows = [{"feature": r["feature"], "owner": "platform" if r["feature"] in plat
                  else "bank", "IV": r["iv"], "bins": len(tables.get(r["feature"], {})
                                                          .get("bins", [])),
                  "method": tables.get(r["feature"], {}).get("method", ""),
                  "trend": tables.get(r["feature"], {}).get("monotonic_trend", "")}
                 for r in ranking]
    chart = bar_chart("iv", [r["feature"] for r in rank_rows[:25]],
                      [float(r["IV"]) for r in rank_rows[:25]], "information value by feature")
    parts = [grid(chart), grid_table(rank_rows)]
    cols = ("bin", "count", "count_share", "event", "non_event", "event_rate", "woe", "iv")
    for r in rank_rows:
        t = tables[r["feature"]]
        rows = [{c: b.get(c, "") for c in cols} for b in t.get("bins", [])]
        parts.append(f"<details><summary>{esc(r['feature'])} &mdash; IV {fmt(r['IV'])}"
                     f"</summary>{grid_table(rows, 'woe')}</details>")
    return "".join(parts)


def scorecard(card: dict) -> str:
    """The bank part's points table (``body["scorecard"]``) and its scaling."""
    scale = {k: card[k] for k in ("pdo", "base_score", "base_odds", "factor", "offset",
                                  "base_points") if k in card}
    rule = card.get("convention") or ("factor = pdo / ln 2, offset = base_score - factor "
                                      "* ln(base_odds)")
    note = (f"<p>{esc(rule)}; a row's score is the base points plus its bins' points over both parties' "
            "features.</p>")
    rows = list(card.get("rows") or [])
    span: dict[str, list[float]] = {}
    for r in rows:
        span.setdefault(str(r.get("feature")), []).append(float(r.get("points", 0.0)))
    summary = [{"feature": f, "bins": len(v), "min points": min(v), "max points": max(v),
                "range": max(v) - min(v)} for f, v in span.items()]
    parts = [kv_table(scale), note, "<h3>Points range per bank feature</h3>",
             grid_table(sorted(summary, key=lambda r: -r["range"])),
             "<h3>Bank features</h3>", grid_table(rows, "scorecard")]
    if card.get("platform"):
        parts += ["<h3>Platform features (as the platform's part released them)</h3>",
                  grid_table(list(card["platform"]), "scorecard")]
    else:
        parts.append('<p class="muted">The platform holds the points of its own bins; '
                     "they are not in the bank's part.</p>")
    return "".join(parts)


def coefficients(coef: dict) -> str:
    """Signed LR coefficients of this party's features; on the bank's side the
    platform's part as one anonymous contribution (the spread of its log-odds share on
    the test rows). The platform's report has its own coefficients and no labels."""
    bank = "own" not in coef
    rows = list(coef.get("bank") or coef.get("own") or [])
    who = "bank" if bank else "platform (this party's own)"
    chart = bar_chart("coefficients", [r["feature"] for r in rows],
                      [r["coefficient"] for r in rows],
                      f"{who} coefficients (standardised features; + raises the default odds)")
    parts = [grid(chart), grid_table(rows, "coefficients")]
    if "intercept" in coef:
        parts.append(kv_table({"intercept (bank part)": coef["intercept"]}))
    plat = coef.get("platform") or {}
    if plat:
        parts += ["<h3>Platform part</h3>", kv_table(plat)]
    if bank:
        parts.append("<p class='muted'>The platform's coefficients stay with the platform: "
                     "its features enter as one contribution to the log-odds. The spread "
                     "column is the standard deviation of each term's contribution to the "
                     "log-odds over the test rows (for the platform: logit(score) minus the "
                     "bank's terms, which the test scores already imply), so the magnitudes "
                     "are comparable; a coefficient's magnitude alone is not an "
                     "importance.</p>")
    else:
        parts.append("<p class='muted'>The bank's coefficients and intercept stay with the "
                     "bank; this party holds no labels, so no performance is shown.</p>")
    return "".join(parts)


def tree_importance(rows: list[dict], measure: str) -> str:
    rows = sorted(rows, key=lambda r: -float(r.get("gain", 0)))[:25]
    return (grid(bar_chart("importance", [r["feature"] for r in rows],
                           [float(r.get("gain", 0)) for r in rows], f"{measure} by feature"))
            + grid_table(rows))


def stability(score: dict | None, variables: list[dict], note: str, reference: str,
              population: str, owner: str = "bank") -> str:
    """PSI of the score and of each variable the bank can bin on both populations."""
    parts = [f"<p>Reference (expected): {esc(reference)}; compared population (actual): "
             f"{esc(population)}. PSI = &sum; (actual share &minus; expected share) &times; "
             f"ln(actual share / expected share), shares floored at {S.PSI_FLOOR:g}; "
             "&lt; 0.1 stable, 0.1&ndash;0.25 some shift, &ge; 0.25 significant shift.</p>"]
    if score:
        parts += [f"<h3>Score PSI: {score['psi']:.4f} ({esc(S.psi_band(score['psi']))})</h3>",
                  grid(columns_chart("psi-score", [str(i + 1) for i in range(len(score["bins"]))],
                                     {"expected (reference)": [b["expected share"]
                                                               for b in score["bins"]],
                                      "actual (compared)": [b["actual share"]
                                                            for b in score["bins"]]},
                                     "share of rows per score bin (deciles of the reference)",
                                     "score bin (1 = lowest scores; table below)",
                                     "share of rows")),
                  grid_table(score["bins"])]
    if variables:
        summary = [{"feature": v["feature"], "PSI": v["psi"], "reading": S.psi_band(v["psi"]),
                    "bins": len(v["bins"]), "binned by": v.get("binned_by", ""),
                    **({"score shift (points)": v["score shift (points)"]}
                       if "score shift (points)" in v else {})}
                   for v in variables]
        parts += [f"<h3>Per variable ({esc(owner)} features)</h3>",
                  grid_table(summary, "psi-vars")]
        for v in variables:
            parts.append(f"<details><summary>{esc(v['feature'])} &mdash; PSI "
                         f"{v['psi']:.4f}</summary>{grid_table(v['bins'])}</details>")
    if note:
        parts.append(f"<p class='muted'>{esc(note)}</p>")
    return "".join(parts)


def timings(t: dict) -> str:
    """Seconds per phase, and (separately) the counts a role reports beside them."""
    secs = {k: v for k, v in t.items() if not any(w in k for w in _COUNT_WORDS)}
    counts = {k: int(round(v)) for k, v in t.items() if k not in secs}
    out = "<h3>Seconds per phase</h3>" + kv_table({k: round(float(v), 3)
                                                     for k, v in secs.items()})
    if counts:
        out += "<h3>Counts</h3>" + kv_table(counts)
    return out


def transcript(tr: dict) -> str:
    ok = tr.get("verified")
    status = ('<span class="ok">verified</span>' if ok else
              '<span class="bad">NOT verified</span>')
    out = f"<p>{status} {esc(tr.get('detail', ''))}</p>"
    ledger = tr.get("ledger") or {}
    if ledger:
        out += "<h3>Disclosure ledger</h3>" + grid_table(
            [{"value kind": k, **(v if isinstance(v, dict) else {"count": v})}
             for k, v in ledger.items()])
    return out
