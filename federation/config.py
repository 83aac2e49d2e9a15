"""node.toml and job.toml -> validated dataclasses.

Every error is a :class:`ConfigError` whose message names the file, the dotted key and
what was expected, with the closest valid key when a key looks like a typo::

    node.toml: [policy] unknown key 'min_key_bit'; did you mean 'min_key_bits'?
    job.toml: job.algorithm = 'xgb': expected one of 'psi', 'secureboost', ...

node.toml (one per party)::

    [node]
    party = "bank"                 # "bank" | "platform"
    name = "bank-a"                # shown to the peer, used as the channel sender name
    listen = "0.0.0.0:7443"        # the gRPC channel (mutual TLS)
    admin = "127.0.0.1:0"          # local admin endpoint (loopback only; 0 = any port)
    data_dir = "bank-data"         # SQLite job store, models, logs, vault (relative to
                                   # this file)
    [keys]
    tls_key = "keys/tls.key"       # from `fedjoint keys init`
    tls_cert = "keys/tls.crt"
    signing_key = "keys/signing.key"
    [peer]
    name = "platform-b"
    address = "platform.example:7443"
    cert = "keys/platform-b.tls.crt"       # the peer's certificate (public file)
    cert_fingerprint = "AB:CD:..."         # printed by the peer's `fedjoint keys init`
    signing_public_key = "keys/platform-b.sign.pub"   # or its 64 hex digits
    [datasets.loans]
    path = "data/bank.csv"          # CSV or Parquet
    id_column = "id"
    label_column = "y"              # bank only
    columns = ["x0", "x1"]          # usable feature columns (default: all others)
    [policy]
    allowed_algorithms = ["psi", "secureboost", "logistic_regression", "score"]
    min_key_bits = 2048
    min_intersection = 100
    require_approval = false
    allow_insecure_test_jobs = false
    reveal_feature_names = false
    allowed_datasets = ["loans"]    # which local datasets the peer may name (default all)
    max_concurrent_jobs = 2

job.toml (submitted at the bank's node)::

    [job]
    name = "sb-2024q1"
    algorithm = "secureboost"       # "psi" | "secureboost" | "logistic_regression" | "score"
    dataset = "loans"               # the bank's dataset
    peer_dataset = "enterprises"    # the platform's dataset
    model = ""                      # "score" jobs: id of the trained model to use
    output = ""                     # "score" jobs: scores CSV path (bank side)
    [psi]                           # passed to the PSI module's parameters
    [params]                        # algorithm parameters (validated by the algorithm)
    [evaluation]
    test_fraction = 0.2
    valid_fraction = 0.0            # share of the training rows held out for early
                                    # stopping and validation curves (never test rows)
    cipher = "paillier"             # "paillier" | "plain" (plain: test policy only)
    key_bits = 2048
    threshold = 0.5
    split_salt = "fedjoint"         # the test split is a keyed hash of the ID: jobs with
                                    # the same salt test on the same enterprises
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import ipaddress
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PARTIES = ("bank", "platform")
ALGORITHMS = ("psi", "secureboost", "logistic_regression", "score")
TRAINING_ALGORITHMS = ("secureboost", "logistic_regression")
CIPHERS = ("paillier", "plain")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration file is missing, malformed or has an invalid value."""


