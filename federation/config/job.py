"""job.toml -> :class:`JobSpec`.

job.toml (submitted at the bank's node)::

    [job]
    name = "sb-2024q1"
    algorithm = "secureboost"       # "psi" | "secureboost" | "logistic_regression" | "score"
    dataset = "loans"               # the bank's dataset
    peer_dataset = "enterprises"    # the platform's dataset
    model = ""                      # "score" jobs: id of the trained model to use
    output = ""                     # "score" jobs: scores CSV path (bank side)
    features = ["x0", "x3"]         # training jobs: the bank's columns to use (default:
                                    # all its dataset offers); part of the agreed spec
    peer_features = ["x1"]          # ... the platform's (never beyond its `columns`)
    [inputs]                        # earlier jobs' outputs this job consumes (name ->
                                    # model id), e.g. binning = "<binning job id>"
    [[stages]]                      # algorithm = "pipeline": its stages (name, algorithm,
                                    # inputs, [stages.params]); see federation.config.stages
    [psi]                           # passed to the PSI module's parameters
    [params]                        # algorithm parameters (validated by the algorithm;
                                    # XGBoost / scikit-learn aliases are resolved here,
                                    # parties.common.params)
    [evaluation]
    test_fraction = 0.2
    valid_fraction = 0.0            # share of the training rows held out for early
                                    # stopping and validation curves (never test rows)
    cipher = "paillier"             # "paillier" | "ou" | "plain" (plain: test policy only;
                                    # ou: the platform's allowed_ciphers must list it)
    key_bits = 2048
    threshold = 0.5
    split_salt = "fedjoint"         # the test split is a keyed hash of the ID: jobs with
                                    # the same salt test on the same enterprises
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from federation.config.stages import PIPELINE, parse_inputs, parse_stages
from federation.config.toml import NAME_RE, ConfigError, _load_toml, _Table
from parties import registry
from parties.common.params import ParamError, UnknownParam, canonical_params, valid_keys
from psi.protocol import PsiParams

#: job types the runner itself implements; every other algorithm is registered in
#: parties.registry and reached only through it
JOB_TYPES = ("psi", "score")
CIPHERS = ("paillier", "ou", "plain")


def algorithm_names() -> list[str]:
    """Every name a job's ``algorithm`` (and a policy's ``allowed_algorithms``) may use."""
    return list(JOB_TYPES) + registry.names()


def trained_algorithm_names() -> list[str]:
    """Algorithms whose model parts a ``score`` job can use."""
    return registry.names("train")


@dataclass
class EvaluationConfig:
    test_fraction: float = 0.2
    valid_fraction: float = 0.0    # of the training rows, for early stopping / curves
    cipher: str = "paillier"
    key_bits: int = 2048
    threshold: float = 0.5
    split_salt: str = "fedjoint"   # same salt -> same train/test split across jobs


@dataclass
class JobSpec:
    """A validated job. ``to_dict`` is what the bank proposes to the platform."""

    name: str
    algorithm: str
    dataset: str                 # the bank's dataset
    peer_dataset: str            # the platform's dataset
    psi: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    model: str = ""              # score jobs: model id (the job id that trained it)
    output: str = ""             # score jobs: bank-side CSV path for scores
    train_algorithm: str = ""    # score jobs: filled at submit from the stored model
    #: training jobs: the bank's / the platform's columns to use, in this order (None:
    #: every column the dataset offers); sent only when set
    features: list[str] | None = None
    peer_features: list[str] | None = None
    #: earlier jobs' outputs this job consumes: input name -> model id (sent when set)
    inputs: dict[str, str] | None = None
    #: algorithm = "pipeline": its stages, ``{name, algorithm, inputs, params}`` each
    #: (canonical params; sent when set)
    stages: list[dict] | None = None
    #: the stages' typed params, parsed once here; never sent
    stage_params: list = field(default_factory=list, repr=False, compare=False)
    #: the algorithm's typed params, parsed once here; never sent (``to_dict`` drops it)
    parsed: Any = field(default=None, repr=False, compare=False)
    #: (alias, canonical key) pairs resolved while parsing [params]; local, never sent
    aliases: list = field(default_factory=list, repr=False, compare=False)

    def dataset_for(self, party: str) -> str:
        return self.dataset if party == "bank" else self.peer_dataset

    def features_for(self, party: str) -> list[str] | None:
        """The columns ``party`` trains on (None: all its dataset offers)."""
        return self.features if party == "bank" else self.peer_features

    @property
    def model_algorithm(self) -> str:
        return self.train_algorithm if self.algorithm == "score" else self.algorithm

    def to_dict(self) -> dict:
        """What the bank proposes (plain values; the typed params stay local)."""
        out = dataclasses.asdict(replace(self, parsed=None, aliases=[], stage_params=[]))
        out.pop("parsed")
        out.pop("aliases")
        out.pop("stage_params")
        for key in _OPTIONAL:          # absent unless set: older specs digest as before
            if out[key] is None:
                del out[key]
        return out

    @property
    def kind(self) -> str:
        """``psi`` | ``score`` (runner built-ins), ``pipeline``, or the registered
        algorithm's kind."""
        if self.algorithm == PIPELINE:
            return PIPELINE
        return self.algorithm if self.algorithm in JOB_TYPES else \
            registry.get(self.algorithm).kind


