"""node.toml -> :class:`NodeConfig` (one per party).

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
    categorical = ["industry"]      # columns read as categories (SecureBoost splits)
    max_categories = 1024           # a categorical column with more levels: refused
    [policy]
    allowed_algorithms = ["psi", "secureboost", "logistic_regression", "score"]
                                    # (the default; ["all"]: every registered algorithm;
                                    # one added later is off until listed)
    min_key_bits = 2048             # Paillier keys (own and peer's) below: refused;
                                    # below 2048 only with allow_insecure_test_jobs
    max_key_bits = 4096             # ... above: refused (at most 8192)
    allowed_ciphers = ["paillier"]  # the default; add "ou" to accept Okamoto-Uchiyama
    ou_min_key_bits = 2048          # OU keys (n = p^2 q), as min/max_key_bits for Paillier
    ou_max_key_bits = 4096
    min_intersection = 100
    require_approval = false
    allow_insecure_test_jobs = false
    reveal_feature_names = false
    allowed_datasets = ["loans"]    # which local datasets the peer may name (default all)
    max_concurrent_jobs = 2
    psi_max_queries_per_job = 1000000   # platform: IDs the bank may look up in one job
    psi_max_queries_per_day = 2000000   # ... and per rolling 24 h (all PSI modes)
    psi_key_rotation = "days:30"    # platform: unbalanced-PSI key, "days:N", "queries:N",
                                    # both ("days:30,queries:5000000") or "never"
    [limits]                        # message sizes, streams, timeouts, JSON bounds: every
    max_message_bytes = 268435456   # key optional; see federation.config.limits
    [serving]                       # online scoring: see federation.config.serving
    [transcript]
    keep_received = "full"          # received-payload sidecars: "full", "days:N" (pruned
                                    # N days after the job closed) or "digests" (deleted
                                    # when the job closes); federation.transcript.retention
    [horizontal]                    # horizontal (Flower) jobs: federation.config.horizontal
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.config.engine import KEYS as ENGINE_KEYS
from federation.config.engine import EngineConfig, parse_engine
from federation.config.horizontal import HorizontalConfig, parse_horizontal
from federation.config.job import algorithm_names
from federation.config.limits import Limits, parse_limits
from federation.config.serving import ServingConfig, parse_serving
from federation.config.toml import (
    NAME_RE,
    PARTIES,
    ConfigError,
    _load_toml,
    _resolve,
    _suggest,
    _Table,
    parse_address,
)
from federation.transcript.retention import parse_keep_received
from secure_agg.keypolicy import CIPHERS, DEFAULT_MAX_KEY_BITS, SECURE_MIN_BITS, KeyPolicy

#: what a policy without allowed_algorithms allows (the algorithms of fedjoint 0.1)
DEFAULT_ALLOWED = ("psi", "secureboost", "logistic_regression", "score")


#: [datasets.X] max_categories: (least, default, most); the most keeps a level index in
#: SecureBoost's int16 bins
MAX_CATEGORIES = (2, 1024, 32767)


@dataclass
class DatasetConfig:
    name: str
    path: Path
    id_column: str
    label_column: str | None = None
    columns: list[str] | None = None   # None: every column but id and label
    #: feature columns read as categories (levels sorted locally; federation.data)
    categorical: list[str] | None = None
    max_categories: int = 1024         # more distinct levels in a categorical column: error
    #: "csv" | "parquet" | "duckdb"; None: from the suffix (federation.data_source)
    format: str | None = None
    query: str | None = None           # duckdb: the SELECT whose rows are the dataset
    #: an in-memory pandas DataFrame instead of the file at ``path`` (the Python API);
    #: ``path`` then only names it in messages
    frame: Any = field(default=None, repr=False, compare=False)


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
    #: omitted: the algorithms of fedjoint 0.1 (DEFAULT_ALLOWED); an algorithm added
    #: later is allowed only once listed, or with ["all"]
    allowed_algorithms: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED))
    min_key_bits: int = SECURE_MIN_BITS
    max_key_bits: int = DEFAULT_MAX_KEY_BITS
    #: ciphers a job may use ("plain" is governed by allow_insecure_test_jobs); OU is
    #: off until listed (its assumptions differ: docs/ou.md)
    allowed_ciphers: list[str] = field(default_factory=lambda: ["paillier"])
    ou_min_key_bits: int = SECURE_MIN_BITS
    ou_max_key_bits: int = DEFAULT_MAX_KEY_BITS
    min_intersection: int = 100
    require_approval: bool = False
    allow_insecure_test_jobs: bool = False
    reveal_feature_names: bool = False
    allowed_datasets: list[str] | None = None   # None: every configured dataset
    max_concurrent_jobs: int = 2
    #: SecureBoost refreshes of aggregates bound for the key holder: "djn_full", or
    #: "standard" (uniform r^n, also against a bank that tags rows; ~7.5x the cost);
    #: a job's [params] refresh can only make it stricter
    refresh: str = "djn_full"
    #: full prime-order-subgroup check of the PSI points this node receives: its own
    #: choice, never the peer's ([psi] in a job cannot switch it off)
    psi_check_subgroup: bool = True
    #: platform: order SecureBoost's exactly tied categorical levels by level when the
    #: bank asks (XGBoost's trees; reveals their relative order); false: never
    categorical_tie_order: bool = True
    #: platform: IDs the bank may test for membership in this node's data (its PSI set
    #: size), per job and per rolling 24 h, in every PSI mode; counted durably
    psi_max_queries_per_job: int = 1_000_000
    psi_max_queries_per_day: int = 2_000_000
    #: platform: when the unbalanced-PSI OPRF key rotates (and its cache is re-encrypted)
    psi_key_rotation: str = "days:30"

    @property
    def key_rotation(self) -> tuple[float | None, int | None]:
        """``psi_key_rotation`` as (days, queries); None: no such trigger."""
        return parse_key_rotation(self.psi_key_rotation)


def parse_key_rotation(text: str) -> tuple[float | None, int | None]:
    """``"days:N"``, ``"queries:N"``, both joined by a comma, or ``"never"`` ->
    (days, queries); ValueError says what is wrong."""
    days = queries = None
    if text.strip() == "never":
        return days, queries
    for part in text.split(","):
        what, _, num = part.strip().partition(":")
        try:
            value = float(num) if what == "days" else int(num)
        except ValueError:
            value = 0
        if what not in ("days", "queries") or not value > 0 or \
                (days if what == "days" else queries) is not None:
            raise ValueError(f"{part.strip()!r}: expected 'days:N' and/or 'queries:N' "
                             "(N > 0, each at most once, comma-separated) or 'never'")
        if what == "days":
            days = value
        else:
            queries = value
    return days, queries


def key_policy(policy: PolicyConfig) -> KeyPolicy:
    """The node's cipher/key policy: one type for its own keys and its peer's."""
    test = policy.allow_insecure_test_jobs
    return KeyPolicy(min_key_bits=policy.min_key_bits, max_key_bits=policy.max_key_bits,
                     allow_plain=test, allow_test_keys=test,
                     allowed_ciphers=tuple(policy.allowed_ciphers),
                     ou_min_key_bits=policy.ou_min_key_bits,
                     ou_max_key_bits=policy.ou_max_key_bits)


@dataclass
class ChannelConfig:
    deadline_s: float = 30.0       # a peer silent this long is reported gone
    heartbeat_s: float = 2.0
    connect_timeout_s: float = 10.0


@dataclass
class TranscriptConfig:
    keep_received: str = "full"    # federation.transcript.retention


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
    limits: Limits = field(default_factory=Limits)
    serving: ServingConfig = field(default_factory=ServingConfig)   # [serving]
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)   # [transcript]
    horizontal: HorizontalConfig = field(default_factory=HorizontalConfig)   # [horizontal]
    engine: EngineConfig = field(default_factory=EngineConfig)   # [node] engine, ray_*

    @property
    def peer_party(self) -> str:
        return "platform" if self.party == "bank" else "bank"

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"{self.file}: no dataset {name!r} in [datasets]"
                              f"{_suggest(name, self.datasets)} "
                              f"(configured: {', '.join(sorted(self.datasets)) or 'none'})")
        return self.datasets[name]


_NODE_TOP = ("node", "keys", "peer", "datasets", "policy", "channel", "limits", "serving",
             "transcript", "horizontal")


def load_node_config(path: str | Path) -> NodeConfig:
    raw, label = _load_toml(path, "node config")
    return node_config_from_dict(raw, label, base=Path(path).resolve().parent,
                                 file=Path(path).resolve())


#: a dataset's ``format`` values, and the defaults by file suffix (else CSV)
FORMATS = ("csv", "parquet", "duckdb")
SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".duckdb": "duckdb",
                  ".ddb": "duckdb"}


def source_format(ds: DatasetConfig) -> str:
    """The dataset's format: its ``format`` key, else from its file's suffix."""
    return ds.format or SUFFIX_FORMATS.get(Path(ds.path).suffix.lower(), "csv")


def _dataset_source(d: _Table) -> tuple[str | None, str | None]:
    """A dataset's ``format`` and ``query`` keys, checked (docs/data.md)."""
    fmt = d.get("format", str, None)
    if fmt is not None and fmt not in FORMATS:
        raise d.err("format", f"= {fmt!r}: expected one of {', '.join(FORMATS)}")
    query = d.get("query", str, None)
    suffix = Path(d.get("path", str)).suffix.lower()
    if (fmt or SUFFIX_FORMATS.get(suffix, "csv")) == "duckdb":
        if not query or not query.strip():
            raise d.err("query", "is required for a DuckDB dataset: the SELECT whose rows "
                        "are the dataset (e.g. query = \"select * from loans order by id\")")
    elif query is not None:
        raise d.err("query", "applies to DuckDB datasets only (format = \"duckdb\")")
    return fmt, query


