"""Model explanations each algorithm declares in the registry (``Algorithm.explain``).

An explanation is what a report may show about one party's model part without guessing
at its body: ``{"feature_importance": [{"feature", "gain", "splits"[, "coefficient"]}],
"measure": ...}``. Each party explains only its own part; platform features appear
under the labels the platform's policy released.
"""

from __future__ import annotations

from parties.common.artifact import ModelPart


def tree_importance(part: ModelPart) -> dict:
    """SecureBoost: total gain and split count per feature (bank part: bank features by
    name, platform splits under their released labels; platform part: none kept)."""
    imp = part.body.get("importance") or {}
    gain, count = imp.get("total_gain") or {}, imp.get("split_count") or {}
    names = list(dict.fromkeys([*gain, *count]))
    rows = [{"feature": n, "gain": float(gain.get(n, 0.0)), "splits": int(count.get(n, 0))}
            for n in names]
    return {"measure": "total gain", "feature_importance": rows}


def linear_coefficients(part: ModelPart) -> dict:
    """Linear models: this party's coefficients on standardised features (``gain`` is
    the magnitude, ``coefficient`` the signed weight)."""
    weights = part.body.get("weights") or []
    if weights and isinstance(weights[0], list):   # multiclass: one row per class
        rows = [{"feature": n, "gain": max(abs(float(v)) for v in col), "splits": 0,
                 "coefficients": [float(v) for v in col]}
                for n, col in zip(part.feature_names, zip(*weights, strict=True),
                                  strict=False)]
        return {"measure": "max |coefficient| over classes (standardised features)",
                "feature_importance": rows}
    rows = [{"feature": n, "gain": abs(float(w)), "splits": 0, "coefficient": float(w)}
            for n, w in zip(part.feature_names, weights, strict=False)]
    return {"measure": "|coefficient| (standardised features)", "feature_importance": rows}
