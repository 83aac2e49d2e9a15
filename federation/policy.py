"""A node's data-use policy applied to a job: one home for every policy decision.

* :func:`policy_refusal` - why this node refuses a job (algorithm, dataset, cipher, key
  size, the platform's offered columns), checked by the platform's control plane before
  it accepts a proposal and by the runner itself before anything crosses (defence in
  depth); :func:`policy_checks` lists every rule it applied (``fedjoint job validate``).
* :func:`feature_refusal` - the job's per-job column choice (``features`` /
  ``peer_features``) against this node's dataset: the bank is told exactly what is
  wrong with its own choice; the platform answers :data:`NOT_OFFERED` whatever the
  reason, so a refusal never tells the bank which columns exist.
* :func:`role_policy` - the policy as protocol roles read it
  (:class:`parties.common.role.RolePolicy`).
* :func:`make_cipher` - this party's private cipher for a job, derived from the job
  seed so a replay regenerates it exactly.

Key sizes are judged by one :class:`secure_agg.keypolicy.KeyPolicy` built from the
node's ``[policy]`` (:func:`federation.config.key_policy`), the same object the roles
use to judge the peer's key.
"""

from __future__ import annotations

from pathlib import Path

from federation.config import JOB_TYPES, DatasetConfig, JobSpec, NodeConfig, key_policy
from parties import registry
from parties.common.params import close_matches
from parties.common.role import RolePolicy
from secure_agg.keypolicy import KeyPolicyError, private_cipher
from secure_agg.rng import Drbg

#: the platform's one answer to a ``peer_features`` it will not serve: the same for a
#: column that does not exist and one its operator withholds
NOT_OFFERED = "peer_features names a column this platform does not offer"


def policy_refusal(spec: JobSpec, node: NodeConfig) -> str:
    """Why this node's policy refuses ``spec`` ('' if it does not)."""
    for _what, problem in policy_checks(spec, node):
        if problem:
            return problem
    return ""


def policy_checks(spec: JobSpec, node: NodeConfig) -> list[tuple[str, str]]:
    """Every rule of this node's policy that applies to ``spec``, in order, as ``(what
    was checked, why it refuses or '')``; checks that depend on a failed one are left
    out. :func:`policy_refusal` is the first refusal."""
    pol = node.policy
    out = []
    if spec.stages is not None:     # a pipeline: every stage's algorithm, stage by stage
        most = node.limits.max_pipeline_stages
        out.append((f"the pipeline has at most limits.max_pipeline_stages = {most} stages",
                    "" if len(spec.stages) <= most else
                    f"the pipeline has {len(spec.stages)} stages; limits.max_pipeline_stages "
                    f"= {most}"))
    for stage, algorithm in _algorithms(spec):
        allowed = algorithm in pol.allowed_algorithms
        out.append((f"{stage}algorithm {algorithm!r} is allowed by the policy", "" if allowed
                    else f"{stage}algorithm {algorithm!r} is not allowed (allowed: "
                    f"{', '.join(pol.allowed_algorithms) or 'none'})"))
    ds_name = spec.dataset_for(node.party)
    if ds_name not in node.datasets:
        out.append((f"dataset {ds_name!r} is configured",
                    f"no dataset named {ds_name!r} on {node.name}"))
        return out
    if node.party == "platform":
        offered = pol.allowed_datasets is None or ds_name in pol.allowed_datasets
        out.append((f"dataset {ds_name!r} is offered to the peer", "" if offered else
                    f"dataset {ds_name!r} is not offered to the peer"))
    if spec.algorithm != "psi":
        ev = spec.evaluation
        problem = ""
        try:
            key_policy(pol).check(ev.cipher, ev.key_bits)
        except KeyPolicyError as exc:
            hint = {"plain": "; set allow_insecure_test_jobs = true only on test nodes",
                    "test_key": "; a test node sets allow_insecure_test_jobs = true and "
                                "min_key_bits"}.get(exc.rule, "")
            problem = f"{exc}{hint}"
        if not problem and ev.cipher == "ou" and pol.refresh == "standard":
            problem = ("cipher 'ou' is refused: this node's [policy] refresh = 'standard' asks "
                       "for refreshes that hold against a deviating key holder, which OU "
                       "cannot give (docs/ou.md); use cipher 'paillier'")
        lo, hi = key_policy(pol).bits_range(ev.cipher)
        out.append((f"cipher {ev.cipher!r} with {ev.key_bits}-bit keys is allowed and within "
                    f"the key policy ({lo}..{hi} bits)", problem))
    if node.party == "platform" and spec.features_for("platform") is not None:
        out.append(("peer_features are columns this platform offers",
                    feature_refusal(spec, node)))
    return out