def node_config_from_dict(raw: dict, label: str, base: Path, file: Path | None = None
                          ) -> NodeConfig:
    top = _Table(label, "", raw)
    top.check_keys(_NODE_TOP)
    n = top.sub("node")
    n.check_keys(("party", "name", "listen", "admin", "data_dir", "workers") + ENGINE_KEYS)
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
    engine = parse_engine(n, base, workers)

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
        d.check_keys(("path", "id_column", "label_column", "columns", "categorical",
                      "max_categories", "format", "query"))
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
        cat = d.get("categorical", "str_list", None)
        if cat is not None and len(set(cat)) != len(cat):
            raise d.err("categorical", "contains duplicate names")
        for c in cat or []:
            if c in (idc, label_col) or (cols is not None and c not in cols):
                raise d.err("categorical", f"names {c!r}, which is not a feature column")
        max_cat = d.get("max_categories", int, MAX_CATEGORIES[1])
        if not MAX_CATEGORIES[0] <= max_cat <= MAX_CATEGORIES[2]:
            raise d.err("max_categories", f"must be in [{MAX_CATEGORIES[0]}, "
                        f"{MAX_CATEGORIES[2]}]")
        fmt, query = _dataset_source(d)
        datasets[ds_name] = DatasetConfig(ds_name, _resolve(base, d.get("path", str)), idc,
                                          label_col, cols, cat, max_cat, fmt, query)

    pol = top.sub("policy", {})
    pf = {f.name for f in dataclasses.fields(PolicyConfig)}
    pol.check_keys(pf)
    policy = PolicyConfig()
    algs = pol.get("allowed_algorithms", "str_list", policy.allowed_algorithms)
    known = algorithm_names()
    if algs == ["all"]:
        algs = known
    for a in algs:
        if a not in known:
            raise pol.err("allowed_algorithms", f"contains {a!r}: expected names from "
                          f"{', '.join(known)} (or [\"all\"]){_suggest(a, known)}")
    policy.allowed_algorithms = algs
    for b in ("require_approval", "allow_insecure_test_jobs", "reveal_feature_names"):
        setattr(policy, b, pol.get(b, bool, False))
    policy.refresh = pol.choice("refresh", ("djn_full", "standard"), "djn_full")
    policy.psi_check_subgroup = pol.get("psi_check_subgroup", bool, True)
    policy.categorical_tie_order = pol.get("categorical_tie_order", bool, True)
    policy.min_key_bits = pol.get("min_key_bits", int, SECURE_MIN_BITS)
    policy.max_key_bits = pol.get("max_key_bits", int, DEFAULT_MAX_KEY_BITS)
    policy.ou_min_key_bits = pol.get("ou_min_key_bits", int, SECURE_MIN_BITS)
    policy.ou_max_key_bits = pol.get("ou_max_key_bits", int, DEFAULT_MAX_KEY_BITS)
    for lo_key, hi_key in (("min_key_bits", "max_key_bits"),
                           ("ou_min_key_bits", "ou_max_key_bits")):
        lo = getattr(policy, lo_key)
        if lo < SECURE_MIN_BITS and not policy.allow_insecure_test_jobs:
            raise pol.err(lo_key, f"= {lo}: keys below {SECURE_MIN_BITS} bits are test keys; "
                          "only a test node (allow_insecure_test_jobs = true) may accept them")
        if not 256 <= lo <= getattr(policy, hi_key) <= 8192:
            raise pol.err(hi_key, f"= {getattr(policy, hi_key)}: need 256 <= {lo_key} ({lo}) "
                          f"<= {hi_key} <= 8192")
    policy.allowed_ciphers = pol.get("allowed_ciphers", "str_list", ["paillier"])
    for c in policy.allowed_ciphers:
        if c not in CIPHERS:
            raise pol.err("allowed_ciphers", f"contains {c!r}: expected names from "
                          f"{', '.join(CIPHERS)} ('plain' needs allow_insecure_test_jobs)"
                          f"{_suggest(c, CIPHERS)}")
    policy.min_intersection = pol.get("min_intersection", int, 100)
    if policy.min_intersection < 1:
        raise pol.err("min_intersection", "expected an integer >= 1")
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

    _psi_budget_keys(pol, policy, party)

    ch = top.sub("channel", {})
    ch.check_keys(("deadline_s", "heartbeat_s", "connect_timeout_s"))
    channel = ChannelConfig(ch.get("deadline_s", float, 30.0), ch.get("heartbeat_s", float, 2.0),
                            ch.get("connect_timeout_s", float, 10.0))
    for fname in ("deadline_s", "heartbeat_s", "connect_timeout_s"):
        if getattr(channel, fname) <= 0:
            raise ch.err(fname, "expected a positive number of seconds")
    limits = parse_limits(top.sub("limits", {}))
    serving = parse_serving(top.sub("serving", {}), data_dir)
    tr = top.sub("transcript", {})
    tr.check_keys(("keep_received",))
    keep = tr.get("keep_received", str, "full").strip()
    try:
        parse_keep_received(keep)
    except ValueError as exc:
        raise tr.err("keep_received", f"= {exc}") from None

    return NodeConfig(file=file or Path(label), party=party, name=name, listen=listen,
                      admin=admin, data_dir=data_dir, keys=keys, peer=peer, datasets=datasets,
                      policy=policy, channel=channel, workers=workers, limits=limits,
                      serving=serving, transcript=TranscriptConfig(keep),
                      horizontal=parse_horizontal(top.sub("horizontal", {}), party, base),
                      engine=engine)


def _psi_budget_keys(pol: _Table, policy: PolicyConfig, party: str) -> None:
    """[policy] psi_max_queries_per_job / _per_day and psi_key_rotation (platform)."""
    keys = ("psi_max_queries_per_job", "psi_max_queries_per_day", "psi_key_rotation")
    for k in keys:
        if k in pol.data and party != "platform":
            raise pol.err(k, "applies on the platform's node (it limits what the bank may "
                          "look up in the platform's data); remove it here")
    for k in keys[:2]:
        setattr(policy, k, pol.get(k, int, getattr(policy, k)))
        if getattr(policy, k) < 1:
            raise pol.err(k, f"= {getattr(policy, k)}: expected an integer >= 1")
    policy.psi_key_rotation = pol.get("psi_key_rotation", str, policy.psi_key_rotation)
    try:
        parse_key_rotation(policy.psi_key_rotation)
    except ValueError as exc:
        raise pol.err("psi_key_rotation", f"= {policy.psi_key_rotation!r}: {exc}") from None
