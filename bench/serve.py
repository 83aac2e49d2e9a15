"""Online scoring latency and throughput: ``fedjoint serve`` on loopback under an async
HTTP load generator (httpx), beside the same models scored in-process.

    .venv/bin/python bench/serve.py [--quick] [--json PATH]

Three OS processes besides this one: the platform's node, the bank's node (it trains the
models, then idles) and ``fedjoint serve``, all on 127.0.0.1 with real mutual TLS. The
models are trained by jobs first: SecureBoost with 100 trees of depth 5 (``--quick``: 20)
and logistic regression, on the first 10,000 rows of default_credit (``--quick``: 3,000;
bank 13 features, platform 10; the ``plain`` test cipher, which changes nothing at
scoring time). Then, for each model:

* ``POST /v1/score`` with one applicant per request, at concurrency 1, 8 and 64 (that
  many requests in flight): p50 and p99 latency and requests/s;
* ``POST /v1/score:batch`` with 256 applicants per request at concurrency 4: scores/s;
* the reference, in this process: the same model's two halves (the platform's answerer
  and the bank's scorer, the code the service runs) scoring one applicant, and 256,
  with no HTTP and no channel in between.

Every figure comes from this run on this machine; the ratio served/in-process is what
the HTTP service, the batcher and the channel round trip add. The load generator shares
the machine's cores with the three processes, so on a 2-core machine it is part of the
measurement (a run on one core per process would be faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.nodes: node.toml files and test keys


def start(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "federation.cli", *args], stdout=fh,
                            stderr=subprocess.STDOUT, cwd=str(ROOT))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(cond, proc: subprocess.Popen, log: Path, what: str, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def train(tmp: Path, n_trees: int, procs: list, rows: int):
    from support.nodes import DATA, wait_state, write_job, write_node_tomls

    from federation.admin import AdminClient
    from federation.config import load_job_spec, load_node_config
    bank_toml, plat_toml = write_node_tomls(tmp, deadline_s=30.0)
    for side, name in (("guest", "bank.csv"), ("host", "platform.csv")):   # default_credit
        lines = (DATA / f"default_credit_hetero_{side}.csv").read_text().splitlines()
        (tmp / name).write_text("\n".join(lines[:rows + 1]) + "\n")
    cfgs = {p: load_node_config(t) for p, t in (("bank", bank_toml), ("platform", plat_toml))}
    for party, toml in (("platform", plat_toml), ("bank", bank_toml)):
        log = tmp / f"{party}.log"
        proc = start(["node", "start", "--config", str(toml), "--quiet"], log)
        procs.append(proc)
        wait_for(lambda c=cfgs[party]: (Path(c.data_dir) / "admin.json").exists(), proc, log,
                 f"the {party} node")
    client = AdminClient(cfgs["bank"].data_dir)
    models = {}
    for name, alg, params in (
            ("sb", "secureboost", {"n_trees": n_trees, "max_depth": 5}),
            ("lr", "logistic_regression", {"epochs": 5, "batch_size": 128})):
        job = write_job(tmp, name, alg, params=params)
        t0 = time.perf_counter()
        jid = client.call("submit", spec=load_job_spec(job).to_dict(), source=str(job))["job_id"]
        rec = wait_state(client, jid, timeout=3600)
        if rec["state"] != "done":
            raise RuntimeError(f"training {name} failed: {rec['error']}")
        print(f"trained {alg} {jid} in {time.perf_counter() - t0:.1f} s", flush=True)
        models[name] = jid
    text = plat_toml.read_text() + (
        f'\n[serving]\nmodels = ["{models["sb"]}", "{models["lr"]}"]\n'
        "rate_per_s = 1000000.0\ndaily_budget = 1000000000000\n")
    plat_toml.write_text(text)
    AdminClient(cfgs["platform"].data_dir).call("reload")
    return bank_toml, plat_toml, cfgs, models


def applicants(cfg, model_id: str, features: list[str]) -> list[dict]:
    import numpy as np

    from federation.data import load_dataset
    data = load_dataset(cfg.dataset("loans"), need_label=False)
    cols = [data.feature_names.index(f) for f in features]
    return [{"id": str(i), "features": {f: (None if np.isnan(v) else float(v))
                                        for f, v in zip(features, data.X[r, cols], strict=True)}}
            for r, i in enumerate(data.ids)]


try:
    import aiohttp
    CLIENT = f"aiohttp {aiohttp.__version__}"
except ImportError:  # pragma: no cover - httpx is in the test extra
    aiohttp = None
    CLIENT = "httpx"


class _Client:
    """One keep-alive HTTP/1.1 client with ``concurrency`` connections: aiohttp (the
    bench extra; ~4x less client CPU per request than httpx here, and httpx's pool
    degrades badly at 64 connections) or httpx."""

    def __init__(self, url: str, token: str, concurrency: int):
        hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if aiohttp is not None:
            self.s = aiohttp.ClientSession(url, headers=hdr, connector=aiohttp.TCPConnector(
                limit=concurrency), timeout=aiohttp.ClientTimeout(total=30))
        else:
            import httpx
            self.s = httpx.AsyncClient(base_url=url, headers=hdr, timeout=30,
                                       limits=httpx.Limits(max_connections=concurrency))

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        if aiohttp is not None:
            async with self.s.request(method, path, data=body) as r:
                await r.read()
                return r.status
        r = await self.s.request(method, path, content=body)
        return r.status_code

    async def close(self) -> None:
        await (self.s.close() if aiohttp is not None else self.s.aclose())


async def load(url: str, token: str, path: str, bodies: list[dict] | None, concurrency: int,
               seconds: float) -> dict:
    """``concurrency`` workers, each with one request in flight, for ``seconds``;
    ``bodies`` None: GET."""
    lat: list[float] = []
    errors = 0
    c = _Client(url, token, concurrency)
    method = "GET" if bodies is None else "POST"
    payloads = [None] if bodies is None else [json.dumps(b).encode() for b in bodies]
    try:
        await asyncio.gather(*(c.request(method, path, payloads[k % len(payloads)])
                               for k in range(concurrency)))     # open the connections
        stop_at = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal errors
            rnd = random.Random(k)
            while time.perf_counter() < stop_at:
                body = payloads[rnd.randrange(len(payloads))]
                t0 = time.perf_counter()
                status = await c.request(method, path, body)
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    finally:
        await c.close()
    lat.sort()
    return {"requests": len(lat), "errors": errors, "per_s": len(lat) / wall,
            "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


def in_process(bank_cfg, plat_cfg, model_id: str, apps: list[dict], reps: int) -> dict:
    """The reference: the platform's answerer and the bank's scorer in this process."""
    import numpy as np

    from federation.runner import model_path
    from parties import registry
    from parties.common.artifact import ModelPart
    bank = ModelPart.load(model_path(bank_cfg, model_id))
    plat = ModelPart.load(model_path(plat_cfg, model_id))
    bank_mod, plat_mod = registry.get(bank.algorithm).serving
    scorer = bank_mod.scorer(bank)
    answerer = plat_mod.answerer(plat, scorer.setup)
    from federation.data import load_dataset
    pdata = load_dataset(plat_cfg.dataset("enterprises"), need_label=False)
    Xp = pdata.X[:, [pdata.feature_names.index(f) for f in plat.feature_names]]
    Xb = np.array([[np.nan if v is None else v for v in a["features"].values()]
                   for a in apps])
    out = {}
    for n in (1, 256):
        times = []
        for k in range(reps):
            rows = [(k * n + j) % len(apps) for j in range(n)]
            t0 = time.perf_counter()
            ans, _ = answerer.answer(Xp[rows], np.ones(n, dtype=bool))
            scorer.score(Xb[rows], ans, np.ones(n, dtype=bool))
            times.append(time.perf_counter() - t0)
        out[f"rows_{n}_ms"] = 1000 * statistics.median(times)
        out[f"rows_{n}_scores_per_s"] = n / statistics.median(times)
    if hasattr(scorer, "keys"):
        out["platform_splits"] = len(scorer.keys)
        out["nodes"] = int((~scorer.leaf).sum())
    return out


def floors(url: str, token: str, bank_cfg, seconds: float) -> dict:
    """References measured in this run: ``GET /healthz`` through the same client and
    server (the HTTP floor) and a control round trip over the channel (``node.hello``,
    the bank's identity, the platform's node): what a served score cannot go below."""
    from federation.node.peer import make_channel
    out = {f"healthz_c{c}": asyncio.run(load(url, token, "/healthz", None, c, seconds / 2))
           for c in (1, 64)}
    ch = make_channel(bank_cfg)
    ts = []
    for _ in range(300):
        t0 = time.perf_counter()
        ch.request("node.hello", {})
        ts.append(time.perf_counter() - t0)
    out["channel_rtt_ms"] = 1000 * statistics.median(ts[50:])
    return out


def synthetic(src: Path, dst: Path, n: int, seed: int) -> None:
    """``n`` rows resampled from ``src`` (same columns), ids E0000000.. (both sides use
    the same seed for the ids, so every applicant is held by the platform)."""
    import numpy as np
    import pandas as pd
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    rows = np.random.default_rng(seed).integers(0, len(df), n)
    out = df.iloc[rows].reset_index(drop=True)
    out["id"] = [f"E{k:07d}" for k in range(n)]
    out.to_csv(dst, index=False)


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set of ``pid`` (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bulk(tmp: Path, bank_toml: Path, plat_toml: Path, cfgs: dict, model_id: str,
         n: int, platform_pid: int) -> dict:
    """Part 4: ``n`` applicants scored from a CSV through the pseudonym store (no PSI),
    after the platform's dataset is replaced by an ``n``-row one; beside the same rows
    scored in-process (both halves here, no channel)."""
    import resource

    import numpy as np

    from federation.admin import AdminClient
    from federation.config import load_node_config
    from federation.data import load_dataset
    from federation.serving.bank import ServedModel
    from federation.serving.bulk import score_file
    plat_cfg = cfgs["platform"]
    big_p, big_b = tmp / "platform-big.csv", tmp / "bank-big.csv"
    t0 = time.perf_counter()
    synthetic(Path(plat_cfg.dataset("enterprises").path), big_p, n, 1)
    synthetic(Path(cfgs["bank"].dataset("loans").path), big_b, n, 2)
    print(f"wrote {n}-row files in {time.perf_counter() - t0:.1f} s", flush=True)
    text = plat_toml.read_text().replace(str(plat_cfg.dataset("enterprises").path), str(big_p))
    plat_toml.write_text(text)
    AdminClient(plat_cfg.data_dir).call("reload")
    cfg = load_node_config(bank_toml)
    served = ServedModel(cfg, model_id)
    t0 = time.perf_counter()
    served.open()
    open_s = time.perf_counter() - t0
    res = score_file(served, big_b, tmp / "bulk-scores.csv", progress=lambda r, s: None)
    served.close()
    res["open_s"] = open_s
    res["bank_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["platform_hwm_mib"] = vm_hwm_mib(platform_pid)
    # the reference: the two halves in this process, 1024-row batches
    from federation.runner import model_path
    from parties import registry
    from parties.common.artifact import ModelPart
    bpart = ModelPart.load(model_path(cfg, model_id))
    ppart = ModelPart.load(model_path(plat_cfg, model_id))
    bm, pm = registry.get(bpart.algorithm).serving
    scorer = bm.scorer(bpart)
    answerer = pm.answerer(ppart, scorer.setup)
    bd = load_dataset(replace_cols(cfg.dataset("loans"), big_b, bpart.feature_names),
                      need_label=False)
    pd_ = load_dataset(replace_cols(plat_cfg.dataset("enterprises"), big_p,
                                    ppart.feature_names), need_label=False)
    t0 = time.perf_counter()
    for s in range(0, n, 1024):
        ok = np.ones(min(1024, n - s), dtype=bool)
        ans, _ = answerer.answer(pd_.X[s:s + 1024], ok)
        scorer.score(bd.X[s:s + 1024], ans, ok)
    res["in_process_per_s"] = n / (time.perf_counter() - t0)
    return res


def replace_cols(ds, path: Path, cols: list[str]):
    from dataclasses import replace
    return replace(ds, path=path, columns=list(cols))


def run(tmp: Path, quick: bool, bulk_rows: int = 0) -> dict:
    from support.nodes import free_port

    from federation.config import load_node_config
    n_trees = 20 if quick else 100
    seconds = 3.0 if quick else 8.0
    procs: list = []
    try:
        bank_toml, plat_toml, cfgs, models = train(tmp, n_trees, procs, 3000 if quick else 10000)
        port = free_port()
        log = tmp / "serve.log"
        serve = start(["serve", "--config", str(bank_toml), "--model", models["sb"],
                       "--model", models["lr"], "--listen", f"127.0.0.1:{port}"], log)
        procs.append(serve)
        url = f"http://127.0.0.1:{port}"
        import httpx

        def up() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, serve, log, "fedjoint serve")
        token = (Path(cfgs["bank"].data_dir) / "serving.token").read_text().strip()
        bank_cfg = load_node_config(bank_toml)
        served = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {token}"}
                           ).json()["models"]
        features = {m["model"]: m["features"] for m in served}
        result = {"n_trees": n_trees, "seconds_per_point": seconds, "client": CLIENT,
                  "models": {}, "floors": floors(url, token, bank_cfg, seconds)}
        for name in ("sb", "lr"):
            mid = models[name]
            apps = applicants(bank_cfg, mid, features[mid])
            ref = in_process(bank_cfg, cfgs["platform"], mid, apps, 200 if quick else 1000)
            rows = {"in_process": ref}
            singles = [{"model": mid, **a} for a in apps]
            for c in (1, 8, 64):
                rows[f"c{c}"] = asyncio.run(load(url, token, "/v1/score", singles, c, seconds))
                print(name, f"c={c}", json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                                  for k, v in rows[f"c{c}"].items()}), flush=True)
            batches = [{"model": mid, "applicants": [apps[(k * 256 + j) % len(apps)]
                                                     for j in range(256)]} for k in range(8)]
            b = asyncio.run(load(url, token, "/v1/score:batch", batches, 4, seconds))
            b["scores_per_s"] = b["per_s"] * 256
            rows["batch256_c4"] = b
            result["models"][name] = {"model_id": mid, **rows}
        if bulk_rows:
            result["bulk"] = {"n": bulk_rows, **bulk(tmp, bank_toml, plat_toml, cfgs,
                                                     models["sb"], bulk_rows, procs[0].pid)}
        result["loadavg"] = os.getloadavg()
        return result
    finally:
        for p in reversed(procs):
            stop(p)


def table(res: dict) -> str:
    out = [f"fedjoint serve on loopback (default_credit; SecureBoost {res['n_trees']} trees "
           f"depth 5; LR), "
           f"{res['seconds_per_point']:.0f} s per point", "",
           "| model | load | p50 ms | p99 ms | req/s | scores/s | in-process (same run) | "
           "p50 / in-process |", "|---|---|---|---|---|---|---|---|"]
    for name, m in res["models"].items():
        ref = m["in_process"]
        label = "SecureBoost" if name == "sb" else "LR"
        if name == "sb":
            label += f" ({ref.get('nodes')} splits, {ref.get('platform_splits')} platform)"
        for c in (1, 8, 64):
            r = m[f"c{c}"]
            out.append(f"| {label} | /v1/score, concurrency {c} | {r['p50_ms']:.2f} | "
                       f"{r['p99_ms']:.2f} | {r['per_s']:.0f} | {r['per_s']:.0f} | "
                       f"{ref['rows_1_ms']:.3f} ms per applicant | "
                       f"{r['p50_ms'] / ref['rows_1_ms']:.0f}x |")
        b = m["batch256_c4"]
        out.append(f"| {label} | /v1/score:batch 256, concurrency 4 | {b['p50_ms']:.2f} | "
                   f"{b['p99_ms']:.2f} | {b['per_s']:.0f} | {b['scores_per_s']:.0f} | "
                   f"{ref['rows_256_scores_per_s']:.0f} scores/s (256 rows) | "
                   f"{ref['rows_256_scores_per_s'] / b['scores_per_s']:.1f}x faster |")
    errors = sum(m[k]["errors"] for m in res["models"].values()
                 for k in ("c1", "c8", "c64", "batch256_c4"))
    f = res["floors"]
    out += ["", f"references (same run): GET /healthz p50 {f['healthz_c1']['p50_ms']:.2f} ms / "
            f"{f['healthz_c1']['per_s']:.0f} req/s at concurrency 1, "
            f"{f['healthz_c64']['per_s']:.0f} req/s at 64 (HTTP floor, same client and "
            f"server); channel control round trip p50 {f['channel_rtt_ms']:.2f} ms",
            f"client: {res['client']}; non-200 answers: {errors}; load average at the end "
            f"{', '.join(f'{v:.1f}' for v in res['loadavg'])} (other processes share the "
            f"machine)"]
    if "bulk" in res:
        b = res["bulk"]
        out += ["", f"--score-file, SecureBoost, {b['n']} applicants, no PSI: {b['rows']} rows "
                f"in {b['seconds']:.1f} s = {b['per_s']:.0f}/s ({b['held']} held); session "
                f"open (platform builds its {b['n']}-row store) {b['open_s']:.1f} s; peak RSS "
                f"bank side {b['bank_maxrss_mib']:.0f} MiB, platform node "
                f"{b['platform_hwm_mib']:.0f} MiB; in-process (same rows, both halves here) "
                f"{b['in_process_per_s']:.0f}/s"]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bulk", type=int, default=0, metavar="N",
                    help="also score N synthetic applicants from a CSV (part 4)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedjoint-serve-bench-") as d:
        res = run(Path(d), args.quick, args.bulk)
    print(table(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
