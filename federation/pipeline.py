"""Pipelines (``algorithm = "pipeline"``): several algorithms after one PSI, in one
transcript, each stage consuming earlier stages' outputs by name; and the inputs a job
takes from earlier jobs (``[inputs]``).

The runner (:func:`federation.runner.run_job_side`) loads the data, runs PSI, checks
the intersection and agrees the train / validation / test split once; then
:func:`run_stages` runs the stages in order, each exactly as a single job of its
algorithm would train (:func:`federation.runner.train_stage`), over the same link:

* before PSI, one ``job.stage`` with the whole plan (every stage's name, algorithm and
  protocol version): the two nodes stop unless they agree;
* a stage boundary first: both sides send ``job.stage`` (index, name, algorithm, its
  protocol version) and refuse to go on unless the peer is at the same stage - the
  transcript records where every stage starts;
* the stage's own protocol (its role's ``train``; a ``train`` algorithm is then
  evaluated on the test rows), its random streams derived from ``stage/<name>``;
* ``job.model_digest``: the two parts of the stage's output are bound to each other.

A stage's ``inputs`` map an input name to an earlier stage (or a job ``[inputs]``
entry); the role receives this party's part of it in ``PartyData.inputs``. An input
named ``selection`` also restricts the stage's columns, on each side, to that part's
``feature_names`` (a ``selection`` stage's kept columns).

What crosses beyond the stages' own protocols: ``job.stage`` (names and versions, no
data), ``job.model_digest`` per stage, and for ``[inputs]`` one ``job.inputs``
before PSI (per input: the model id, its algorithm, the digests of both parts), so
neither side uses a part the other does not hold. What each party learns: what each
stage's protocol documents, nothing more.

Resume (docs/resume.md): a pipeline checkpoints where its stages do (SecureBoost trees,
LR epochs: labelled ``<stage>/train``) and after each stage (``<stage>/done``, once its
parts are bound); interrupted, it resumes from the last checkpoint both nodes hold -
the earlier stages are played back locally from the transcript, nothing is sent twice,
and the final parts are bit-identical to an uninterrupted run. Before its first
checkpoint it fails. Each stage's outputs are stored (model id ``<job id>.<stage>``)
when the whole pipeline is done.
"""

from __future__ import annotations

import hashlib
import time

from federation import job_protocol as J
from federation.config import JobSpec, NodeConfig
from federation.config.stages import PIPELINE, SELECTION_INPUT, STAGE_NAME_RE
from federation.jobparts import JobFailed, Rows, load_model, select_columns, unbound_digest
from federation.link import Link, ProtocolContext
from parties import registry
from parties.common.artifact import ModelPart

__all__ = ["PIPELINE", "agree_plan", "load_inputs", "pipeline_labels", "run_stages", "stage_algorithms"]


def stage_algorithms(spec: JobSpec) -> list:
    return [registry.get(st["algorithm"]) for st in spec.stages or []]


def pipeline_labels(spec: JobSpec) -> tuple[str, str] | None:
    """The label kind the stages need (config checked that they agree), or None."""
    for st, params in zip(spec.stages or [], spec.stage_params, strict=True):
        labels = registry.get(st["algorithm"]).labels_for(params)
        if labels is not None:
            return labels
    return None


def load_inputs(spec: JobSpec, node: NodeConfig, link: Link) -> dict[str, ModelPart]:
    """This party's parts of the job's ``[inputs]``, checked to be its own parts of
    the named outputs and to pair with the peer's (``job.inputs``, before PSI)."""
    parts, own = {}, {}
    for name, ref in sorted((spec.inputs or {}).items()):
        part = load_model(node, ref)
        if part.party != node.party or not names_job(ref, part.job_id):
            raise JobFailed(f"input {name} = {ref!r}: the stored part on {node.name} is not "
                            f"this {node.party}'s part of job {ref!r}")
        parts[name] = part
        own[name] = {"model": ref, "algorithm": part.algorithm,
                     "own_digest": unbound_digest(part), "peer_digest": part.peer_part_digest}
    link.send(J.K_INPUTS, own)
    peer = link.recv_json(J.K_INPUTS)
    if not isinstance(peer, dict) or sorted(peer) != sorted(own):
        raise JobFailed("the parties disagree on the job's [inputs]")
    for name, mine in own.items():
        theirs = peer[name] if isinstance(peer[name], dict) else {}
        if theirs.get("model") != mine["model"] or theirs.get("algorithm") != mine["algorithm"]:
            raise JobFailed(f"input {name}: the peer's part is of {theirs.get('model')!r} "
                            f"({theirs.get('algorithm')!r}), here {mine['model']!r} "
                            f"({mine['algorithm']!r})")
        if theirs.get("own_digest") != mine["peer_digest"] or \
                theirs.get("peer_digest") != mine["own_digest"]:
            raise JobFailed(f"input {name} = {mine['model']!r}: the peer's part is not the one "
                            "this node's part was made with (digest mismatch)")
    return parts


def names_job(ref: str, job_id: str) -> bool:
    """``ref`` names a part of job ``job_id``: the job itself or one of its stages."""
    if ref == job_id:
        return True
    head, _, stage = ref.rpartition(".")
    return head == job_id and bool(STAGE_NAME_RE.match(stage))


