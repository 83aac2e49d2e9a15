"""Soak: N consecutive jobs between two real party nodes (separate OS processes, real
gRPC + mTLS on 127.0.0.1), watching for drift in wall time and in the nodes' memory.

    .venv/bin/python bench/soak.py                      # 20 jobs
    .venv/bin/python bench/soak.py --jobs 5 --json out.json

Jobs alternate: SecureBoost (2 trees of depth 3, Paillier with a 1024-bit *test-only*
key) and logistic regression (2 epochs of batches of 128, ``cipher = "plain"``), each with its own ECDH
PSI, on the breast-cancer test slices (569 shared rows). After each job the resident
set (VmRSS) of each node's daemon process and of its live child processes is read
(psutil if installed, else /proc/PID/status). The reference is the same run's first
job: the table ends with the growth first -> last (RSS in MiB, wall time as a ratio
per algorithm). A job's computation runs in its own process (DESIGN.md), so daemon RSS
that keeps climbing job after job is a leak in the daemon (channel, job store, admin).
A bench, not a test: not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.nodes: node.toml files and test keys

try:
    import psutil  # type: ignore
except ImportError:  # pragma: no cover - optional
    psutil = None


def rss_kib(pid: int) -> int:
    """Resident set of ``pid`` in KiB (0 once it is gone)."""
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss // 1024
        except psutil.Error:
            return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    if psutil is not None:
        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def start_node(toml: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "federation.cli", "node", "start",
                             "--config", str(toml), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_ready(proc: subprocess.Popen, data_dir: Path, log: Path, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (data_dir / "admin.json").exists():
        if proc.poll() is not None:
            raise SystemExit(f"node exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"node did not start within {timeout}s")
        time.sleep(0.1)


JOBS = [
    ("secureboost", {"n_trees": 2, "max_depth": 3}, {"cipher": "paillier", "key_bits": 1024}),
    ("logistic_regression", {"epochs": 2, "batch_size": 128, "early_stopping": "none"},
     {"cipher": "plain"}),
]


def run(n_jobs: int, tmp: Path) -> dict:
    from support.nodes import wait_state, write_job, write_node_tomls

    from federation.admin import AdminClient
    from federation.config import load_job_spec, load_node_config

    bank_toml, plat_toml = write_node_tomls(tmp, platform_policy={"min_key_bits": 1024},
                                            bank_policy={"min_key_bits": 1024},
                                            deadline_s=10.0)
    bdir = load_node_config(bank_toml).data_dir
    pdir = load_node_config(plat_toml).data_dir
    blog, plog = tmp / "bank.log", tmp / "platform.log"
    bank, plat = start_node(bank_toml, blog), start_node(plat_toml, plog)
    rows = []
    try:
        wait_ready(bank, bdir, blog)
        wait_ready(plat, pdir, plog)
        client = AdminClient(bdir)
        base = {"bank": rss_kib(bank.pid), "platform": rss_kib(plat.pid)}
        for i in range(n_jobs):
            algo, params, ev = JOBS[i % len(JOBS)]
            job = write_job(tmp, f"soak-{i}", algo, params=params, evaluation=ev)
            t0 = time.perf_counter()
            job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                                 source=str(job))["job_id"]
            rec = wait_state(client, job_id, timeout=600)
            wall = time.perf_counter() - t0
            time.sleep(0.5)  # let the job process exit before reading RSS
            row = {"job": i + 1, "algorithm": algo, "state": rec["state"],
                   "wall_s": round(wall, 3),
                   "error": rec.get("error"),
                   "metric": (rec.get("metrics") or {}).get("test_auc")}
            for name, proc in (("bank", bank), ("platform", plat)):
                kids = children(proc.pid)
                row[f"{name}_rss_mib"] = round(rss_kib(proc.pid) / 1024, 1)
                row[f"{name}_children"] = len(kids)
                row[f"{name}_children_rss_mib"] = round(
                    sum(rss_kib(k) for k in kids) / 1024, 1)
            rows.append(row)
            print(f"{row['job']:>3}  {algo:<20} {row['state']:<7} {wall:8.2f}  "
                  f"{row['bank_rss_mib']:9.1f} {row['platform_rss_mib']:9.1f}  "
                  f"{row['bank_children']}/{row['platform_children']} "
                  f"({row['bank_children_rss_mib']:.0f}/{row['platform_children_rss_mib']:.0f}"
                  f" MiB)", flush=True)
            if rec["state"] != "done":
                print(f"     error: {rec.get('error')}", flush=True)
    finally:
        stop_node(bank)
        stop_node(plat)
    return {"rows": rows, "rss_before_first_job_mib": {k: round(v / 1024, 1)
                                                       for k, v in base.items()}}


def summary(result: dict) -> dict:
    rows = result["rows"]
    first, last = rows[0], rows[-1]
    out = {"jobs": len(rows), "done": sum(r["state"] == "done" for r in rows)}
    for name in ("bank", "platform"):
        out[f"{name}_rss_growth_mib"] = round(last[f"{name}_rss_mib"]
                                              - first[f"{name}_rss_mib"], 1)
        out[f"{name}_rss_first_last_mib"] = [first[f"{name}_rss_mib"],
                                             last[f"{name}_rss_mib"]]
    for algo, _, _ in JOBS:
        walls = [r["wall_s"] for r in rows if r["algorithm"] == algo]
        if walls:
            out[f"{algo}_wall_first_last_s"] = [walls[0], walls[-1]]
            out[f"{algo}_wall_last_over_first"] = round(walls[-1] / walls[0], 3)
            out[f"{algo}_wall_median_s"] = sorted(walls)[len(walls) // 2]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--json", type=Path, help="write the rows and summary here")
    args = ap.parse_args(argv)
    print(f"soak: {args.jobs} jobs between two nodes on 127.0.0.1 "
          f"(RSS via {'psutil' if psutil else '/proc/PID/status'})")
    print("job  algorithm            state       wall s   bank MiB  plat MiB  "
          "children bank/platform (their RSS)")
    with tempfile.TemporaryDirectory(prefix="fedjoint-soak-") as d:
        result = run(args.jobs, Path(d))
    s = result["summary"] = summary(result)
    print(f"\nRSS before the first job: {result['rss_before_first_job_mib']} MiB")
    for name in ("bank", "platform"):
        a, b = s[f"{name}_rss_first_last_mib"]
        print(f"{name:<9} daemon RSS after job 1 -> after job {s['jobs']}: {a} -> {b} MiB "
              f"(growth {s[f'{name}_rss_growth_mib']:+} MiB)")
    for algo, _, _ in JOBS:
        if f"{algo}_wall_first_last_s" in s:
            a, b = s[f"{algo}_wall_first_last_s"]
            print(f"{algo:<20} wall first -> last {a:.2f} -> {b:.2f} s "
                  f"(x{s[f'{algo}_wall_last_over_first']}), median "
                  f"{s[f'{algo}_wall_median_s']:.2f} s")
    print(f"{s['done']}/{s['jobs']} jobs done")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if s["done"] == s["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