# --------------------------------------------------------------------------- helpers


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Table:
    """A TOML table being validated: tracks the file, the dotted path and used keys."""

    def __init__(self, file: str, path: str, data: Any):
        self.file, self.path = file, path
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: [{path}] must be a table, got {_tname(data)}")
        self.data = data

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where(key)} {msg}")

    def check_keys(self, valid) -> None:
        for key in self.data:
            if key not in valid:
                raise ConfigError(f"{self.file}: [{self.path}] unknown key {key!r}"
                                  f"{_suggest(key, valid)}")

    def get(self, key: str, kind, default=dataclasses.MISSING):
        if key not in self.data:
            if default is dataclasses.MISSING:
                raise ConfigError(f"{self.file}: missing required key {self.where(key)} "
                                  f"(expected {_kind_name(kind)})")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool):
            raise self.err(key, f"= {value!r}: expected an integer")
        if kind == "str_list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.err(key, f"= {value!r}: expected a list of strings")
            return list(value)
        if not isinstance(value, kind):
            raise self.err(key, f"= {value!r}: expected {_kind_name(kind)}")
        return value

    def choice(self, key: str, choices, default=dataclasses.MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            opts = ", ".join(repr(c) for c in choices)
            raise self.err(key, f"= {value!r}: expected one of {opts}"
                           f"{_suggest(str(value), choices)}")
        return value

    def sub(self, key: str, default: dict | None = None) -> _Table:
        if key not in self.data:
            if default is None:
                raise ConfigError(f"{self.file}: missing table [{self.where(key)}]")
            return _Table(self.file, self.where(key), default)
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.err(key, f": expected a table [{self.where(key)}], got {_tname(value)}")
        return _Table(self.file, self.where(key), value)


def _tname(v) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _kind_name(kind) -> str:
    if kind == "str_list":
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table", list: "a list"}.get(kind, str(kind))


def _load_toml(path: str | Path, what: str) -> tuple[dict, str]:
    p = Path(path)
    label = str(path)
    if not p.exists():
        raise ConfigError(f"{label}: {what} file not found")
    if p.is_dir():
        raise ConfigError(f"{label}: is a directory, expected a {what} file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read {what} file ({exc})") from None
    try:
        return tomllib.loads(text), label
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML ({exc})") from None


def parse_address(value: str, file: str, key: str, *, loopback: bool = False
                  ) -> tuple[str, int]:
    """``host:port`` -> (host, port); errors name file and key."""
    m = re.match(r"^\[?([^\[\]]+?)\]?:(\d+)$", value or "")
    if not m:
        raise ConfigError(f"{file}: {key} = {value!r}: expected host:port "
                          f"(e.g. '127.0.0.1:7443')")
    host, port = m.group(1), int(m.group(2))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{file}: {key} = {value!r}: port must be 0-65535")
    if loopback:
        try:
            ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{file}: {key} = {value!r}: the admin endpoint must listen on "
                              f"a loopback address (127.0.0.1 or ::1)")
    return host, port


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


# --------------------------------------------------------------------------- node.toml


@dataclass
class DatasetConfig:
    name: str
    path: Path
    id_column: str
    label_column: str | None = None
    columns: list[str] | None = None   # None: every column but id and label


@dataclass
class PeerConfig:
    name: str
    address: str
    cert_fingerprint: str
    signing_public_key: str          # 64 hex digits, or the path of the peer's .sign.pub
    cert: Path                       # the peer's certificate file (its .tls.crt)


@dataclass
class KeysConfig:
    tls_key: Path
    tls_cert: Path
    signing_key: Path


@dataclass
class PolicyConfig:
    allowed_algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    min_key_bits: int = 2048
    min_intersection: int = 100
    require_approval: bool = False
    allow_insecure_test_jobs: bool = False
    reveal_feature_names: bool = False
    allowed_datasets: list[str] | None = None   # None: every configured dataset
    max_concurrent_jobs: int = 2


@dataclass
class ChannelConfig:
    deadline_s: float = 30.0       # a peer silent this long is reported gone
    heartbeat_s: float = 2.0
    connect_timeout_s: float = 10.0


@dataclass
class NodeConfig:
    file: Path
    party: str
    name: str
    listen: str
    admin: str
    data_dir: Path
    keys: KeysConfig
    peer: PeerConfig
    datasets: dict[str, DatasetConfig]
    policy: PolicyConfig
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    workers: int = 1

    @property
    def peer_party(self) -> str:
        return "platform" if self.party == "bank" else "bank"

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"{self.file}: no dataset {name!r} in [datasets]"
                              f"{_suggest(name, self.datasets)} "
                              f"(configured: {', '.join(sorted(self.datasets)) or 'none'})")
        return self.datasets[name]


_NODE_TOP = ("node", "keys", "peer", "datasets", "policy", "channel")


def load_node_config(path: str | Path) -> NodeConfig:
    raw, label = _load_toml(path, "node config")
    return node_config_from_dict(raw, label, base=Path(path).resolve().parent,
                                 file=Path(path).resolve())


