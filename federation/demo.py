"""``fedjoint demo``: both party nodes on loopback with mutual TLS, end to end.

1. copies examples/credit_risk (configs, jobs, default-credit data) to a work dir;
2. creates each party's keys (``keys init``) and pins each other's certificate;
3. starts the bank's and the platform's nodes (one process, two gRPC servers, two
   admin endpoints, two SQLite job stores);
4. submits, through the bank's admin endpoint like the CLI does: a PSI-only job, a
   SecureBoost job, a logistic-regression job, and a scoring job on new applicants
   with the SecureBoost model;
5. verifies both parties' transcripts of every job and writes the SecureBoost report
   (with the scored applicants as its out-of-time population).

``--quick`` uses a slice of the data (12,000 training customers, 2,000 applicants),
1024-bit Paillier test keys (allowed by the demo's test policy only) and smaller
models, to finish in well under a minute.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "credit_risk"


@dataclass
class DemoResult:
    work_dir: Path
    jobs: dict = field(default_factory=dict)       # label -> status dict (bank side)
    verified: dict = field(default_factory=dict)   # label -> bool (both transcripts)
    report: Path | None = None
    scores: Path | None = None
    score_auc: float | None = None
    seconds: float = 0.0


def _dump_toml(d: dict) -> str:
    """Tiny TOML writer for the config shapes used here (tables of scalars/lists)."""
    def val(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    out: list[str] = []

    def table(prefix: str, t: dict) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        if prefix:
            out.append(f"[{prefix}]")
        out.extend(f"{k} = {val(v)}" for k, v in scalars.items())
        out.append("")
        for k, v in t.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", d)
    return "\n".join(out)


def _load_toml(path: Path) -> dict:
    from federation.config import tomllib
    return tomllib.loads(path.read_text())


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slice_csv(src: Path, dst: Path, keep) -> int:
    n = 0
    with open(src, newline="") as fi, open(dst, "w", newline="") as fo:
        r, w = csv.reader(fi), csv.writer(fo)
        w.writerow(next(r))
        for i, row in enumerate(r):
            if keep(i, row[0]):
                w.writerow(row)
                n += 1
    return n


def prepare(work: Path, quick: bool, say=print) -> tuple[Path, Path, Path]:
    """Copy the example, make keys, pin fingerprints, set loopback ports.
    Returns (bank node.toml, platform node.toml, jobs dir)."""
    from federation.keys import init_party_keys
    if not EXAMPLE.exists():
        raise FileNotFoundError(f"{EXAMPLE}: the example directory is missing (the demo runs "
                                "from a source checkout)")
    shutil.copytree(EXAMPLE / "bank", work / "bank")
    shutil.copytree(EXAMPLE / "platform", work / "platform")
    shutil.copytree(EXAMPLE / "jobs", work / "jobs")
    data = work / "data"
    data.mkdir()
    if quick:
        n_bank = _slice_csv(EXAMPLE / "data" / "bank.csv", data / "bank.csv",
                            lambda i, _id: i < 12000)
        n_app = _slice_csv(EXAMPLE / "data" / "bank_holdout.csv", data / "bank_holdout.csv",
                           lambda i, _id: i < 2000)
        ids: set[str] = set()
        for name, limit in (("bank.csv", 13000), ("bank_holdout.csv", 2000)):
            _slice_csv(EXAMPLE / "data" / name, data / "_tmp.csv",
                       lambda i, id_, lim=limit: (ids.add(id_) or True) if i < lim else False)
        (data / "_tmp.csv").unlink()
        n_plat = _slice_csv(EXAMPLE / "data" / "platform.csv", data / "platform.csv",
                            lambda i, id_: id_ in ids)
    else:
        for name in ("bank.csv", "bank_holdout.csv", "platform.csv"):
            shutil.copy(EXAMPLE / "data" / name, data / name)
        n_bank, n_app, n_plat = 24000, 6000, 29520
    say(f"data: bank {n_bank:,} customers, {n_app:,} new applicants; platform "
        f"{n_plat:,} enterprises")

    keys = {}
    for party, name in (("bank", "bank-a"), ("platform", "platform-b")):
        keys[name] = init_party_keys(name, work / party / "keys")
    for src, dst in (("bank", "platform"), ("platform", "bank")):
        name = "bank-a" if src == "bank" else "platform-b"
        for suffix in (".tls.crt", ".sign.pub"):
            shutil.copy(work / src / "keys" / f"{name}{suffix}",
                        work / dst / "keys" / f"{name}{suffix}")
    say(f"keys: bank-a certificate {keys['bank-a']['cert_fingerprint'][:23]}..., "
        f"platform-b certificate {keys['platform-b']['cert_fingerprint'][:23]}...")

    ports = {"bank": (_free_port(), _free_port()), "platform": (_free_port(), _free_port())}
    paths = {}
    for party, peer, peer_name in (("bank", "platform", "platform-b"),
                                   ("platform", "bank", "bank-a")):
        p = work / party / "node.toml"
        cfg = _load_toml(p)
        cfg["node"]["listen"] = f"127.0.0.1:{ports[party][0]}"
        cfg["node"]["admin"] = f"127.0.0.1:{ports[party][1]}"
        cfg["peer"]["address"] = f"127.0.0.1:{ports[peer][0]}"
        cfg["peer"]["cert_fingerprint"] = keys[peer_name]["cert_fingerprint"]
        cfg["channel"]["deadline_s"] = 30
        if quick:
            cfg["policy"]["allow_insecure_test_jobs"] = True   # 1024-bit test keys
            cfg["policy"]["min_key_bits"] = 1024
        p.write_text(_dump_toml(cfg))
        paths[party] = p

    jobs = work / "jobs"
    for name in ("secureboost.toml", "lr.toml"):
        j = _load_toml(jobs / name)
        if quick:
            j["evaluation"]["key_bits"] = 1024
            if name == "secureboost.toml":
                j["params"].update({"n_trees": 10, "max_depth": 4})
            else:
                j["params"].update({"epochs": 3, "batch_size": 2048})
        else:   # 2048-bit keys on the full data: keep the demo under five minutes
            if name == "secureboost.toml":
                j["params"].update({"n_trees": 10})
            else:
                j["params"].update({"epochs": 3})
        (jobs / name).write_text(_dump_toml(j))
    return paths["bank"], paths["platform"], jobs


def run_demo(quick: bool = False, work_dir: str | Path | None = None, *,
             console=None) -> DemoResult:
    from rich.console import Console

    from federation import audit
    from federation.admin import AdminClient
    from federation.config import load_job_spec, load_node_config
    from federation.node import Node

    c = console or Console(highlight=False, soft_wrap=True, emoji=False)
    t0 = time.monotonic()
    if work_dir is None:
        work = Path(tempfile.mkdtemp(prefix="fedjoint-demo-"))
    else:
        work = Path(work_dir)
        if work.exists() and any(work.iterdir()):
            raise FileExistsError(f"{work}: the demo needs an empty or new directory")
        work.mkdir(parents=True, exist_ok=True)
    res = DemoResult(work)
    c.print(f"[bold]fedjoint demo[/] ({'quick' if quick else 'full'}) in {work}")
    bank_toml, plat_toml, jobs = prepare(work, quick, say=lambda m: c.print("  " + m))

    bank = Node(load_node_config(bank_toml), quiet=True).start()
    plat = Node(load_node_config(plat_toml), quiet=True).start()
    try:
        client = AdminClient(bank.data_dir)
        chk = client.call("check", timeout=30)
        if not chk.get("ok"):
            raise RuntimeError(f"the nodes cannot reach each other: {chk.get('error')}")
        c.print(f"  nodes: bank-a on {bank.channel_address}, platform-b on "
                f"{plat.channel_address}; mutual TLS round trip {chk['rtt_ms']:.2f} ms")

        def run(label: str, job_file: Path, **override) -> dict:
            spec = load_job_spec(job_file)
            for k, v in override.items():
                setattr(spec, k, v)
            job_id = client.call("submit", spec=spec.to_dict(), source=str(job_file))["job_id"]
            t = time.monotonic()
            with c.status(f"{label}: {job_id}") as st:
                while True:
                    rec = client.call("status", job_id=job_id)
                    p = rec.get("progress") or {}
                    st.update(f"{label}: {rec['state']} {p.get('step', '')}")
                    if rec["state"] in ("done", "failed", "cancelled"):
                        break
                    time.sleep(0.2)
            took = time.monotonic() - t
            if rec["state"] != "done":
                raise RuntimeError(f"{label} job {job_id} {rec['state']}: {rec['error']}")
            res.jobs[label] = rec
            m = rec["metrics"]
            msg = f"intersection {m.get('intersection', 0):,}"
            if "test_auc" in m:
                msg += f", test AUC {m['test_auc']:.4f}, KS {m['test_ks']:.4f}"
            if "scored" in m:
                msg += f", scored {m['scored']:,}"
            c.print(f"  [green]done[/] {label:<13} {job_id}  {msg}  ({took:.1f} s)")
            return rec

        run("PSI", jobs / "psi.toml")
        sb = run("SecureBoost", jobs / "secureboost.toml")
        run("LR", jobs / "lr.toml")
        scores = work / "scores.csv"
        run("scoring", jobs / "score.toml", model=sb["job_id"], output=str(scores))
        res.scores = scores
        res.score_auc = _score_auc(scores, work / "data" / "bank_holdout.csv")
        if res.score_auc is not None:
            c.print(f"  scores: {scores} (AUC on the applicants' later outcomes "
                    f"{res.score_auc:.4f})")

        for label, rec in res.jobs.items():
            prec = AdminClient(plat.data_dir).call("status", job_id=rec["job_id"])
            v = audit.verify(rec["artifacts"]["transcript"], prec["artifacts"]["transcript"])
            res.verified[label] = bool(v.ok)
            c.print(f"  transcript {label:<13} "
                    f"{'[green]verified[/]' if v.ok else '[red]NOT verified[/]'}"
                    f" (both parties): {v.detail}")

        from federation import report
        # the applicants' later outcomes are in their file: the out-of-time evaluation
        data = client.call("report_data", job_id=sb["job_id"],
                           oot=res.jobs["scoring"]["job_id"])
        res.report = report.write_report(data, work / "report.html")
        res.seconds = time.monotonic() - t0
        c.print(f"[bold]report:[/] {res.report}")
        c.print(f"next: `fedjoint job list --config {bank_toml}`, "
                f"`fedjoint audit replay {sb['artifacts']['transcript']} --party-dir "
                f"{bank_toml.parent}`  ({res.seconds:.0f} s in all)")
    finally:
        bank.stop()
        plat.stop()
    return res


def _score_auc(scores: Path, holdout: Path) -> float | None:
    import numpy as np

    from parties.common import metrics
    labels = {}
    with open(holdout, newline="") as fh:
        r = csv.DictReader(fh)
        if "y" not in (r.fieldnames or []):
            return None
        for row in r:
            labels[row["id"]] = int(float(row["y"]))
    y, p = [], []
    with open(scores, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["id"] in labels:
                y.append(labels[row["id"]])
                p.append(float(row["score"]))
    if len(set(y)) < 2:
        return None
    return metrics.auc(np.array(y), np.array(p))
