"""node.toml ``[serving]`` -> :class:`ServingConfig`: online scoring (``fedjoint
serve``, :mod:`federation.serving`; docs/serving.md).

::

    [serving]
    # platform: what the bank may serve (its policy; `fedjoint node reload` applies it)
    models = ["credit-sb-20260101120000-a1b2c3"]  # model ids that may be served (default: none)
    rate_per_s = 200.0         # applicant lookups per second from the peer (burst: 1 s of it)
    daily_budget = 100000      # applicant lookups from the peer per UTC day
    reveal_models = []         # both nodes: models whose full model may be exported
                               # (`fedjoint model export ID --format xgboost-json`)
    unknown_ids = "no_data"    # an ID the platform holds no row for: "no_data" (answer with
                               # the model's defaults, flagged) or "refuse" (the bank gets
                               # no score for it)
    # bank: the HTTP API of `fedjoint serve`
    listen = "127.0.0.1:8089"  # loopback unless set otherwise
    token_file = "serving.token"   # bearer token (0600; created if missing; relative to
                                   # data_dir)
    batch_wait_ms = 2.0        # how long the first request of a micro-batch waits for others
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from federation.config.toml import _resolve, _Table, parse_address

UNKNOWN_IDS = ("no_data", "refuse")


@dataclass
class ServingConfig:
    models: list[str] = field(default_factory=list)
    #: model ids whose full model may be exported (both nodes must list one)
    reveal_models: list[str] = field(default_factory=list)
    rate_per_s: float = 200.0
    daily_budget: int = 100_000
    unknown_ids: str = "no_data"
    listen: str = "127.0.0.1:8089"
    token_file: Path | None = None      # None: data_dir / "serving.token"
    batch_wait_ms: float = 2.0


KEYS = ("models", "reveal_models", "rate_per_s", "daily_budget", "unknown_ids", "listen", "token_file",
        "batch_wait_ms")


def parse_serving(t: _Table, data_dir: Path) -> ServingConfig:
    t.check_keys(KEYS)
    d = ServingConfig()
    s = ServingConfig(models=t.get("models", "str_list", []),
                      reveal_models=t.get("reveal_models", "str_list", []),
                      rate_per_s=t.get("rate_per_s", float, d.rate_per_s),
                      daily_budget=t.get("daily_budget", int, d.daily_budget),
                      unknown_ids=t.choice("unknown_ids", UNKNOWN_IDS, d.unknown_ids),
                      listen=t.get("listen", str, d.listen),
                      batch_wait_ms=t.get("batch_wait_ms", float, d.batch_wait_ms))
    if not 0 < s.rate_per_s <= 1e6:
        raise t.err("rate_per_s", f"= {s.rate_per_s!r}: expected a number in (0, 1000000]")
    if not 0 <= s.daily_budget <= 10**12:
        raise t.err("daily_budget", f"= {s.daily_budget!r}: expected an integer in "
                    "0..1000000000000")
    if not 0 <= s.batch_wait_ms <= 1000:
        raise t.err("batch_wait_ms", f"= {s.batch_wait_ms!r}: expected milliseconds in "
                    "0..1000")
    parse_address(s.listen, t.file, t.where("listen"))
    tf = t.get("token_file", str, None)
    s.token_file = _resolve(data_dir, tf) if tf else Path(data_dir) / "serving.token"
    return s
