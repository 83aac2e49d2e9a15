"""Calling protocol roles directly (unit tests of one algorithm, without the runner)."""

from __future__ import annotations

from dataclasses import replace

from parties import registry
from parties.common.role import PartyData, RolePolicy, insecure_test_policy

#: a test node's policy: plain cipher and test keys allowed (tests only)
TEST_POLICY = insecure_test_policy()
#: a production node's policy
STRICT_POLICY = RolePolicy()


def policy(**changes) -> RolePolicy:
    """TEST_POLICY with some fields changed (``keys=...``, ``refresh=...``)."""
    return replace(TEST_POLICY, **changes)


def typed(algorithm: str, params: dict | object):
    """The algorithm's typed params from a plain dict (as job.toml parsing does)."""
    if not isinstance(params, dict):
        return params
    return registry.get(algorithm).parse_params(params, f"test {algorithm} params")


def data(X, names=None, y=None, X_valid=None, y_valid=None) -> PartyData:
    """A role's data; ``names`` default to x0, x1, ..."""
    names = list(names) if names is not None else [f"x{j}" for j in range(len(X[0]))]
    return PartyData(X, names, y=y, X_valid=X_valid, y_valid=y_valid)
