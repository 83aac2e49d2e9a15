"""Feature selection, the platform's role: it answers with its own bin counts when the
stability rule asks for them and learns which of its features the bank keeps.

Its binning input (``data.inputs["binning"]``) maps each of its columns to the label
the bank knows it by. It checks that the bank names exactly those labels, with
``psi_max > 0`` sends the rows per fine bin of each feature on the training and the
validation rows (``sel.counts``: counts of anonymous bins, no value, no threshold), and
receives the kept labels (``sel.keep``). It learns one bit per feature (kept or not),
no IV, PSI or rank. Its model part's ``feature_names`` are its kept columns, which later
stages taking this selection as input train on. Design: :mod:`parties.common.selection`.
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import selection as S
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import artifact_params


def train(ctx, data, params, cipher, policy) -> TrainOutcome:
    link = ctx.link
    try:
        part = S.binning_input(data, "platform")
        tables = part.body.get("tables") or {}
        missing = [f for f in tables if f not in data.feature_names]
        if missing:
            raise S.SelectionError(f"selection: the platform's rows lack column(s) {missing} "
                                   f"of its binning input {part.job_id!r}",
                                   "the platform's rows do not match its binning input")
        by_label = {t["bank_label"]: f for f, t in tables.items()}
        keep = _run(link, data, params, tables, by_label)
    except Exception as exc:
        S.send_abort(link, exc)
        raise
    selected = [f for f in data.feature_names if f in tables and
                tables[f]["bank_label"] in keep]
    body = {"selected": selected, "binning": part.job_id,
            "bank_labels": {f: tables[f]["bank_label"] for f in selected}}
    model = ModelPart("selection", "platform", ctx.job_id, artifact_params(params), body,
                      selected)
    return TrainOutcome(model=model, metrics={"n_selected": len(selected)})


def _run(link, data, p, tables: dict, by_label: dict) -> set[str]:
    init = S.recv(link, S.K_INIT, "recv_json")
    if init.get("version") != S.PROTOCOL_VERSION:
        raise ProtocolError(f"bank speaks selection protocol {init.get('version')!r}, this "
                            f"platform {S.PROTOCOL_VERSION}")
    S.check_shared(init.get("params"), p)
    labels = init.get("labels")
    if not isinstance(labels, list) or labels != sorted(by_label):
        raise ProtocolError("sel.init: the bank's binning input names other platform "
                            "features than this platform's binning input (not the same "
                            "binning output)")
    n_train = len(data.X)
    n_valid = 0 if data.X_valid is None else len(data.X_valid)
    if init.get("n_train") != n_train or init.get("n_valid") != n_valid:
        raise ProtocolError(f"sel.init: bank has {init.get('n_train')!r} / "
                            f"{init.get('n_valid')!r} training / validation rows, platform "
                            f"{n_train} / {n_valid}")
    if p.psi_max > 0:
        rows = []
        for label in labels:
            f = by_label[label]
            j = data.feature_names.index(f)
            size = len(tables[f]["cuts"]) + 2
            rows.append(np.stack([
                np.bincount(S.bin_index(data.X[:, j], tables[f]), minlength=size),
                np.bincount(S.bin_index(data.X_valid[:, j], tables[f]), minlength=size)]))
        link.send(S.K_COUNTS, np.concatenate(rows, axis=1).astype(np.int64) if rows
                  else np.zeros((2, 0), np.int64))
    msg = S.recv(link, S.K_KEEP, "recv_json")
    keep = msg.get("keep")
    if not isinstance(keep, list) or any(k not in by_label for k in keep) or \
            len(set(keep)) != len(keep):
        raise ProtocolError("sel.keep: expected distinct labels of this platform's features")
    return set(keep)