def _algorithms(spec: JobSpec) -> list[tuple[str, str]]:
    """(``"stage 'name': "`` or '', algorithm) for each algorithm the job runs."""
    if spec.stages is None:
        return [("", spec.algorithm)]
    return [(f"stage {st['name']!r}: ", st["algorithm"]) for st in spec.stages]


def offered_columns(ds: DatasetConfig) -> list[str]:
    """The feature columns dataset ``ds`` makes usable: its ``columns`` when node.toml
    lists them, else every column of the file but the id and label (read from the
    header only). ``DataError`` if the file cannot be read."""
    if ds.columns is not None:
        return list(ds.columns)
    skip = {ds.id_column, ds.label_column}
    return [c for c in header_columns(ds) if c not in skip]


def header_columns(ds: DatasetConfig) -> list[str]:
    """The column names of ``ds``'s file (or frame), without reading its rows."""
    from federation.data import DataError
    if ds.frame is not None:
        return [str(c) for c in ds.frame.columns]
    path = Path(ds.path)
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    try:
        from federation.config.node import source_format
        fmt = source_format(ds)
        if fmt == "parquet":
            import pyarrow.parquet as pq
            return [str(c) for c in pq.read_schema(path).names]
        if fmt == "duckdb":
            import duckdb
            with duckdb.connect(str(path), read_only=True) as con:
                return [str(c) for c in con.sql(ds.query).columns]
        import pandas as pd
        return [str(c) for c in pd.read_csv(path, dtype=str, nrows=0).columns]
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's problem
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read the header ({first})") from None


def features_not_offered(spec: JobSpec, node: NodeConfig) -> list[str]:
    """The job's columns for this node's side that its dataset does not offer (for the
    node's own log; ``DataError`` if the file cannot be read)."""
    wanted = spec.features_for(node.party)
    if not wanted:
        return []
    offered = set(offered_columns(node.dataset(spec.dataset_for(node.party))))
    return [c for c in wanted if c not in offered]


def feature_refusal(spec: JobSpec, node: NodeConfig) -> str:
    """Why this node cannot train on the columns the job picks for its side ('' if it
    can, or if the job picks none). The platform answers :data:`NOT_OFFERED` for any
    column outside its offer (unknown or withheld alike) and says nothing when its
    file cannot be read (the job's load reports that); the bank names what is wrong."""
    from federation.data import DataError
    wanted = spec.features_for(node.party)
    ds_name = spec.dataset_for(node.party)
    if not wanted or ds_name not in node.datasets:
        return ""
    if node.party == "platform":
        try:
            return NOT_OFFERED if features_not_offered(spec, node) else ""
        except DataError:
            return ""
    ds = node.datasets[ds_name]
    try:
        offered = offered_columns(ds)
    except DataError as exc:
        return str(exc)
    def near(c: str) -> str:
        close = close_matches(c, offered)
        return f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    problems = []
    for c in wanted:
        if c in offered:
            continue
        if c == ds.id_column:
            problems.append(f"{c!r} is the id column")
        elif c == ds.label_column:
            problems.append(f"{c!r} is the label column")
        elif ds.columns is not None:
            problems.append(f"{c!r} is not in [datasets.{ds_name}] columns of "
                            f"{node.file}{near(c)}")
        else:
            problems.append(f"{c!r} is not a column of {ds.path}{near(c)}")
    if not problems:
        return ""
    shown = ", ".join(offered[:20]) + (f", ... ({len(offered)} in all)"
                                       if len(offered) > 20 else "")
    return (f"features: {'; '.join(problems)} (dataset {ds_name!r} offers: "
            f"{shown or 'no feature columns'})")


def role_policy(node: NodeConfig) -> RolePolicy:
    """The node's policy as the protocol roles read it."""
    pol = node.policy
    return RolePolicy(keys=key_policy(pol), reveal_feature_names=pol.reveal_feature_names,
                      refresh=pol.refresh, max_classes=node.limits.max_classes,
                      categorical_tie_order=pol.categorical_tie_order)


def holds_key(spec: JobSpec, party: str) -> bool:
    """Does ``party`` generate a private key for this job (per the registry; a
    pipeline: for one of its stages)?"""
    return any(a not in JOB_TYPES and a != "pipeline" and registry.get(a).holds_key(party)
               for _stage, a in _algorithms(spec))


def make_cipher(spec: JobSpec, node: NodeConfig, root: Drbg):
    """This party's private cipher for the job. The key is derived from the job seed
    (``Drbg(seed).child("paillier")``, ``child("ou")`` for OU) so a replay regenerates
    it exactly."""
    ev = spec.evaluation
    test_key = key_policy(node.policy).check(ev.cipher, ev.key_bits)
    return private_cipher(ev.cipher, ev.key_bits, rng=root.child(ev.cipher),
                          workers=node.workers, insecure_test_key=test_key)
