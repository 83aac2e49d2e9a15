"""The party node: peer channel, control plane, job runner threads, loopback admin
endpoint, SQLite job store.

Job flow::

    bank: `fedjoint job submit` -> admin "submit" -> store(submitted)
          -> control "job.propose" {job_id, spec} to the platform's node
    platform: checks its policy -> reply accept | refuse(reason) | pending (manual
          approval; the operator later runs `fedjoint job approve|refuse`, which sends
          control "job.decision" to the bank)
    both: store(approved) -> job thread: a job process runs run_job_side (compute
          never in the daemon's process), the thread relays its messages over
          channel.link(job_id) with the transcript writer as the link's recorder,
          states psi/training/... as the pipeline reaches them -> exchange outcome
          statements -> store(done)
    failure on either side: store(failed, reason); control "job.abort" tells the peer
          (with a reason fit for the peer: policy reasons verbatim, internal errors as
          "internal error on <node>") so it fails fast instead of waiting for the
          deadline; cancellation likewise ("job.cancel").

Modules (each imports only modules listed above it)::

    logs       the JSON-lines log; channel log records bridged into it
    context    what the parts share: config, data dir, log, job store, channel
    peer       this node's channel end built from node.toml; ``node check``
    psi_budget the platform's PSI query budget ledger and OPRF key rotation
    compute    a job's pipeline in its own OS process, relayed over the job's link
    jobs       running one job: states, transcript writer, stored results
    control    peer control requests: proposals, policy, approval, abort, cancel
    results    a job's stored result shaped into report fields
    admin_api  the admin endpoint's handlers (and the offline read-only subset)
    daemon     :class:`Node`: start/stop and the wiring of all of the above

Logs never contain keys, tokens, seeds or data values.
"""

from federation.node.daemon import Node
from federation.node.logs import JsonLog
from federation.node.peer import make_channel, standalone_check

__all__ = ["Node", "JsonLog", "make_channel", "standalone_check"]