def node_config_from_dict(raw: dict, label: str, base: Path, file: Path | None = None
                          ) -> NodeConfig:
    top = _Table(label, "", raw)
    top.check_keys(_NODE_TOP)
    n = top.sub("node")
    n.check_keys(("party", "name", "listen", "admin", "data_dir", "workers"))
    party = n.choice("party", PARTIES)
    name = n.get("name", str)
    if not NAME_RE.match(name):
        raise n.err("name", f"= {name!r}: expected letters, digits, '.', '_' or '-' "
                    "(at most 64 characters)")
    listen = n.get("listen", str)
    parse_address(listen, label, "node.listen")
    admin = n.get("admin", str, "127.0.0.1:0")
    parse_address(admin, label, "node.admin", loopback=True)
    data_dir = _resolve(base, n.get("data_dir", str))
    workers = n.get("workers", int, 1)
    if workers < 1:
        raise n.err("workers", f"= {workers}: expected an integer >= 1")

    k = top.sub("keys")
    k.check_keys(("tls_key", "tls_cert", "signing_key"))
    keys = KeysConfig(*(_resolve(base, k.get(x, str))
                        for x in ("tls_key", "tls_cert", "signing_key")))

    p = top.sub("peer")
    p.check_keys(("name", "address", "cert_fingerprint", "signing_public_key", "cert"))
    peer_address = p.get("address", str)
    parse_address(peer_address, label, "peer.address")
    fp = p.get("cert_fingerprint", str).strip()
    hexfp = re.sub(r"[\s:]", "", fp[7:] if fp.lower().startswith("sha256:") else fp)
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", hexfp):
        raise p.err("cert_fingerprint", f"= {fp!r}: expected the peer certificate's SHA-256 "
                    "fingerprint as printed by `fedjoint keys init` (64 hex digits, colons "
                    "optional)")
    fp = ":".join(hexfp[i:i + 2].upper() for i in range(0, 64, 2))
    cert = p.get("cert", str)
    spk = p.get("signing_public_key", str).strip()
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", spk):
        spk = str(_resolve(base, spk))
    peer = PeerConfig(name=p.get("name", str), address=peer_address, cert_fingerprint=fp,
                      signing_public_key=spk, cert=_resolve(base, cert))
    if not NAME_RE.match(peer.name):
        raise p.err("name", f"= {peer.name!r}: expected letters, digits, '.', '_' or '-'")
    if peer.name == name:
        raise p.err("name", f"= {peer.name!r}: the peer must have a different name than "
                    "node.name")

    datasets: dict[str, DatasetConfig] = {}
    ds_top = top.sub("datasets", {})
    for ds_name in ds_top.data:
        d = ds_top.sub(ds_name)
        d.check_keys(("path", "id_column", "label_column", "columns"))
        label_col = d.get("label_column", str, None)
        if label_col is not None and party != "bank":
            raise d.err("label_column", "is only allowed on the bank's node (the platform "
                        "holds no labels)")
        cols = d.get("columns", "str_list", None)
        idc = d.get("id_column", str, "id")
        if cols is not None:
            for c in (idc, label_col):
                if c is not None and c in cols:
                    raise d.err("columns", f"must not contain the id/label column {c!r}")
            if len(set(cols)) != len(cols):
                raise d.err("columns", "contains duplicate names")
        datasets[ds_name] = DatasetConfig(ds_name, _resolve(base, d.get("path", str)), idc,
                                          label_col, cols)

    pol = top.sub("policy", {})
    pf = {f.name for f in dataclasses.fields(PolicyConfig)}
    pol.check_keys(pf)
    policy = PolicyConfig()
    algs = pol.get("allowed_algorithms", "str_list", policy.allowed_algorithms)
    for a in algs:
        if a not in ALGORITHMS:
            raise pol.err("allowed_algorithms", f"contains {a!r}: expected names from "
                          f"{', '.join(ALGORITHMS)}{_suggest(a, ALGORITHMS)}")
    policy.allowed_algorithms = algs
    policy.min_key_bits = pol.get("min_key_bits", int, 2048)
    if policy.min_key_bits < 256:
        raise pol.err("min_key_bits", f"= {policy.min_key_bits}: expected >= 256")
    policy.min_intersection = pol.get("min_intersection", int, 100)
    if policy.min_intersection < 1:
        raise pol.err("min_intersection", "expected an integer >= 1")
    for b in ("require_approval", "allow_insecure_test_jobs", "reveal_feature_names"):
        setattr(policy, b, pol.get(b, bool, False))
    allowed = pol.get("allowed_datasets", "str_list", None)
    if allowed is not None:
        for a in allowed:
            if a not in datasets:
                raise pol.err("allowed_datasets", f"names {a!r}, which is not in [datasets]"
                              f"{_suggest(a, datasets)}")
    policy.allowed_datasets = allowed
    policy.max_concurrent_jobs = pol.get("max_concurrent_jobs", int, 2)
    if policy.max_concurrent_jobs < 1:
        raise pol.err("max_concurrent_jobs", "expected an integer >= 1")

    ch = top.sub("channel", {})
    ch.check_keys(("deadline_s", "heartbeat_s", "connect_timeout_s"))
    channel = ChannelConfig(ch.get("deadline_s", float, 30.0), ch.get("heartbeat_s", float, 2.0),
                            ch.get("connect_timeout_s", float, 10.0))
    for fname in ("deadline_s", "heartbeat_s", "connect_timeout_s"):
        if getattr(channel, fname) <= 0:
            raise ch.err(fname, "expected a positive number of seconds")

    return NodeConfig(file=file or Path(label), party=party, name=name, listen=listen,
                      admin=admin, data_dir=data_dir, keys=keys, peer=peer, datasets=datasets,
                      policy=policy, channel=channel, workers=workers)


