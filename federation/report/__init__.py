"""Self-contained HTML model-risk reports (no external resource; plots as inline SVG).

The bank's report of a job: hyper-parameters, data summary, discrimination (ROC, KS,
PR), lift and gain by decile, score distribution, calibration, the confusion matrix at
a chosen threshold, stability (PSI) and out-of-time evaluation against a labelled
scoring population, WOE/IV and scorecard tables, coefficients or importance, history,
timings and the transcript's verification. It reads only what the party writing it
holds (:mod:`federation.report.collect` gathers it); platform features appear as the
platform's policy released them. docs/report.md says how each number is computed.
"""

from pathlib import Path

from federation.report.render import render_report, sections

__all__ = ["render_report", "sections", "write_report"]


def write_report(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path
