"""What a joint replay costs: a SecureBoost job between two real nodes (in this
process, real gRPC + mTLS on 127.0.0.1), then ``fedjoint audit replay --peer``.

    .venv/bin/python bench/joint_replay.py                 # 569 rows, 4 trees, 2048 bits
    .venv/bin/python bench/joint_replay.py --trees 2 --key-bits 1024 --json o.json

References, same run: the job's own wall time (submission to done, over the network)
and the two single-party replays (each party's side from its own sidecar, one after
the other). Measured: the joint replay (both sides regenerated together, no sidecar
read), and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.nodes: node.toml files and test keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=4)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    from support.nodes import (
        make_party_keys,
        running_nodes,
        wait_state,
        write_job,
        write_node_tomls,
    )

    from federation import audit
    from federation.admin import AdminClient
    from federation.config import load_job_spec

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bank_toml, plat_toml = write_node_tomls(root, keys=make_party_keys(root))
        with running_nodes(bank_toml, plat_toml) as (bank, plat):
            job = write_job(root, "sb", "secureboost",
                            params={"n_trees": args.trees, "max_depth": 3, "max_bin": 16},
                            evaluation={"cipher": "paillier", "key_bits": args.key_bits})
            client = AdminClient(bank.data_dir)
            t0 = time.monotonic()
            job_id = client.call("submit", spec=load_job_spec(job).to_dict())["job_id"]
            rec = wait_state(client, job_id, timeout=1800)
            job_s = time.monotonic() - t0
            if rec["state"] != "done":
                raise SystemExit(f"job {rec['state']}: {rec['error']}")
            wait_state(AdminClient(plat.data_dir), job_id, timeout=60)
        tb, tp = (n.data_dir / "transcripts" / f"{job_id}.jsonl" for n in (bank, plat))
        t0 = time.monotonic()
        singles = [audit.replay(tb, bank_toml), audit.replay(tp, plat_toml)]
        single_s = time.monotonic() - t0
        t0 = time.monotonic()
        joint = audit.joint_replay(tb, bank_toml, tp, plat_toml)
        joint_s = time.monotonic() - t0
    if not (joint.ok and all(r.ok for r in singles)):
        raise SystemExit(f"a replay failed: {joint.errors or [r.errors for r in singles]}")
    out = {"trees": args.trees, "key_bits": args.key_bits, "messages": joint.messages,
           "job_s": round(job_s, 3), "single_replays_s": round(single_s, 3),
           "joint_replay_s": round(joint_s, 3), "joint_vs_job": round(joint_s / job_s, 3),
           "joint_vs_singles": round(joint_s / single_s, 3)}
    print(f"SecureBoost {args.trees} trees, Paillier {args.key_bits}, {joint.messages} "
          "messages")
    print(f"  the job over gRPC:                {job_s:8.2f} s  (reference)")
    print(f"  both single-party replays:        {single_s:8.2f} s  (reference, sidecars)")
    print(f"  joint replay (no sidecar):        {joint_s:8.2f} s  "
          f"{out['joint_vs_job']}x the job, {out['joint_vs_singles']}x the two replays")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