# --------------------------------------------------------------------------- job.toml


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

    def dataset_for(self, party: str) -> str:
        return self.dataset if party == "bank" else self.peer_dataset

    @property
    def model_algorithm(self) -> str:
        return self.train_algorithm if self.algorithm == "score" else self.algorithm

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_JOB_TOP = ("job", "psi", "params", "evaluation")
_JOB_KEYS = ("name", "algorithm", "dataset", "peer_dataset", "model", "output")


def load_job_spec(path: str | Path) -> JobSpec:
    raw, label = _load_toml(path, "job")
    spec = job_spec_from_dict(raw, label)
    if spec.output and not Path(spec.output).is_absolute():
        spec.output = str(Path(path).resolve().parent / spec.output)
    return spec


def job_spec_from_toml_dict(raw: dict, label: str = "job.toml") -> JobSpec:
    return job_spec_from_dict(raw, label)


def job_spec_from_dict(raw: dict, label: str = "job.toml") -> JobSpec:
    """Validate a job from its TOML tables (or :meth:`JobSpec.to_dict` output)."""
    if "job" not in raw and "algorithm" in raw:        # JobSpec.to_dict() form
        raw = _from_flat(raw)
    top = _Table(label, "", raw)
    top.check_keys(_JOB_TOP + ("train_algorithm",))
    j = top.sub("job")
    j.check_keys(_JOB_KEYS + ("train_algorithm",))
    name = j.get("name", str)
    if not NAME_RE.match(name):
        raise j.err("name", f"= {name!r}: expected letters, digits, '.', '_' or '-' "
                    "(at most 64 characters)")
    algorithm = j.choice("algorithm", ALGORITHMS)
    dataset = j.get("dataset", str)
    peer_dataset = j.get("peer_dataset", str)
    model = j.get("model", str, "")
    output = j.get("output", str, "")
    train_algorithm = j.get("train_algorithm", str, "")
    if algorithm == "score" and not model:
        raise ConfigError(f"{label}: missing required key job.model (score jobs name the "
                          "trained model to use; see `fedjoint model list`)")
    if algorithm != "score" and (model or output):
        raise j.err("model" if model else "output", "is only used by algorithm = 'score'")
    if train_algorithm and train_algorithm not in TRAINING_ALGORITHMS:
        raise j.err("train_algorithm", f"= {train_algorithm!r}: expected one of "
                    f"{TRAINING_ALGORITHMS}")

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
                   train_algorithm=train_algorithm)
    validate_psi_params(spec, label)
    if algorithm in TRAINING_ALGORITHMS:
        cls = _param_class(algorithm)
        if cls is not None and "cipher" in {f.name for f in dataclasses.fields(cls)}:
            if "cipher" in params and params["cipher"] != evaluation.cipher:
                raise ConfigError(f"{label}: params.cipher = {params['cipher']!r} disagrees "
                                  f"with evaluation.cipher = {evaluation.cipher!r} (set it "
                                  "once, in [evaluation])")
            params["cipher"] = evaluation.cipher
            spec.params = params
        validate_algorithm_params(algorithm, params, f"{label} [params]")
        _check_validation_split(algorithm, params, evaluation, label)
    elif params and algorithm == "psi":
        raise ConfigError(f"{label}: [params] is not used by algorithm = 'psi' (remove it)")
    return spec


