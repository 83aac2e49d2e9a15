"""Pipelines and inputs in job.toml: ``[[stages]]`` and ``[inputs]`` -> checked dicts.

A pipeline job (``algorithm = "pipeline"``) runs several algorithms after one PSI, in
one transcript; each stage may consume earlier stages' outputs by name::

    [job]
    name = "scorecard"
    algorithm = "pipeline"
    dataset = "loans"
    peer_dataset = "enterprises"

    [[stages]]
    name = "bin"                     # letters, digits, '_' and '-' (a model id suffix)
    algorithm = "binning"
    [stages.params]
    method = "monotonic"

    [[stages]]
    name = "sel"
    algorithm = "selection"
    inputs = { binning = "bin" }     # input name -> an earlier stage (or a job [inputs])
    [stages.params]
    iv_min = 0.02

    [[stages]]
    name = "lr"
    algorithm = "logistic_regression"
    inputs = { selection = "sel" }   # an input named "selection" restricts the columns

A single job (or a pipeline) may take an earlier job's output as an input::

    [inputs]
    binning = "credit-binning-20261202..."    # a model id (`fedjoint model list`)

Everything here is checked before the job is proposed and again when the platform
considers it: an unknown algorithm, a stage referencing an output no earlier stage
produces, bad params - one message naming ``stages[i] (name)`` and the key.
"""

from __future__ import annotations

import re

from federation.config.toml import ConfigError, _Table
from parties import registry
from parties.common.params import ParamError, UnknownParam, canonical_params, valid_keys

PIPELINE = "pipeline"
#: at most this many stages in one job (also bounded per node: limits.max_pipeline_stages)
MAX_STAGES = 64
STAGE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")
INPUT_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_STAGE_KEYS = ("name", "algorithm", "inputs", "params")
#: the runner's input that restricts a stage's columns to the features it lists
SELECTION_INPUT = "selection"


def stage_algorithms() -> list[str]:
    """Algorithms a stage may run: the registered train and transform algorithms."""
    return registry.names("train") + registry.names("transform")


def parse_inputs(raw, label: str) -> dict[str, str] | None:
    """``[inputs]``: input name -> model id of an earlier job's output (None if absent)."""
    if raw is None:
        return None
    t = _Table(label, "inputs", raw)
    out = {}
    for name in t.data:
        if not INPUT_NAME_RE.match(str(name)):
            raise t.err(str(name), "is not an input name (lowercase letters, digits, '_')")
        ref = t.get(name, str)
        if not ref or "/" in ref or ref.startswith(".") or len(ref) > 200:
            raise t.err(name, f"= {ref!r}: expected a model id (see `fedjoint model list`)")
        out[name] = ref
    if not out:
        raise ConfigError(f"{label}: [inputs] is empty (name at least one, or remove it)")
    return out


def parse_stages(raw, label: str, job_inputs: dict[str, str] | None, valid_fraction: float
                 ) -> tuple[list[dict], list]:
    """``[[stages]]`` -> (canonical stage dicts as proposed, their typed params)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{label}: algorithm = 'pipeline' needs [[stages]] (at least one "
                          "stage with name and algorithm)")
    if len(raw) > MAX_STAGES:
        raise ConfigError(f"{label}: {len(raw)} stages; at most {MAX_STAGES}")
    stages, parsed, seen = [], [], []
    kinds: dict[str, str] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{label}: stages[{i}] must be a table ([[stages]])")
        t = _Table(label, f"stages[{i}]", item)
        t.check_keys(_STAGE_KEYS)
        name = t.get("name", str)
        if not STAGE_NAME_RE.match(name):
            raise t.err("name", f"= {name!r}: expected letters, digits, '_' or '-' (at most "
                        "32 characters, no '.')")
        where = f"{label}: stages[{i}] ({name})"
        if name in seen:
            raise ConfigError(f"{where}: the name {name!r} is used by an earlier stage")
        if t.data.get("algorithm") == "evaluate":
            raise ConfigError(f"{where}: 'evaluate' is not a stage: every train stage is "
                              "evaluated on the job's test rows (its metrics are in "
                              "metrics.stages.<name>); remove this stage")
        algorithm = t.choice("algorithm", stage_algorithms())
        inputs = {}
        for key, ref in t.sub("inputs", {}).data.items():
            if not INPUT_NAME_RE.match(str(key)):
                raise ConfigError(f"{where}: inputs.{key} is not an input name (lowercase "
                                  "letters, digits, '_')")
            if not isinstance(ref, str) or not (ref in seen or ref in (job_inputs or {})):
                known = ", ".join(seen + sorted(job_inputs or {})) or "none"
                raise ConfigError(f"{where}: inputs.{key} = {ref!r}: no earlier stage (or job "
                                  f"[inputs] entry) is named {ref!r} (known: {known})")
            inputs[key] = ref
        missing = registry.get(algorithm).missing_inputs(inputs)
        if missing:
            raise ConfigError(f"{where}: {algorithm} needs the input(s) {missing}, e.g. "
                              f"inputs = {{ {missing[0]} = \"<an earlier stage>\" }}")
        params, typed = _params(algorithm, t.sub("params", {}).data, f"{where} [params]")
        needs = getattr(typed, "needs_validation_split", lambda: "")()
        if needs and valid_fraction <= 0:
            raise ConfigError(f"{where} [params] {needs} needs a validation split; set "
                              "[evaluation] valid_fraction (e.g. 0.1 of the training rows)")
        labels = registry.get(algorithm).labels_for(typed)
        if labels is not None:
            kinds.setdefault(labels[0], name)
        stages.append({"name": name, "algorithm": algorithm, "inputs": inputs,
                       "params": params})
        parsed.append(typed)
        seen.append(name)
    if len(kinds) > 1:
        raise ConfigError(f"{label}: the stages need different labels: " + ", ".join(
            f"{k} (stage {s!r})" for k, s in kinds.items()))
    return stages, parsed


def _params(algorithm: str, values: dict, where: str):
    algo = registry.get(algorithm)
    if "cipher" in values or "key_bits" in values:
        raise ConfigError(f"{where}: {'cipher' if 'cipher' in values else 'key_bits'} "
                          "belongs in [evaluation] (one cipher and key size for the job)")
    try:
        params, _aliases = canonical_params(algo.params, dict(values), where)
        return params, algo.parse_params(params, where)
    except UnknownParam as exc:
        raise ConfigError(f"{exc} (valid keys for {algorithm}: "
                          f"{valid_keys(algo.params)})") from None
    except ParamError as exc:
        raise ConfigError(str(exc)) from None