_JOB_TOP = ("job", "psi", "params", "evaluation", "inputs", "stages")
_JOB_KEYS = ("name", "algorithm", "dataset", "peer_dataset", "model", "output", "features",
             "peer_features")
_OPTIONAL = ("features", "peer_features", "inputs", "stages")


def load_job_spec(path: str | Path) -> JobSpec:
    raw, label = _load_toml(path, "job")
    spec = job_spec_from_dict(raw, label)
    if spec.output and not Path(spec.output).is_absolute():
        spec.output = str(Path(path).resolve().parent / spec.output)
    return spec


def _not_horizontal(top: _Table, label: str) -> None:
    job = top.data.get("job")
    if isinstance(job, dict) and str(job.get("algorithm", "")).startswith("horizontal_"):
        raise ConfigError(f"{label}: job.algorithm = {job['algorithm']!r} is a horizontal "
                          "job (many banks, Flower): run it with `fedjoint horizontal run "
                          f"{label} --config platform.toml` (docs/horizontal.md)")


def job_spec_from_dict(raw: dict, label: str = "job.toml") -> JobSpec:
    """Validate a job from its TOML tables (or :meth:`JobSpec.to_dict` output); the
    algorithm's params are parsed once, here, into ``spec.parsed``."""
    # a peer's proposal may carry any JSON value as its spec: a number or a boolean
    # raised TypeError here (found by fuzzing); _Table names what it got instead
    if isinstance(raw, dict) and "job" not in raw and "algorithm" in raw:  # to_dict() form
        raw = _from_flat(raw)
    top = _Table(label, "", raw)
    _not_horizontal(top, label)
    top.check_keys(_JOB_TOP + ("train_algorithm",))
    j = top.sub("job")
    j.check_keys(_JOB_KEYS + ("train_algorithm",))
    name = j.get("name", str)
    if not NAME_RE.match(name):
        raise j.err("name", f"= {name!r}: expected letters, digits, '.', '_' or '-' "
                    "(at most 64 characters)")
    algorithm = j.choice("algorithm", algorithm_names() + [PIPELINE])
    dataset = j.get("dataset", str)
    peer_dataset = j.get("peer_dataset", str)
    model = j.get("model", str, "")
    output = j.get("output", str, "")
    train_algorithm = j.get("train_algorithm", str, "")
    features = {k: _feature_list(j, k) for k in ("features", "peer_features")}
    if algorithm == "score" and not model:
        raise ConfigError(f"{label}: missing required key job.model (score jobs name the "
                          "trained model to use; see `fedjoint model list`)")
    if algorithm != "score" and (model or output):
        raise j.err("model" if model else "output", "is only used by algorithm = 'score'")
    if train_algorithm and train_algorithm not in trained_algorithm_names():
        raise j.err("train_algorithm", f"= {train_algorithm!r}: expected one of "
                    f"{', '.join(trained_algorithm_names())}")

    psi = dict(top.sub("psi", {}).data)
    params = dict(top.sub("params", {}).data)
    ev = top.sub("evaluation", {})
    ev.check_keys([f.name for f in dataclasses.fields(EvaluationConfig)])
    evaluation = EvaluationConfig(
        test_fraction=ev.get("test_fraction", float, 0.2),
        valid_fraction=ev.get("valid_fraction", float, 0.0),
        cipher=ev.choice("cipher", CIPHERS, "paillier"),
        key_bits=ev.get("key_bits", int, 2048),
        threshold=ev.get("threshold", float, 0.5),
        split_salt=ev.get("split_salt", str, "fedjoint"),
    )
    if not 0.0 <= evaluation.test_fraction < 1.0:
        raise ev.err("test_fraction", f"= {evaluation.test_fraction}: expected a number in "
                     "[0, 1)")
    if not 0.0 <= evaluation.valid_fraction < 1.0:
        raise ev.err("valid_fraction", f"= {evaluation.valid_fraction}: expected a number in "
                     "[0, 1) (a share of the training rows)")
    if evaluation.key_bits < 256 or evaluation.key_bits % 8:
        raise ev.err("key_bits", f"= {evaluation.key_bits}: expected a multiple of 8, >= 256 "
                     "(2048 or more outside tests)")
    if not 0.0 < evaluation.threshold < 1.0:
        raise ev.err("threshold", "expected a number in (0, 1)")

    spec = JobSpec(name=name, algorithm=algorithm, dataset=dataset, peer_dataset=peer_dataset,
                   psi=psi, params=params, evaluation=evaluation, model=model, output=output,
                   train_algorithm=train_algorithm, **features)
    validate_psi_params(spec, label)
    spec.inputs = parse_inputs(raw.get("inputs"), label)
    if spec.inputs is not None and spec.kind not in ("train", "transform", PIPELINE):
        raise ConfigError(f"{label}: [inputs] is only used by training, transform and "
                          f"pipeline jobs (not algorithm = {algorithm!r})")
    if raw.get("stages") is not None and algorithm != PIPELINE:
        raise ConfigError(f"{label}: [[stages]] needs algorithm = 'pipeline' (this job's "
                          f"algorithm is {algorithm!r})")
    for key, value in features.items():
        if value is not None and spec.kind not in ("train", "transform", PIPELINE):
            why = ("uses the columns its model was trained on" if algorithm == "score" else
                   "trains nothing")
            raise j.err(key, f"is only used by training jobs (a {algorithm!r} job {why})")
    if algorithm == PIPELINE:
        if params:
            raise ConfigError(f"{label}: [params] is not used by a pipeline (each stage has "
                              "its [stages.params])")
        spec.stages, spec.stage_params = parse_stages(raw.get("stages"), label, spec.inputs,
                                                      evaluation.valid_fraction)
        return spec
    if algorithm in JOB_TYPES:
        if params:
            raise ConfigError(f"{label}: [params] is not used by algorithm = {algorithm!r} "
                              "(remove it)")
        return spec
    algo = registry.get(algorithm)
    missing = algo.missing_inputs(spec.inputs)
    if missing:
        raise ConfigError(f"{label}: {algorithm} needs the input(s) {missing}: name an earlier "
                          f"job's output in [inputs] ({missing[0]} = \"<model id>\") or run "
                          "it as a pipeline stage")
    if "cipher" in params or "key_bits" in params:
        raise ConfigError(f"{label}: [params] {'cipher' if 'cipher' in params else 'key_bits'} "
                          "belongs in [evaluation] (set the cipher and key size once there)")
    try:
        # aliases (eta, n_estimators, ...) become canonical keys once, here: the canonical
        # table is what is proposed, stored and recorded
        spec.params, spec.aliases = canonical_params(algo.params, params, f"{label} [params]")
        spec.parsed = algo.parse_params(spec.params, f"{label} [params]")
    except UnknownParam as exc:
        raise ConfigError(f"{exc} (valid keys for {algorithm}: "
                          f"{valid_keys(algo.params)})") from None
    except ParamError as exc:
        raise ConfigError(str(exc)) from None
    needs = getattr(spec.parsed, "needs_validation_split", lambda: "")()
    if needs and evaluation.valid_fraction <= 0:
        raise ConfigError(f"{label} [evaluation]: valid_fraction: [params] {needs} needs a "
                          "validation split; set valid_fraction (e.g. 0.1 of the training "
                          "rows)")
    return spec