def _check_validation_split(algorithm: str, params: dict, ev: EvaluationConfig,
                            label: str) -> None:
    """Early stopping on a validation set needs a validation split carved from the
    training rows: the test split is never used to choose a model."""
    wants = (params.get("early_stopping_rounds", 0) > 0 if algorithm == "secureboost"
             else params.get("early_stopping") == "valid_auc")
    if wants and ev.valid_fraction <= 0:
        key = ("early_stopping_rounds" if algorithm == "secureboost"
               else "early_stopping = 'valid_auc'")
        raise ConfigError(f"{label} [evaluation]: valid_fraction: [params] {key} needs a "
                          "validation split; set valid_fraction (e.g. 0.1 of the training "
                          "rows)")


def _from_flat(d: dict) -> dict:
    return {"job": {k: d[k] for k in _JOB_KEYS + ("train_algorithm",) if d.get(k) not in
                    (None, "")},
            "psi": d.get("psi") or {}, "params": d.get("params") or {},
            "evaluation": d.get("evaluation") or {}}


# Algorithm modules declare their parameter dataclass; looked up lazily so config.py
# imports no protocol code.  Each candidate is (module, attribute).
_PARAM_CLASSES = {
    "secureboost": [("parties.common.secureboost_params", "SecureBoostParams")],
    "logistic_regression": [("parties.common.lr_common", "LRParams")],
    "psi": [("psi.params", "PsiParams"), ("psi.protocol", "PsiParams")],
}


def _param_class(algorithm: str):
    for mod, attr in _PARAM_CLASSES.get(algorithm, []):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        cls = getattr(m, attr, None)
        if cls is not None and dataclasses.is_dataclass(cls):
            return cls
    return None


def validate_algorithm_params(algorithm: str, params: dict, where: str):
    """Build the algorithm's params dataclass (errors name the key, with suggestions)."""
    cls = _param_class(algorithm)
    if cls is None:
        return params
    from parties.common.params import ParamError, from_dict
    try:
        return from_dict(cls, params, where)
    except ParamError as exc:
        raise ConfigError(str(exc)) from None


def validate_psi_params(spec: JobSpec, label: str):
    cls = _param_class("psi")
    if cls is None:
        return spec.psi
    from parties.common.params import ParamError, from_dict
    try:
        params = from_dict(cls, spec.psi, f"{label} [psi]")
        if hasattr(params, "validate"):
            params.validate()
    except ParamError as exc:
        raise ConfigError(str(exc)) from None
    except ValueError as exc:
        raise ConfigError(f"{label}: [psi] {exc}") from None
    for local_only in ("key_dir", "cache_dir"):
        if spec.psi.get(local_only):
            raise ConfigError(f"{label}: [psi] {local_only} is chosen by each node (under its "
                              "data_dir), not by the job; remove it")
    if spec.algorithm != "psi" and getattr(params, "mode", "") == "cardinality":
        raise ConfigError(f"{label}: psi.mode = 'cardinality' reveals no rows; "
                          f"algorithm = {spec.algorithm!r} needs 'balanced' or 'unbalanced'")
    return params
