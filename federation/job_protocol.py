"""The runner's own messages (kinds ``job.*`` and ``score.*``) and their exchanges.

None of them carries data values: ``job.check`` says whether the intersection satisfies
the sender's policy and carries a digest of the train/test split; ``job.model_digest``
the digest of the sender's model part; ``score.model`` which model parts a scoring job
uses; ``job.stage`` marks where a pipeline stage starts (index, name, algorithm,
version); ``job.inputs`` which earlier outputs a job uses (ids and digests);
``job.resume`` opens a resumed run with the checkpoint the sender rolled back to
(docs/resume.md). ``job.outcome`` (the signed outcome statement) is exchanged by the node after the
runner returns, on the same channel.
"""

from __future__ import annotations

import hashlib

import numpy as np

from federation.link import Link, Message, ProtocolError, declare_protocol, wire_table_markdown

PROTOCOL_VERSION = "fedjoint-job-v1"

K_CHECK = "job.check"
K_MODEL_DIGEST = "job.model_digest"
K_SCORE_MODEL = "score.model"
K_RESUME = "job.resume"
K_STAGE = "job.stage"
K_INPUTS = "job.inputs"

TABLE = declare_protocol("job", PROTOCOL_VERSION, [
    Message(K_CHECK, "either", "json",
            "intersection size, ok/reason of the sender's policy, digest of the split"),
    Message(K_MODEL_DIGEST, "either", "json", "digest of the sender's unbound model part"),
    Message(K_SCORE_MODEL, "either", "json",
            "scoring: model id, algorithm, digests of both parts"),
    Message(K_RESUME, "either", "json", "resumed run, first message: the checkpoint the "
            "sender rolled back to (number, its message counts, checkpoint-file digest)"),
    Message(K_STAGE, "either", "json", "pipelines: before PSI the plan (every stage's name, "
            "algorithm, protocol version), then at each stage boundary its index, name, "
            "algorithm, version (no data)"),
    Message(K_INPUTS, "either", "json", "jobs with [inputs], before PSI: per input the "
            "model id, algorithm and the digests of both parts"),
    Message("job.outcome", "either", "json", "signed outcome statement (model digest, "
            "per-direction counts and digests)", disclosure="model-part digest",
            count=lambda p: 1),
])


class CheckFailed(Exception):
    """One side's policy (or the two sides' views) refuse to continue after PSI."""


def split_digest(test_mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(test_mask.astype(np.uint8)).tobytes() +
                          str(len(test_mask)).encode()).hexdigest()


def exchange_checks(link: Link, problem: str, n: int, test_mask: np.ndarray) -> None:
    """Both sides say whether the intersection passes their policy and agree on the
    split before any model traffic; raises :class:`CheckFailed` with the reason."""
    digest = split_digest(test_mask)
    link.send(K_CHECK, {"ok": not problem, "reason": problem, "split": digest,
                        "intersection": n})
    peer = link.recv_json(K_CHECK)
    if problem:
        raise CheckFailed(problem)
    if not peer.get("ok", False):
        raise CheckFailed(str(peer.get("reason") or "the peer refused to continue")[:500])
    if peer.get("intersection") != n:
        raise CheckFailed(f"the parties disagree on the intersection size ({n} here, "
                          f"{peer.get('intersection')!r} at the peer)")
    if peer.get("split") != digest:
        raise CheckFailed("the parties computed different train/test splits from the "
                          "intersection (are the IDs formatted differently on each side?)")


def exchange_model_digests(link: Link, own: str) -> str:
    """Send this part's unbound digest, return the peer's (64 hex digits)."""
    link.send(K_MODEL_DIGEST, {"digest": own})
    peer = str(link.recv_json(K_MODEL_DIGEST).get("digest", ""))
    if len(peer) != 64:
        raise ProtocolError(f"{K_MODEL_DIGEST}: expected a 64-hex-digit digest")
    return peer


def wire_doc() -> str:
    """docs/wire.md: the declared tables of the runner, PSI and every registered
    algorithm (``python -m federation.job_protocol > docs/wire.md``)."""
    from federation.serving.protocol import TABLE as SERVING_TABLE
    from parties import registry
    from psi.protocol import TABLE as PSI_TABLE
    # one table once, whichever algorithms speak it (linear_regression speaks LR's)
    algorithms = dict.fromkeys(a.protocol for a in registry.all_algorithms())
    return wire_table_markdown([TABLE, PSI_TABLE, *algorithms, SERVING_TABLE])


if __name__ == "__main__":
    print(wire_doc())
