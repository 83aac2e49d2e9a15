"""Full-model export (issue 15 part 5): a SecureBoost model as XGBoost JSON, with the
platform's half revealed over the channel only when both parties' policies list the
model in ``[serving] reveal_models``.

``serve.reveal`` (bank -> platform, a control request): model id and both parts'
digests. The platform answers ``serve.revealed`` only if its policy lists the model:
its feature names and its split table (feature, threshold, default direction of every
split it made), with a statement signed by its Ed25519 key over the model id, both
digests and the SHA-256 of the split table. The bank checks the signature with the
pinned key, writes the statement beside the export (``PATH.reveal.json``: who revealed
what, when, verifiable later) and builds the XGBoost model: bank features first, then
the platform's, the trees and leaf values as trained, ``base_score`` from the base
margin; the platform's columns are named ``platform.<name>``. Revealing is irreversible: the bank then holds the platform's thresholds and
feature names (docs/serving.md). The same reveal serves ``--format onnx``
and ``pmml`` (:mod:`federation.serving.export_onnx`, :mod:`~federation.serving.export_pmml`). Each party can always export its own part
(``--format fedjoint``).

Every reveal and every full export is recorded: the platform appends a signed
``export`` record (``act = "reveal"``, its statement) to its transcript of the training
job before it answers, the bank one (``act = "export"``, the format, the file's SHA-256
and the platform's signed statement) before it writes the file
(:mod:`federation.transcript.exports`); ``fedjoint audit verify`` checks and lists them.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from federation.serving import protocol as P
from federation.transcript.exports import statement_bytes


class ExportRefused(Exception):
    pass


#: the full-model formats of each algorithm that has them (onnx: export_onnx.py, pmml:
#: export_pmml.py)
FULL_FORMATS = {"secureboost": ("xgboost-json", "onnx"),
                "logistic_regression": ("sklearn-json", "onnx", "pmml")}


def need_modules(fmt: str, modules: tuple[str, ...]) -> None:
    """Raise :class:`ExportRefused` naming the optional extra when a converter for
    ``--format fmt`` is not installed (checked before the platform is asked anything)."""
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ExportRefused(f"--format {fmt} needs the optional extra 'export' ({name} "
                                "is not installed): pip install 'fedjoint[export]'") from None


_statement_bytes = statement_bytes

def not_exportable(part, fmt: str | None = None) -> str:
    """Why ``part`` has no full export in a standard format (in ``fmt``, if given; ""
    when it has one): the formats here carry binary / regression models without
    categorical levels, and multinomial LR as sklearn-json and onnx."""
    if part.algorithm not in FULL_FORMATS:
        return f"{part.algorithm} models have no full export"
    multi = part.body.get("multi_class")
    if part.body.get("num_class") and fmt not in (None, "xgboost-json"):
        return (f"a multiclass SecureBoost model has no {fmt} export yet (formats: "
                "xgboost-json)")
    if multi == "ovr" or \
            (multi and len(part.body.get("classes") or part.body.get("weights") or []) < 3):
        return ("one-vs-rest multiclass LR models have no full export yet "
                "(scikit-learn 1.9's LogisticRegression has no one-vs-rest mode; score "
                "them with a scoring job)")
    if multi and fmt not in (None, "sklearn-json", "onnx"):
        return (f"a multinomial LR model has no {fmt} export yet (formats: sklearn-json, "
                "onnx)")
    if part.categories() and (part.algorithm != "secureboost"
                              or fmt not in (None, "xgboost-json")):
        return (f"a model with categorical features has no {fmt or 'full'} export yet "
                "(formats: xgboost-json, for SecureBoost)")
    return ""


def reveal_answer(ctx, body: dict) -> dict:
    """The platform's ``serve.reveal`` handler body (policy, digests, signed table)."""
    from federation.node.peer import load_identities
    from federation.runner import model_path, unbound_digest
    from parties.common.artifact import ModelPart
    cfg = ctx.cfg
    model_id = body.get("model")
    if not isinstance(model_id, str) or model_id not in cfg.serving.reveal_models:
        raise P.Refused("policy", f"model {str(model_id)[:80]!r} may not be revealed: it is "
                      f"not in [serving] reveal_models of {cfg.name}")
    try:
        part = ModelPart.load(model_path(cfg, model_id))
    except ValueError as exc:
        raise P.Refused("model", f"no model {model_id!r} on {cfg.name} ({exc})") from None
    why = not_exportable(part)
    if why:
        raise P.Refused("model", why)
    if body.get("platform_digest") != unbound_digest(part) or \
            body.get("bank_digest") != part.peer_part_digest:
        raise P.Refused("model", "the two parts were not trained together (digest mismatch)")
    table = {"feature_names": list(part.feature_names)}
    if part.algorithm == "secureboost":
        table["splits"] = part.body["splits"]
        if part.categories():          # its level lists: the export names them
            table["categories"] = part.categories()
    else:
        table.update(weights=part.body["weights"], standardizer=part.body["standardizer"])
    st = {"kind": "fedjoint-model-reveal-v1", "model": model_id, "by": cfg.name,
          "platform_digest": body["platform_digest"], "bank_digest": body["bank_digest"],
          "table_sha256": hashlib.sha256(_statement_bytes(table)).hexdigest(),
          "time": round(time.time(), 3)}
    local, _ = load_identities(cfg)
    sig = local.signing_key.sign(_statement_bytes(st)).hex()
    from federation.transcript import TranscriptError
    from federation.transcript.exports import append_export, training_transcript
    try:      # recorded before anything is revealed: no record, no reveal
        append_export(training_transcript(cfg.data_dir, model_id), local.signing_key,
                      {"act": "reveal", "model": model_id, "to": cfg.peer.name,
                       "statement": st, "signature": sig})
    except (TranscriptError, ValueError) as exc:
        raise P.Refused("model", f"the reveal cannot be recorded in {cfg.name}'s transcript "
                        f"of the training job ({str(exc)[:200]})") from None
    ctx.log("serving.revealed", {"model": model_id, "algorithm": part.algorithm})
    return {**table, "statement": st, "signature": sig}


