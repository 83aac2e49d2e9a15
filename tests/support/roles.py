"""Calling protocol roles directly (unit tests of one algorithm, without the runner)."""

from __future__ import annotations

from dataclasses import replace

from federation.link import ProtocolContext, local_link_pair, run_two_parties
from parties import registry
from parties.common.role import PartyData, RolePolicy, insecure_test_policy
from secure_agg.rng import Drbg

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


def contexts(job: str = "job", seeds: tuple[bytes, bytes] = (b"b" * 32, b"p" * 32)):
    """(bank ctx, platform ctx, crossed) over an in-memory link pair."""
    a, b, crossed = local_link_pair(job)
    return (ProtocolContext(a, job, Drbg(seeds[0], "bank")),
            ProtocolContext(b, job, Drbg(seeds[1], "platform")), crossed)


def run_roles(name: str, bank_data: PartyData, platform_data: PartyData, params, *,
              bank_cipher=None, platform_cipher=None, bank_policy: RolePolicy = TEST_POLICY,
              platform_policy: RolePolicy = TEST_POLICY, job: str = "job",
              seeds: tuple[bytes, bytes] = (b"b" * 32, b"p" * 32), timeout: float = 120):
    """Both roles of registered algorithm ``name`` trained against each other:
    (bank outcome, platform outcome, what crossed). The shared two-party harness."""
    algo = registry.get(name)
    cb, cp, crossed = contexts(job, seeds)
    typed_params = typed(name, params)
    ob, op = run_two_parties(
        lambda: algo.bank.train(cb, bank_data, typed_params, bank_cipher, bank_policy),
        lambda: algo.platform.train(cp, platform_data, typed_params, platform_cipher,
                                    platform_policy), timeout=timeout)
    return ob, op, crossed