def run_stages(spec: JobSpec, node: NodeConfig, link: Link, root, rows: Rows, res,
               job_inputs: dict[str, ModelPart] | None, *, labels, log, progress,
               train, bind, checkpoint) -> None:
    """Run the pipeline's stages on ``rows`` and fill ``res`` (the runner's JobResult):
    ``stages`` (per stage: name, algorithm, model, metrics, history, digests), the last
    stage's metrics and history, the last evaluated stage's test scores, and the
    pipeline's result digest (over every stage's part digest). ``train`` / ``bind``:
    the runner's :func:`~federation.runner.train_stage` and
    :func:`~federation.runner.bind`, so a stage trains exactly as a single job;
    ``checkpoint(label, step, state)``: the runner's hook (a stage's own checkpoints are
    labelled ``<stage>/train``, and one ``<stage>/done`` follows each stage's binding)."""
    outputs: dict[str, ModelPart] = {}
    res.stages = []
    n = len(spec.stages)
    for i, (st, params) in enumerate(zip(spec.stages, spec.stage_params, strict=True)):
        name, algo = st["name"], registry.get(st["algorithm"])
        _boundary(link, i, st, algo.version)
        log("pipeline.stage", {"index": i, "stage": name, "algorithm": algo.name})
        if progress:
            progress(f"stage {i + 1}/{n} {name}", i / n)
        inputs = {k: outputs[ref] if ref in outputs else (job_inputs or {})[ref]
                  for k, ref in st["inputs"].items()}
        stage_rows = rows
        if SELECTION_INPUT in inputs:
            stage_rows = _restrict(rows, inputs[SELECTION_INPUT], name, node.party)
        sroot = root.child(f"stage/{name}")

        def ctx(label: str, _r=sroot, _n=name) -> ProtocolContext:
            return ProtocolContext(
                link=link, job_id=link.job_id, rng=_r.child(label), workers=node.workers,
                log=log, progress=progress,
                checkpoint=lambda step, state: checkpoint(f"{_n}/{label}", step, state))

        t = time.perf_counter()
        run = train(algo, params, spec, node, ctx, sroot, stage_rows, labels,
                          inputs, lambda _s: None)
        peer = bind(link, run.model)
        # every message of the stage has crossed and been consumed on both sides: a
        # consistent cut, from which a resumed pipeline goes on with the next stage
        checkpoint(f"{name}/done", i, {"model_digest": run.model.digest(),
                                       "peer_model_digest": peer})
        outputs[name] = run.model
        run.metrics.update({"n_train": len(stage_rows.train), "n_test": len(stage_rows.test),
                            "features": len(stage_rows.train.feature_names)})
        res.stages.append({"name": name, "algorithm": algo.name, "model": run.model,
                           "metrics": run.metrics, "history": run.history,
                           "timings": run.timings, "model_digest": run.model.digest(),
                           "peer_model_digest": peer})
        res.timings.update({f"{name}.{k}": v for k, v in run.timings.items()})
        res.timings[name] = time.perf_counter() - t
        if run.test_scores is not None:
            res.test_scores = run.test_scores
        log("pipeline.stage_done", {"index": i, "stage": name,
                                    "digest": res.stages[-1]["model_digest"]})
    last = res.stages[-1]
    res.history = list(last["history"])
    res.metrics.update(last["metrics"])
    res.metrics.update({"stages": {s["name"]: {"algorithm": s["algorithm"], **s["metrics"]}
                                   for s in res.stages},
                        "intersection": res.intersection, "n_train": res.n_train,
                        "n_test": res.n_test})
    res.model_digest = result_digest([(s["name"], s["model_digest"]) for s in res.stages])
    res.peer_model_digest = result_digest([(s["name"], s["peer_model_digest"])
                                           for s in res.stages])


def result_digest(pairs: list[tuple[str, str]]) -> str:
    """The pipeline's result digest (what its outcome statement binds)."""
    h = hashlib.sha256(b"fedjoint-pipeline-result-v1")
    for name, digest in pairs:
        for part in (name.encode(), digest.encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()


def agree_plan(link: Link, spec: JobSpec) -> None:
    """Before PSI: both sides state every stage (name, algorithm, protocol version) in
    one ``job.stage`` and stop unless they agree - a node speaking another version of a
    stage's protocol fails the job before anything else crosses."""
    mine = {"plan": [{"stage": st["name"], "algorithm": st["algorithm"],
                      "version": registry.get(st["algorithm"]).version}
                     for st in spec.stages or []]}
    link.send(J.K_STAGE, mine)
    peer = link.recv_json(J.K_STAGE)
    if peer != mine:
        theirs = peer.get("plan") if isinstance(peer, dict) else None
        raise JobFailed(f"the parties disagree on the pipeline's stages or their protocol "
                        f"versions (here {mine['plan']}, at the peer {theirs})"[:500])


def _boundary(link: Link, index: int, st: dict, version: str) -> None:
    mine = {"index": index, "stage": st["name"], "algorithm": st["algorithm"],
            "version": version}
    link.send(J.K_STAGE, mine)
    peer = link.recv_json(J.K_STAGE)
    if peer != mine:
        raise JobFailed(f"the parties are at different pipeline stages (here {mine}, at the "
                        f"peer {peer})"[:500])


def _restrict(rows: Rows, part: ModelPart, stage: str, party: str) -> Rows:
    """The rows restricted to the columns a selection part keeps (its order)."""
    names = list(part.feature_names)
    if part.party != party:
        raise JobFailed(f"stage {stage!r}: its selection input is not this {party}'s part")
    if not names:
        raise JobFailed(f"stage {stage!r}: its selection input keeps none of the {party}'s "
                     "columns")
    have = rows.train.feature_names
    if any(c not in have for c in names):
        raise JobFailed(f"stage {stage!r}: its selection input names columns the {party}'s "
                     "rows do not have")
    return Rows(*(select_columns(d, names, d.name) for d in (rows.train, rows.valid,
                                                             rows.test)))
