"""``RunResult.report``: the model-risk report of a local run (docs/report.md).

Builds the same fields as a node's ``report_data`` from the bank's side of the run:
its metrics, history, test scores and model part, its frame's rows of the
intersection, and, for ``oot=(bank_frame, platform_frame)``, a federated scoring run
of that population (PSI included) whose scores meet the bank frame's labels.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from federation import report as _report
from federation.node.results import history_rows, split_metrics
from federation.report import collect as R


def report_data(result, *, oot: tuple | None = None, threshold: float | None = None,
                binning=None, oot_name: str = "out-of-time") -> dict:
    """The report's fields for ``result`` (a :class:`fedjoint.RunResult`);
    ``ReportError`` names what cannot be reported as asked."""
    bank, part, spec = result.bank, result.bank_model, result.job
    data = {"job": {"id": bank.job_id, "name": spec.name, "algorithm": spec.algorithm,
                    "state": "done", "role": "bank (local run)",
                    "model digest": bank.model_digest,
                    "peer part digest": bank.peer_model_digest},
            "psi": {**bank.psi_info, "intersection": bank.intersection,
                    "n_train": bank.n_train, "n_test": bank.n_test},
            "metrics": split_metrics(bank.metrics or {}),
            "history": history_rows(bank.history), "timings": dict(bank.timings),
            "params": dict(part.params) if part is not None else dict(spec.params),
            "evaluation": asdict(spec.evaluation), "threshold": R.check_threshold(threshold)}
    score_with = {}
    if bank.stages:       # a pipeline: the last training stage, the first binning stage
        pl = R.pipeline([(st["name"], st["model"], st["metrics"]) for st in bank.stages])
        part, score_with = pl["part"], {"stage": pl["stage"]}
        data.update({k: pl[k] for k in ("stages", "params")})
        if pl["binning"] is not None:
            data["binning"] = pl["binning"]
    scores = bank.test_scores
    if scores:
        data["scores"] = scores
    ds_cfg = next(iter(result._nodes["bank"].datasets.values()))
    dev = R.dev_rows(ds_cfg, part, bank.psi_rows)
    data["data"] = R.label_summary(dev)
    if part is not None:
        data.update(R.explain(part, R.rows_of(dev, scores["ids"]) if scores else None,
                              scores))
    if binning is not None:
        data["binning"] = _binning_body(binning)
    kind = (scores or {}).get("label_kind", "binary")
    if oot is not None and len(oot) != 2:
        raise R.ReportError("oot= takes (bank_frame, platform_frame)")
    if oot is not None:
        frame = oot[0] if isinstance(oot[0], pd.DataFrame) else R.read_frame(oot[0])
    if oot is not None and kind == "multiclass":
        classes = list(scores["classes"])
        labelled = R.own_rows(replace(ds_cfg, name=oot_name, frame=frame, path=Path(oot_name)),
                              part, None, need_label=True, label_kind="multiclass")
        sc = result.score(frame, oot[1], **score_with)
        labelled = R.rows_of(labelled, sc["id"].tolist())
        data["oot"] = R.oot_multiclass(sc["id"].tolist(),
                                       sc[[f"p_{c}" for c in classes]].to_numpy(), labelled,
                                       classes, oot_name)
        data["stability"] = R.variable_stability(dev, labelled, data.get("binning"), "bank")
    elif oot is not None and kind != "binary":
        actual = R.own_rows(replace(ds_cfg, name=oot_name, frame=frame, path=Path(oot_name)),
                            part, None)
        if kind == "continuous":    # the prediction's PSI; no labels needed
            pred = result.score(frame, oot[1], **score_with)["score"]
            data["oot"] = {"name": oot_name, "scores": {"p": pred.tolist()}}
        data["stability"] = R.variable_stability(dev, actual, data.get("binning"), "bank",
                                                 data.get("scorecard"))
    elif oot is not None:
        # labels and columns checked before anything is scored (nothing crosses first)
        labelled = R.own_rows(replace(ds_cfg, name=oot_name, frame=frame,
                                      path=Path(oot_name)), part, None, need_label=True)
        sc = result.score(frame, oot[1], **score_with)
        if "score" not in sc.columns:
            raise R.ReportError("out-of-time evaluation needs a binary model's scores")
        labelled = R.rows_of(labelled, sc["id"].tolist())
        data["oot"] = R.oot_scores(sc["id"].tolist(), sc["score"].tolist(), labelled,
                                   oot_name)
        data["stability"] = R.variable_stability(dev, labelled, data.get("binning"),
                                                 "bank", data.get("scorecard"))
    return data


def _binning_body(binning) -> dict:
    part = getattr(binning, "bank_model", binning)
    body = getattr(part, "body", part)
    if not isinstance(body, dict) or "tables" not in body:
        raise R.ReportError("binning= takes a binning job's RunResult, its bank ModelPart "
                            "or that part's body")
    return body


def write(result, path: str | Path, **options) -> Path:
    return _report.write_report(report_data(result, **options), path)
