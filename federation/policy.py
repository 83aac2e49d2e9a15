"""A node's data-use policy applied to a job: one home for every policy decision.

* :func:`policy_refusal` - why this node refuses a job (algorithm, dataset, cipher, key
  size), checked by the platform's control plane before it accepts a proposal and by
  the runner itself before anything crosses (defence in depth).
* :func:`role_policy` - the policy as protocol roles read it
  (:class:`parties.common.role.RolePolicy`).
* :func:`make_cipher` - this party's private cipher for a job, derived from the job
  seed so a replay regenerates it exactly.

Key sizes are judged by one :class:`secure_agg.keypolicy.KeyPolicy` built from the
node's ``[policy]`` (:func:`federation.config.key_policy`), the same object the roles
use to judge the peer's key.
"""

from __future__ import annotations

from federation.config import JOB_TYPES, JobSpec, NodeConfig, key_policy
from parties import registry
from parties.common.role import RolePolicy
from secure_agg.keypolicy import KeyPolicyError
from secure_agg.rng import Drbg


def policy_refusal(spec: JobSpec, node: NodeConfig) -> str:
    """Why this node's policy refuses ``spec`` ('' if it does not)."""
    pol = node.policy
    if spec.algorithm not in pol.allowed_algorithms:
        return (f"algorithm {spec.algorithm!r} is not allowed (allowed: "
                f"{', '.join(pol.allowed_algorithms) or 'none'})")
    ds_name = spec.dataset_for(node.party)
    if ds_name not in node.datasets:
        return f"no dataset named {ds_name!r} on {node.name}"
    if pol.allowed_datasets is not None and ds_name not in pol.allowed_datasets and \
            node.party == "platform":
        return f"dataset {ds_name!r} is not offered to the peer"
    if spec.algorithm != "psi":
        ev = spec.evaluation
        try:
            key_policy(pol).check(ev.cipher, ev.key_bits)
        except KeyPolicyError as exc:
            hint = {"plain": "; set allow_insecure_test_jobs = true only on test nodes",
                    "test_key": "; a test node sets allow_insecure_test_jobs = true and "
                                "min_key_bits"}.get(exc.rule, "")
            return f"{exc}{hint}"
    return ""


def role_policy(node: NodeConfig) -> RolePolicy:
    """The node's policy as the protocol roles read it."""
    pol = node.policy
    return RolePolicy(keys=key_policy(pol), reveal_feature_names=pol.reveal_feature_names)


def holds_key(spec: JobSpec, party: str) -> bool:
    """Does ``party`` generate a private key for this job (per the registry)?"""
    if spec.algorithm in JOB_TYPES:
        return False
    return registry.get(spec.algorithm).holds_key(party)


def make_cipher(spec: JobSpec, node: NodeConfig, root: Drbg):
    """This party's private cipher for the job. The Paillier key is derived from the
    job seed (``Drbg(seed).child("paillier")``) so a replay regenerates it exactly."""
    ev = spec.evaluation
    test_key = key_policy(node.policy).check(ev.cipher, ev.key_bits)
    if ev.cipher == "plain":
        from secure_agg.cipher import PlainCipher
        return PlainCipher(ev.key_bits, workers=node.workers)
    from secure_agg.paillier import PaillierPrivateCipher
    return PaillierPrivateCipher.generate(ev.key_bits, rng=root.child("paillier"),
                                          workers=node.workers, insecure_test_key=test_key)
