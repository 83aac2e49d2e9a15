"""node.toml ``[horizontal]``: whether and how this node takes part in horizontal jobs.

A bank (``party = "bank"``)::

    [horizontal]
    join = true                    # take part in horizontal jobs (default false: refuse)
    dataset = "loans"              # the [datasets] entry it trains on (its label_column
                                   # is the label; its columns list bounds what a job
                                   # may name)
    allowed_algorithms = ["horizontal_lr", "horizontal_mlp"]   # (the default)
    require_secure_aggregation = true   # refuse jobs with secure_aggregation = false
    min_banks = 3                  # refuse jobs whose params.min_banks is lower (a sum
                                   # over fewer banks says more about each)
    aggregator = "platform.example:9092"     # the platform's SuperLink (Fleet API)
    aggregator_ca = "keys/horizontal-ca.crt" # the CA of its TLS certificate
    supernode_key = "keys/supernode"         # this bank's SuperNode key (EC, OpenSSH
                                             # format; `fedjoint horizontal keys`)
    supernode_port = 9094          # the SuperNode's local runtime API (loopback)
    require_signed_rounds = false  # refuse jobs with params.signed_rounds = false
    [horizontal.peers]             # the other banks' fedjoint signing keys (signed
    bank-b = "keys/bank-b.sign.pub"   # SecAgg rounds check every bank's keys against them)

The platform (``party = "platform"``, the aggregator)::

    [horizontal]
    listen = "0.0.0.0:9092"        # the SuperLink's HTTP API (Fleet + Control), TLS
    tls_cert = "keys/superlink.crt"     # `fedjoint horizontal keys --party platform`
    tls_key = "keys/superlink.key"
    ca_cert = "keys/horizontal-ca.crt"
    [horizontal.banks.bank-a]      # one table per bank allowed to join
    supernode_key = "keys/bank-a.supernode.pub"   # its SuperNode's public key (only
                                   # registered keys may connect: SuperNode auth)
    signing_public_key = "keys/bank-a.sign.pub"   # its fedjoint signing key (transcripts)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from federation.config.toml import NAME_RE, ConfigError, _resolve, _Table, parse_address

HORIZONTAL_ALGORITHMS = ("horizontal_lr", "horizontal_mlp")

_BANK_KEYS = ("join", "dataset", "allowed_algorithms", "require_secure_aggregation",
              "min_banks", "aggregator", "aggregator_ca", "supernode_key", "supernode_port",
              "require_signed_rounds", "peers")
_PLATFORM_KEYS = ("listen", "tls_cert", "tls_key", "ca_cert", "banks")


@dataclass
class HorizontalConfig:
    join: bool = False
    dataset: str | None = None
    allowed_algorithms: list[str] = field(default_factory=lambda: list(HORIZONTAL_ALGORITHMS))
    require_secure_aggregation: bool = True
    min_banks: int = 3
    aggregator: str | None = None
    aggregator_ca: Path | None = None
    supernode_key: Path | None = None
    supernode_port: int = 9094
    require_signed_rounds: bool = False
    peers: dict[str, str] = field(default_factory=dict)   # bank -> hex or .sign.pub path
    listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ca_cert: Path | None = None
    banks: dict[str, BankEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class BankEntry:
    supernode_key: Path
    signing_public_key: str          # 64 hex digits, or the path of its .sign.pub


def parse_horizontal(t: _Table, party: str, base: Path) -> HorizontalConfig:
    def path(key: str) -> Path | None:
        v = t.get(key, str, None)
        return None if v is None else _resolve(base, v)

    if party == "bank":
        t.check_keys(_BANK_KEYS)
        algs = t.get("allowed_algorithms", "str_list", list(HORIZONTAL_ALGORITHMS))
        bad = [a for a in algs if a not in HORIZONTAL_ALGORITHMS]
        if bad:
            raise t.err("allowed_algorithms", f"= {bad}: expected names among "
                                              f"{', '.join(HORIZONTAL_ALGORITHMS)}")
        agg = t.get("aggregator", str, None)
        if agg is not None:
            parse_address(agg, t.file, t.where("aggregator"))
        cfg = HorizontalConfig(
            join=t.get("join", bool, False), dataset=t.get("dataset", str, None),
            allowed_algorithms=algs,
            require_secure_aggregation=t.get("require_secure_aggregation", bool, True),
            min_banks=t.get("min_banks", int, 3), aggregator=agg,
            aggregator_ca=path("aggregator_ca"), supernode_key=path("supernode_key"),
            supernode_port=t.get("supernode_port", int, 9094),
            require_signed_rounds=t.get("require_signed_rounds", bool, False),
            peers=_keys_table(t.sub("peers", {}), base))
        if not 2 <= cfg.min_banks <= 1000:
            raise t.err("min_banks", f"= {cfg.min_banks}: expected an integer in [2, 1000]")
        if not 1 <= cfg.supernode_port <= 65535:
            raise t.err("supernode_port", f"= {cfg.supernode_port}: expected a port")
        if cfg.join and not cfg.dataset:
            raise t.err("dataset", "is required when join = true (which [datasets] entry "
                                   "the bank trains on)")
        return cfg
    t.check_keys(_PLATFORM_KEYS)
    listen = t.get("listen", str, None)
    if listen is not None:
        parse_address(listen, t.file, t.where("listen"))
    banks_t = t.sub("banks", {})
    banks = {}
    for name in banks_t.data:
        if not NAME_RE.match(name):
            raise banks_t.err(name, "is not a valid bank name")
        b = banks_t.sub(name)
        b.check_keys(("supernode_key", "signing_public_key"))
        banks[name] = BankEntry(_resolve(base, b.get("supernode_key", str)),
                                _signing_ref(b.get("signing_public_key", str), base))
    return HorizontalConfig(listen=listen, tls_cert=path("tls_cert"), tls_key=path("tls_key"),
                            ca_cert=path("ca_cert"), banks=banks)


def _signing_ref(value: str, base: Path) -> str:
    value = value.strip()
    return value if re.fullmatch(r"[0-9A-Fa-f]{64}", value) else str(_resolve(base, value))


def _keys_table(t: _Table, base: Path) -> dict[str, str]:
    out = {}
    for name in t.data:
        if not NAME_RE.match(name):
            raise t.err(name, "is not a valid bank name")
        out[name] = _signing_ref(t.get(name, str), base)
    return out


def need(cfg: HorizontalConfig, file, *keys: str) -> None:
    """Fail naming the first of ``keys`` that [horizontal] does not set."""
    for k in keys:
        if getattr(cfg, k) in (None, {}):
            raise ConfigError(f"{file}: [horizontal] {k} is not set (needed to run "
                              "horizontal jobs; see docs/horizontal.md)")
