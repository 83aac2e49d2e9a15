"""``submit``: run a job - a pipeline included - on real nodes from Python.

:func:`fedjoint.run_local` runs both parties in one process; :func:`submit` hands the
same job (TOML path, dict or JobSpec) to the bank's running node, exactly as
``fedjoint job submit JOB.toml --wait`` does: the bank's node checks it against its
own policy and proposes it, the platform's node checks it against its policy, and
both run it in their job processes. Nothing crosses from this process: it talks to
its own node's admin endpoint only (the token in the node's data_dir).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from federation.admin import AdminClient, AdminError
from federation.config import ConfigError, JobSpec, load_node_config
from federation.jobstore import FINAL
from fedjoint.local import FedjointError, _spec


def submit(job: dict | str | Path | JobSpec, *, config: str | Path | None = None,
           wait: bool = True, timeout: float | None = None, poll: float = 0.3) -> dict:
    """Submit ``job`` to the bank node of ``config`` (its node.toml; default: the
    ``FEDJOINT_CONFIG`` environment variable). Returns the job's record, as ``fedjoint
    job status JOB --json`` prints it (``job_id``, ``state``, ``metrics`` - for a
    pipeline ``metrics["stages"][name]`` per stage -, ``artifacts``); with ``wait``
    after the job ended. :class:`FedjointError` if the node refuses it or, with
    ``wait``, if it does not end ``done`` (the record is the error's ``record``)."""
    spec = _spec(job)
    path = config or os.environ.get("FEDJOINT_CONFIG")
    if not path:
        raise FedjointError("no node config: pass config='bank.toml' or set FEDJOINT_CONFIG")
    try:
        client = AdminClient(load_node_config(path).data_dir)
        job_id = client.call("submit", spec=spec.to_dict(),
                             source=str(job) if isinstance(job, (str, Path)) else "python")
        job_id = job_id["job_id"]
        rec = client.call("status", job_id=job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while wait and rec["state"] not in FINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise FedjointError(f"job {job_id} is still {rec['state']} after {timeout} s "
                                    "(it keeps running; follow it with `fedjoint job status`)")
            time.sleep(poll)
            rec = client.call("status", job_id=job_id)
    except (AdminError, ConfigError) as exc:
        raise FedjointError(str(exc)) from None
    if wait and rec["state"] != "done":
        err = FedjointError(f"job {job_id} {rec['state']}: {rec.get('error') or ''}".strip())
        err.record = rec
        raise err
    return rec