def _feature_list(j: _Table, key: str) -> list[str] | None:
    cols = j.get(key, "str_list", None)
    if cols is None:
        return None
    if not cols:
        raise j.err(key, "= []: name at least one column (or leave the key out to use all)")
    if any(not c.strip() for c in cols):
        raise j.err(key, "contains an empty column name")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise j.err(key, f"names {', '.join(repr(c) for c in dup)} more than once")
    return list(cols)


def _from_flat(d: dict) -> dict:
    return {"job": {k: d[k] for k in _JOB_KEYS + ("train_algorithm",) if d.get(k) not in
                    (None, "")},
            "psi": d.get("psi") or {}, "params": d.get("params") or {},
            "evaluation": d.get("evaluation") or {},
            **{k: d[k] for k in ("inputs", "stages") if d.get(k) is not None}}


def parse_psi_params(values: dict, where: str) -> PsiParams:
    """The typed [psi] table (``ConfigError`` names the key)."""
    from parties.common.params import from_dict
    try:
        params = from_dict(PsiParams, values, where)
        params.validate()
    except ParamError as exc:
        raise ConfigError(str(exc)) from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return params


def validate_psi_params(spec: JobSpec, label: str) -> PsiParams:
    params = parse_psi_params(spec.psi, f"{label} [psi]")
    if "check_subgroup" in spec.psi:
        raise ConfigError(f"{label}: [psi] check_subgroup is each node's own choice for "
                          "the points it receives ([policy] psi_check_subgroup in its "
                          "node.toml), not the job's; remove it")
    for local_only in ("key_dir", "cache_dir"):
        if spec.psi.get(local_only):
            raise ConfigError(f"{label}: [psi] {local_only} is chosen by each node (under its "
                              "data_dir), not by the job; remove it")
    if spec.algorithm != "psi" and params.mode == "cardinality":
        raise ConfigError(f"{label}: psi.mode = 'cardinality' reveals no rows; "
                          f"algorithm = {spec.algorithm!r} needs 'balanced' or 'unbalanced'")
    return params
