"""``fedjoint node reload``: pick up node.toml edits without restarting the node.

What a running node can take on at once: ``[datasets]`` (paths, columns offered),
``[policy]`` (algorithms, key sizes, approval, refresh...), ``[serving]`` (which models
may be served, rates and budgets; a running ``fedjoint serve`` keeps its own) and
``[node] workers`` and the engine keys (``engine``, ``ray_*``: each job process connects
to the engine when it starts; changed ones warm the new Ray pool,
:mod:`federation.node.ray_pool`).
Jobs already running keep the configuration they started with; the next job reads the
new one. Everything the daemon built at start (party, name, addresses, data_dir, keys,
the peer's identity, channel settings, limits) needs a restart: a reload that changes
any of them applies nothing and says which keys changed.
"""

from __future__ import annotations

from dataclasses import fields, replace

from federation.admin import AdminError
from federation.config import ConfigError, NodeConfig, load_node_config

RELOADABLE = ("datasets", "policy", "workers", "serving", "engine")
RESTART_ONLY = ("party", "name", "listen", "admin", "data_dir", "keys", "peer", "channel",
                "limits", "transcript", "horizontal")


def reload_config(ctx) -> dict:
    """Re-read ``ctx.cfg.file`` and swap in its reloadable parts; returns what changed."""
    try:
        new = load_node_config(ctx.cfg.file)
    except ConfigError as exc:
        raise AdminError(f"not reloaded: {exc}") from None
    old: NodeConfig = ctx.cfg
    assert set(RELOADABLE) | set(RESTART_ONLY) | {"file"} == {f.name for f in fields(old)}
    restart = [f for f in RESTART_ONLY if getattr(new, f) != getattr(old, f)]
    if restart:
        raise AdminError(f"not reloaded: {old.file} changes {', '.join(restart)}, which "
                         "need a restart of the node (`fedjoint node start`); nothing was "
                         "applied")
    changed = [f for f in RELOADABLE if getattr(new, f) != getattr(old, f)]
    ctx.cfg = replace(old, **{f: getattr(new, f) for f in RELOADABLE})
    ctx.log("node.reloaded", {"changed": changed})
    if "engine" in changed and ctx.engine_pool is not None:
        ctx.engine_pool.start(ctx.cfg)      # warm the new cluster's pool
    return {"reloaded": changed, "file": str(old.file)}