def fetch_platform_table(cfg, model_id: str, channel=None, fmt: str | None = None
                         ) -> tuple[dict, dict]:
    """(the bank's part, the platform's revealed table with its signed statement)."""
    from federation.channel import ControlError, PeerUnreachable
    from federation.node.peer import load_identities, make_channel
    from federation.runner import model_path, unbound_digest
    from parties.common.artifact import ModelPart
    if model_id not in cfg.serving.reveal_models:
        raise ExportRefused(f"model {model_id!r} is not in [serving] reveal_models of "
                            f"{cfg.name} (this node's policy)")
    part = ModelPart.load(model_path(cfg, model_id))
    why = not_exportable(part, fmt)
    if why:
        raise ExportRefused(why)
    ch = channel or make_channel(cfg)
    try:
        rep = ch.request(P.K_REVEAL, {"model": model_id, "bank_digest": unbound_digest(part),
                                      "platform_digest": part.peer_part_digest}, timeout=30)
    except (PeerUnreachable, ControlError) as exc:
        raise ExportRefused(f"the platform did not answer: {exc}") from None
    if not rep.get("ok"):
        raise ExportRefused(f"refused by {cfg.peer.name}: {str(rep.get('error'))[:300]}")
    st, sig = rep.get("statement") or {}, str(rep.get("signature", ""))
    table = {k: rep.get(k) for k in ("feature_names", "splits", "weights", "standardizer",
                                     "categories") if k in rep}
    _, peer = load_identities(cfg)
    try:
        peer.signing_public_key.verify(bytes.fromhex(sig), _statement_bytes(st))
    except Exception:  # noqa: BLE001 - InvalidSignature or malformed hex
        raise ExportRefused("the platform's reveal statement does not verify with its "
                            "pinned signing key") from None
    if st.get("table_sha256") != hashlib.sha256(_statement_bytes(table)).hexdigest() or \
            st.get("model") != model_id:
        raise ExportRefused("the revealed split table does not match the signed statement")
    return part, {**table, "statement": st, "signature": sig}


