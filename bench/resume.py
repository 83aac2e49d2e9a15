"""What resuming costs: a SecureBoost job between two real nodes (in this process,
real gRPC + mTLS on 127.0.0.1) whose bank job process is killed (SIGKILL) after
checkpoint K; the job resumes by itself from the last checkpoint both nodes hold.

    .venv/bin/python bench/resume.py                    # 6 trees, kill after 3, 2048 bits
    .venv/bin/python bench/resume.py --trees 4 --kill-after 2 --key-bits 1024 --json o.json

References, same run: the same job run once without interruption (wall time), and
the interrupted run's own time from the job's first transcript record
to checkpoint K (PSI, key generation, K trees, over the network). Measured: the resumed
run's local play-back up to the same checkpoint (both job processes hold at checkpoint
K, FEDJOINT_TEST_HOLD_AT_CHECKPOINTS, so the kill lands there) (``resume.caught_up`` in the bank's job
log: the pipeline re-run over the recorded messages, nothing sent), and the ratio. Also
the job's wall time from submission to done, interruption included.
"""

from __future__ import annotations

import json
import os
import signal
import time
from multiprocessing import active_children
from pathlib import Path

import sb_nodes  # bench/ (the script's folder) is on sys.path; it puts the repo first


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def main() -> None:
    args = sb_nodes.parse_args(__doc__, trees=6, extra=[("--kill-after", int, 3)])
    from support.nodes import wait_state

    from federation.admin import AdminClient
    from federation.node.compute import HOLD_ENV

    with sb_nodes.sb_job(args) as sb:
        with sb.nodes() as (bank, plat):
            client = AdminClient(bank.data_dir)
            ref_id, t0 = sb.submit(bank)   # reference: the same job, not interrupted
            if wait_state(client, ref_id, timeout=1800)["state"] != "done":
                raise SystemExit("the uninterrupted reference job did not finish")
            ref_wall = time.monotonic() - t0
            # both job processes wait after checkpoint K (the test-only hold point), so
            # the kill lands there whatever the load
            os.environ[HOLD_ENV] = str(args.kill_after)
            job_id, t0 = sb.submit(bank)
            paths = {n: n.data_dir / "transcripts" / f"{job_id}.jsonl" for n in (bank, plat)}
            while any(not p.exists() or p.read_bytes().count(b'"type":"checkpoint"')
                      < args.kill_after for p in paths.values()):
                time.sleep(0.02)
            recs = _records(paths[bank])
            ck = next(r for r in recs if r["type"] == "checkpoint"
                      and r["n"] == args.kill_after)
            first_run = ck["t"] - recs[0]["t"]
            # PSI and key generation: up to the first training message
            setup = next(r["t"] for r in recs if r["type"] == "msg"
                         and r["kind"].startswith("sb.")) - recs[0]["t"]
            child = [p for p in active_children() if p.name == f"fedjoint-job-{job_id}"]
            os.kill(child[0].pid, signal.SIGKILL)
            rec = wait_state(client, job_id, timeout=1800)
            wall = time.monotonic() - t0
            if rec["state"] != "done":
                raise SystemExit(f"job {rec['state']}: {rec['error']}")
            restart = next(r for r in _records(paths[bank]) if r["type"] == "restart")
            caught = [e for e in bank.store.events(job_id) if e["event"] == "resume.caught_up"]
    ck_used = restart["checkpoint"]
    play = caught[0]["seconds"] if caught else float("nan")
    out = {"trees": args.trees, "key_bits": args.key_bits, "killed_after": args.kill_after,
           "resumed_from": ck_used, "first_run_to_checkpoint_s": round(first_run, 3),
           "first_run_setup_s": round(setup, 3),
           "playback_to_checkpoint_s": play, "wall_s": round(wall, 3),
           "uninterrupted_wall_s": round(ref_wall, 3), "wall_ratio": round(wall / ref_wall, 3),
           "discarded": restart["discarded"]}
    if ck_used == args.kill_after:
        out["ratio"] = round(play / first_run, 3)
    print(f"SecureBoost {args.trees} trees, Paillier {args.key_bits}, bank job process "
          f"killed after checkpoint {args.kill_after}, resumed from {ck_used}")
    print(f"  first run to checkpoint {args.kill_after}: {first_run:8.2f} s  (reference; PSI "
          f"and key generation {setup:.2f} s of it)")
    print(f"  play-back to checkpoint {ck_used}: {play:8.2f} s  "
          f"ratio {out.get('ratio', 'n/a')}")
    print(f"  job wall time, interruption included: {wall:.2f} s; the same job not "
          f"interrupted: {ref_wall:.2f} s (reference), ratio {wall / ref_wall:.2f}; "
          f"discarded messages {restart['discarded']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
