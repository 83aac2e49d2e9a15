"""node.toml ``[node]`` engine keys -> :class:`EngineConfig`: where this party's heavy
kernels run (:mod:`secure_agg.executor`; docs/ray.md).

::

    [node]
    workers = 16                    # with engine = "ray": parallel Ray calls per operation
    engine = "ray"                  # "local" (default): this machine's worker processes
    ray_address = "10.0.0.5:6379"   # the party's own Ray head (GCS host:port), never the
                                    # peer's and never reachable by it
    ray_connect_timeout_s = 15.0    # a job fails, naming the address, if the cluster has
                                    # not accepted it and run a probe task by then
    ray_auth_token_file = "ray.token"   # Ray token authentication (RAY_AUTH_MODE=token);
                                        # relative to node.toml; mode 0600 (checked when
                                        # a job connects)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federation.config.toml import _resolve, _Table, parse_address
from secure_agg.executor import ENGINES

KEYS = ("engine", "ray_address", "ray_connect_timeout_s", "ray_auth_token_file")


@dataclass
class EngineConfig:
    engine: str = "local"
    ray_address: str = ""
    ray_connect_timeout_s: float = 15.0
    ray_auth_token_file: Path | None = None


def parse_engine(n: _Table, base: Path, workers: int) -> EngineConfig:
    """The engine keys of ``[node]`` (``n``), checked against each other."""
    engine = n.choice("engine", ENGINES, "local")
    address = n.get("ray_address", str, "").strip()
    timeout = n.get("ray_connect_timeout_s", float, 15.0)
    token = n.get("ray_auth_token_file", str, "")
    if engine == "local":
        for key in KEYS[1:]:
            if key in n.data:
                raise n.err(key, "is set but node.engine is 'local': set engine = \"ray\" "
                            "or remove it")
        return EngineConfig()
    if not address:
        raise n.err("ray_address", "is required with engine = \"ray\": the host:port of "
                    "this party's Ray head (its GCS port)")
    parse_address(address, n.file, "node.ray_address")
    if not 0 < timeout <= 600:
        raise n.err("ray_connect_timeout_s", f"= {timeout}: expected seconds in (0, 600]")
    if workers < 2:
        raise n.err("workers", f"= {workers}: with engine = \"ray\" it is the number of Ray "
                    "tasks per operation: expected >= 2 (the cluster's CPUs)")
    return EngineConfig("ray", address, timeout, _resolve(base, token) if token else None)