def xgboost_json(part, table: dict) -> dict:
    """The full model as an XGBoost JSON document (``xgboost.Booster(model_file=...)``)."""
    import xgboost as xgb
    names = list(part.feature_names) + [f"platform.{n}" for n in table["feature_names"]]
    nb, nf = len(part.feature_names), len(names)
    body = part.body
    obj = body["objective"]
    K = int(body.get("num_class") or 0)          # multi:softprob: K trees per round
    X = np.zeros((max(K, 2), nf))
    X[1:] = np.arange(1, len(X))[:, None]
    tmpl = json.loads(xgb.train({"objective": obj, "max_depth": 1,
                                 **({"num_class": K} if K else {})}, xgb.DMatrix(
        X, label=np.arange(len(X), dtype=float) if K else [0.0, 1.0],
        feature_names=names), 1).save_raw("json"))
    trees = []
    for t, tr in enumerate(body["trees"]):
        by_id = {nd["id"]: nd for nd in tr["nodes"]}
        order, index = [0], {0: 0}
        for nid in order:                       # breadth first: xgboost's node ids
            nd = by_id[nid]
            if "owner" in nd:
                for ch in (nd["left"], nd["right"]):
                    index[ch] = len(order)
                    order.append(ch)
        m = len(order)
        a = {k: [0] * m for k in ("left_children", "right_children", "parents",
                                  "split_indices", "default_left", "split_type")}
        cat = {k: [] for k in ("categories", "categories_nodes", "categories_segments",
                               "categories_sizes")}
        f = {k: [0.0] * m for k in ("base_weights", "split_conditions", "loss_changes",
                                    "sum_hessian")}
        a["parents"][0] = 2147483647
        for i, nid in enumerate(order):
            nd = by_id[nid]
            f["sum_hessian"][i] = float(nd.get("H", 0.0))
            if "owner" not in nd:
                a["left_children"][i] = a["right_children"][i] = -1
                f["split_conditions"][i] = f["base_weights"][i] = float(nd["value"])
                continue
            li, ri = index[nd["left"]], index[nd["right"]]
            a["left_children"][i], a["right_children"][i] = li, ri
            a["parents"][li] = a["parents"][ri] = i
            s = nd if nd["owner"] == "bank" else table["splits"][nd["key"]]
            a["split_indices"][i] = int(s["feature"]) + (0 if s is nd else nb)
            a["default_left"][i] = int(bool(s["default_left"]))
            if "cats" in s:      # XGBoost's categorical split: the listed levels go right
                a["split_type"][i] = 1
                cat["categories_nodes"].append(i)
                cat["categories_segments"].append(len(cat["categories"]))
                cat["categories_sizes"].append(len(s["cats"]))
                cat["categories"] += sorted(int(c) for c in s["cats"])
            else:
                f["split_conditions"][i] = float(s["threshold"])
            f["loss_changes"][i] = float(nd.get("loss_chg", 0.0))
        trees.append({**a, **f, **cat, "id": t,
                      "tree_param": {"num_deleted": "0", "num_feature": str(nf),
                                     "num_nodes": str(m), "size_leaf_vector": "1"}})
    L = tmpl["learner"]
    model = L["gradient_booster"]["model"]
    model.update(trees=trees, tree_info=[t % K if K else 0 for t in range(len(trees))],
                 iteration_indptr=list(range(0, len(trees) + 1, K or 1)),
                 gbtree_model_param={"num_parallel_tree": "1", "num_trees": str(len(trees))})
    if K:       # XGBoost 3 keeps a multiclass intercept as K margins
        bs = "[" + ",".join(f"{float(v):.17g}" for v in body["base_margin"]) + "]"
    else:
        margin = float(body["base_margin"])
        base = 1.0 / (1.0 + np.exp(-margin)) if obj == "binary:logistic" else margin
        vec = L["learner_model_param"]["base_score"].startswith("[")
        bs = f"[{base:.17g}]" if vec else f"{base:.17g}"
    L["learner_model_param"].update(base_score=bs,
                                    num_feature=str(nf), boost_from_average="0")
    L["feature_names"] = names
    L["attributes"] = {"fedjoint_model": part.job_id}
    levels = {**part.categories(), **{f"platform.{n}": v for n, v in
                                      (table.get("categories") or {}).items()}}
    if levels:     # categorical columns take the level's index in these lists
        L["feature_types"] = ["c" if n in levels else "float" for n in names]
        L["attributes"]["fedjoint_categories"] = json.dumps(levels)
    return tmpl


def sklearn_json(part, table: dict) -> dict:
    """The full LR model in raw feature units: ``sigmoid(coef . x + intercept)`` (a
    multinomial model: ``softmax(coef @ x + intercept)``, one row of ``coef`` per class)
    equals the federated score for rows without missing values (impute those with
    ``fill``, the training imputation, first). :func:`sklearn_model` builds the
    estimator."""
    from parties.common.standardize import Standardizer
    multi = part.body.get("multi_class")
    intercept = np.atleast_1d(np.asarray(part.body["intercept"], dtype=np.float64)).copy()
    blocks = []
    for std_d, w in ((part.body["standardizer"], part.body["weights"]),
                     (table["standardizer"], table["weights"])):
        std = Standardizer.from_dict(std_d)
        W = np.atleast_2d(np.asarray(w, dtype=np.float64)) / std.scale
        blocks.append(W)
        intercept -= W @ std.mean
    coef = np.hstack(blocks)
    classes = list(part.body["classes"]) if multi else [0, 1]
    bank_fill = part.body["standardizer"]["fill"]
    return {"format": "fedjoint-sklearn-logistic-regression-v1", "model": part.job_id,
            "feature_names": list(part.feature_names) +
            [f"platform.{n}" for n in table["feature_names"]],
            "coef": coef.tolist(), "intercept": intercept.tolist(), "classes": classes,
            "fill": list(bank_fill) + list(table["standardizer"]["fill"])}


def sklearn_model(doc: dict):
    """A fitted ``sklearn.linear_model.LogisticRegression`` from :func:`sklearn_json`'s
    document (no pickle)."""
    from sklearn.linear_model import LogisticRegression
    m = LogisticRegression()
    m.coef_ = np.asarray(doc["coef"], dtype=np.float64)
    m.intercept_ = np.asarray(doc["intercept"], dtype=np.float64)
    m.classes_ = np.asarray(doc["classes"])
    m.n_features_in_ = m.coef_.shape[1]
    m.feature_names_in_ = np.asarray(doc["feature_names"], dtype=object)
    return m
