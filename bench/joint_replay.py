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

import json
import time
from pathlib import Path

import sb_nodes  # bench/ (the script's folder) is on sys.path; it puts the repo first


def main() -> None:
    args = sb_nodes.parse_args(__doc__, trees=4)
    from support.nodes import wait_state

    from federation import audit
    from federation.admin import AdminClient

    with sb_nodes.sb_job(args) as sb:
        with sb.nodes() as (bank, plat):
            job_id, t0 = sb.submit(bank)
            rec = wait_state(AdminClient(bank.data_dir), job_id, timeout=1800)
            job_s = time.monotonic() - t0
            if rec["state"] != "done":
                raise SystemExit(f"job {rec['state']}: {rec['error']}")
            wait_state(AdminClient(plat.data_dir), job_id, timeout=60)
        tb, tp = (n.data_dir / "transcripts" / f"{job_id}.jsonl" for n in (bank, plat))
        t0 = time.monotonic()
        singles = [audit.replay(tb, sb.bank_toml), audit.replay(tp, sb.plat_toml)]
        single_s = time.monotonic() - t0
        t0 = time.monotonic()
        joint = audit.joint_replay(tb, sb.bank_toml, tp, sb.plat_toml)
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
