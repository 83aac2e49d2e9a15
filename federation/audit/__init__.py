"""Verify and replay job transcripts (the auditor's tools).

* :func:`verify` checks one transcript (and optionally the peer's): the hash chain,
  every signature against the pinned keys, sequence completeness per direction, the
  closing record and both parties' signed outcome statements, and -- given both
  transcripts -- that they agree on every message in both directions. The first bad
  record is named (``bank.jsonl record 17``).
* :func:`replay` re-runs one party's side of the job with that party's own data, keys
  and per-job seed, feeding it the recorded incoming messages through a
  :class:`ReplayLink`, checking every message it sends against the recorded digest and
  its final model part against the signed digest.
* :func:`joint_replay` regenerates *both* sides together from both parties' vaults
  (seeds, datasets, node.toml) over an in-memory link pair, checking every message
  against both transcripts: no sidecar needed (e.g. ``keep_received = "digests"``).
* :func:`show` returns the timeline (per-record rows and rounds) with the verification
  summary.

Exit codes of the ``fedjoint audit`` commands (:mod:`federation.cli.audit`, which
renders these reports): **0** verified (or replay matched), **1** verification failed
(the report names the first bad record), **2** could not run (file missing, empty or
truncated, unknown format version, missing keys, seed or sidecar). See docs/audit.md.

Modules: :mod:`.findings` (exit codes, findings), :mod:`.pins` (pinned signing keys),
:mod:`.verify`, :mod:`.replay`, :mod:`.joint`, :mod:`.show`. Everything is re-exported here.
"""

from federation.audit.findings import (
    EXIT_CANNOT_RUN,
    EXIT_FAILED,
    EXIT_OK,
    MAX_ERRORS,
    CannotRun,
    Finding,
    Report,
)
from federation.audit.joint import JointLink, JointReplayReport, joint_replay
from federation.audit.pins import load_signing_public_hex, normalise_pins, pins_from_cli
from federation.audit.replay import (
    ReplayLink,
    ReplayMismatch,
    ReplayReport,
    ReplaySide,
    SideRunner,
    default_runner,
    find_node_config,
    load_party,
    model_digest_of,
    replay,
)
from federation.audit.show import show, timeline
from federation.audit.verify import VerifyReport, verify

__all__ = [
    "EXIT_CANNOT_RUN", "EXIT_FAILED", "EXIT_OK", "MAX_ERRORS",
    "CannotRun", "Finding", "JointLink", "JointReplayReport", "Report", "ReplayLink", "ReplayMismatch", "ReplayReport",
    "ReplaySide", "SideRunner", "VerifyReport",
    "default_runner", "find_node_config", "joint_replay", "load_party", "load_signing_public_hex",
    "model_digest_of", "normalise_pins", "pins_from_cli", "replay", "show", "timeline",
    "verify",
]
