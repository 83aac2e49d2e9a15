"""The ServerApp and ClientApp that fedjoint's Flower App (FAB) names.

``server_app`` runs in the platform's ``flwr-serverapp`` (started by its SuperLink):
it reads the run config (``job``: the job.toml, ``job_id``, ``platform``: the
platform's node.toml), waits for the invited banks' SuperNodes (by the node ids their
keys were registered under), keeps one signed transcript per bank and runs
:func:`parties.horizontal.server.run_job`; it writes ``result.json`` and the report
under ``data_dir/horizontal/<job_id>/``, or a failed result naming the reason.
``client_app`` runs in a bank's ``flwr-clientapp``: the bank's node.toml (the
SuperNode's ``fedjoint_config`` node config) decides everything (:mod:`.bankside`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.config import load_node_config
from federation.horizontal.bankside import open_bank, signing_key_from
from federation.horizontal.job import HorizontalResult, load_job, write_result
from federation.horizontal.ledger import aggregator_ledger, job_dir
from federation.report import write_report
from parties.horizontal.bank import BankRefused, make_client_app
from parties.horizontal.server import run_job

JOIN_WAIT_S = 60.0


def _bank_side(context: Context, job: dict):
    path = context.node_config.get("fedjoint_config")
    if not path:
        raise BankRefused("this SuperNode has no fedjoint_config node config (start it with "
                          "`fedjoint horizontal supernode start --config node.toml`)")
    return open_bank(load_node_config(str(path)), job)


client_app = make_client_app(_bank_side)
server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    platform = load_node_config(str(rc["platform"]))
    spec, invited = load_job(str(rc["job"]))
    spec.job_id = str(rc["job_id"])
    out = job_dir(platform.data_dir, spec.job_id)
    out.mkdir(parents=True, exist_ok=True)
    registered = {int(k): v for k, v in json.loads(
        (Path(platform.data_dir) / "horizontal" / "nodes.json").read_text()).items()}
    want = {n: b for n, b in registered.items() if not invited or b in invited}
    deadline = time.monotonic() + JOIN_WAIT_S
    while time.monotonic() < deadline and not set(want) <= set(grid.get_node_ids()):
        time.sleep(0.5)
    nodes = sorted(set(want) & set(grid.get_node_ids()))
    spec.banks.update(want)
    ledgers = {n: aggregator_ledger(platform, spec, want[n],
                                    signing_key_from(
                                        platform.horizontal.banks[want[n]].signing_public_key))
               for n in nodes}
    try:
        res = run_job(grid, spec, nodes, ledgers)
    except Exception as exc:
        for led in ledgers.values():
            led.abort(f"job failed: {exc}")
        (out / "result.json").write_text(json.dumps(
            {"job_id": spec.job_id, "state": "failed", "reason": str(exc)[:2000]}))
        raise
    write_result(HorizontalResult(spec, res), out)
    write_report({"job": {"id": spec.job_id, "algorithm": spec.algorithm,
                          "name": "horizontal job (aggregator)", "banks": len(res.joined)},
                  "metrics": {"federated test": res.metrics}, "history": res.history},
                 out / "report.html")
