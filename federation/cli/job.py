"""``fedjoint job``: submit, follow, approve/refuse, cancel and report jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from federation.admin import AdminClient
from federation.cli.common import (
    EXIT_ERROR,
    EXIT_JOB_FAILED,
    FINAL,
    CliError,
    admin_client,
    config_option,
    console,
    fmt_metric,
    fmt_time,
    need_config,
    print_table,
)
from federation.config import load_job_spec

#: `fedjoint job validate`: the check itself could not run (like `audit`'s exit 2)
EXIT_CANNOT_CHECK = 2


@click.group()
def job() -> None:
    """Submit and follow jobs."""


@job.command("submit")
@click.argument("job_file", type=click.Path())
@config_option
@click.option("--wait", is_flag=True, help="follow the job until it ends")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def job_submit(job_file: str, config_path: str | None, wait: bool, as_json: bool) -> None:
    """Submit JOB_FILE (job.toml) to the local (bank) node."""
    spec = load_job_spec(job_file)
    client = admin_client(config_path)
    res = client.call("submit", spec=spec.to_dict(), source=str(job_file))
    job_id = res["job_id"]
    if not wait:
        if as_json:
            click.echo(json.dumps(res))
        else:
            click.echo(f"submitted job {job_id}; follow it with `fedjoint job status "
                       f"{job_id}` or `fedjoint job logs {job_id} --follow`")
        return
    rec = _follow(client, job_id, quiet=as_json)
    if as_json:
        click.echo(json.dumps(rec, default=str))
    else:
        _print_status(rec)
    if rec["state"] != "done":
        sys.exit(EXIT_JOB_FAILED)


def _follow(client: AdminClient, job_id: str, quiet: bool = False, poll: float = 0.3) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    c = console(stderr=True)
    last_state = None
    told_waiting = False

    def tell_waiting(rec: dict) -> None:
        nonlocal told_waiting
        if rec.get("waiting") and not told_waiting and not quiet:
            click.echo(f"{job_id}: {rec['waiting']}", err=True)
            told_waiting = True
    if quiet or not c.is_terminal:
        while True:
            rec = client.call("status", job_id=job_id)
            tell_waiting(rec)
            if rec["state"] != last_state and not quiet:
                click.echo(f"{job_id}: {rec['state']}", err=True)
                last_state = rec["state"]
            if rec["state"] in FINAL:
                return rec
            time.sleep(poll)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=c,
                  transient=True) as prog:
        task = prog.add_task(job_id, total=1.0, step="")
        while True:
            rec = client.call("status", job_id=job_id)
            if rec.get("waiting") and not told_waiting:
                prog.console.print(f"{job_id}: {rec['waiting']}")
                told_waiting = True
            p = rec.get("progress") or {}
            prog.update(task, description=f"{rec['state']}", completed=p.get("fraction", 0),
                        step=p.get("step", ""))
            if rec["state"] in FINAL:
                return rec
            time.sleep(poll)


def _print_status(rec: dict) -> None:
    c = console()
    color = {"done": "green", "failed": "red", "cancelled": "yellow"}.get(rec["state"], "cyan")
    c.print(f"[bold]{rec['job_id']}[/]  {rec['algorithm']}  [{color}]{rec['state']}[/]")
    if rec.get("error"):
        c.print(f"  reason: {rec['error']}")
    if rec.get("waiting"):
        c.print(f"  {rec['waiting']}")
    p = rec.get("progress") or {}
    if rec["state"] not in FINAL and p.get("step"):
        c.print(f"  progress: {p['step']} {100 * float(p.get('fraction', 0)):.0f}%")
    m = rec.get("metrics") or {}
    shown = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
    if shown:
        c.print("  " + "  ".join(f"{k}={fmt_metric(v)}" for k, v in sorted(shown.items())))
    if m.get("iv_ranking"):   # binning jobs: features by information value
        c.print("  IV ranking: " + "  ".join(f"{r['feature']}={fmt_metric(r['iv'])}"
                                             for r in m["iv_ranking"]))
    for name, sm in (m.get("stages") or {}).items():   # a pipeline: one line per stage
        what = (f"{sm.get('n_selected')} kept: " + ", ".join(sm.get("selected") or [])
                if "selected" in sm else f"test AUC {fmt_metric(sm['test_auc'])}"
                if "test_auc" in sm else f"{sm.get('features', '')} features")
        c.print(f"  stage {name} ({sm.get('algorithm')}): {what}")
    t = rec.get("timings") or {}
    if t.get("total"):
        c.print(f"  time: {t['total']:.1f} s")
    art = rec.get("artifacts") or {}
    for k in ("model", "scores", "transcript"):
        if art.get(k):
            c.print(f"  {k}: {art[k]}")
    for name, path in (art.get("models") or {}).items():
        c.print(f"  model {rec['job_id']}.{name}: {path}")


@job.command("validate")
@click.argument("job_file", type=click.Path())
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON")
def job_validate(job_file: str, config_path: str | None, as_json: bool) -> None:
    """Check JOB_FILE against the local node without proposing it: the job file and its
    [params], this node's policy (algorithm, dataset, key size), the dataset's file and
    header columns, the job's column choice. Exit 0: valid here; 1: a check failed;
    2: could not check (no or broken node.toml, no job file)."""
    from federation.config import ConfigError, load_node_config
    if not config_path:
        _cannot_check("no node config: pass --config node.toml or set FEDJOINT_CONFIG")
    try:
        node = load_node_config(config_path)
    except ConfigError as exc:
        _cannot_check(str(exc))
    if not Path(job_file).is_file():
        _cannot_check(f"{job_file}: job file not found")
    checks = validate_job(job_file, node)
    failed = [c for c in checks if c[0] == "FAIL"]
    if as_json:
        click.echo(json.dumps({"valid": not failed, "node": node.name, "party": node.party,
                               "checks": [{"status": st, "check": what, "detail": detail}
                                          for st, what, detail in checks]}, indent=2))
    else:
        click.echo(f"{job_file} against {node.name} ({node.party} node, {node.file}):")
        for st, what, detail in checks:
            click.echo(f"  {st:<4}  {what}" + (f": {detail}" if detail else ""))
        n = sum(1 for c in checks if c[0] != "--")
        click.echo(f"invalid: {len(failed)} of {n} checks failed (nothing was proposed)"
                   if failed else f"valid: {n} checks passed on {node.name} (nothing was "
                   "proposed)")
    if failed:
        sys.exit(EXIT_ERROR)


def _cannot_check(msg: str):
    err = CliError(msg)
    err.exit_code = EXIT_CANNOT_CHECK
    raise err


def validate_job(job_file: str, node) -> list[tuple[str, str, str]]:
    """The checks of ``fedjoint job validate``: (``ok`` | ``FAIL`` | ``--`` (not checked
    here), what, detail). Reads node.toml, the job file, the dataset's header and (score
    jobs) the job store; proposes and writes nothing."""
    from federation.config import ConfigError
    from federation.data import DataError
    from federation.policy import (
        NOT_OFFERED,
        feature_refusal,
        features_not_offered,
        header_columns,
        offered_columns,
        policy_checks,
    )
    out: list[tuple[str, str, str]] = []

    def check(what: str, problem: str, detail: str = "") -> bool:
        out.append(("FAIL" if problem else "ok", what, problem or detail))
        return not problem

    try:
        spec = load_job_spec(job_file)
    except ConfigError as exc:
        check("the job file and its [params]", str(exc))
        return out
    party = node.party
    params = ", ".join(f"{k} = {v!r}" for k, v in spec.params.items()) or "defaults"
    detail = f"{spec.algorithm}, [params] {params}"
    if spec.stages is not None:   # a pipeline: its stages, each with its params
        detail = "pipeline: " + "; ".join(
            f"{st['name']} ({st['algorithm']}"
            + "".join(f", {k} <- {v}" for k, v in st["inputs"].items()) + ") "
            + (", ".join(f"{k} = {v!r}" for k, v in st["params"].items()) or "defaults")
            for st in spec.stages)
    if spec.aliases:
        detail += " (read " + ", ".join(f"{a} as {c}" for a, c in spec.aliases) + ")"
    check(f"job {spec.name!r} parses", "", detail)
    if party == "platform":
        out.append(("--", "submitting", "jobs are submitted at the bank's node; this "
                    "checks the platform's side of the job"))
    if spec.algorithm == "score":
        check("model " + repr(spec.model) + " is on this node", _model_problem(spec, node))
    for what, problem in policy_checks(spec, node):
        if problem == NOT_OFFERED:   # this node's own operator may see which names
            try:
                problem += " (" + ", ".join(repr(c) for c in
                                            features_not_offered(spec, node)) + ")"
            except DataError:
                pass
        check(what, problem)
    ds_name = spec.dataset_for(party)
    if ds_name in node.datasets:
        ds = node.datasets[ds_name]
        try:
            header = header_columns(ds)
        except DataError as exc:
            check(f"dataset {ds_name!r}: file {ds.path} is readable", str(exc))
        else:
            check(f"dataset {ds_name!r}: file {ds.path} is readable", "",
                  f"{len(header)} columns in its header")
            check(f"id column {ds.id_column!r} is in the header",
                  "" if ds.id_column in header else f"not found in {ds.path}; set "
                  f"id_column in [datasets.{ds_name}]")
            needs_label = party == "bank" and spec.kind == "train" and \
                getattr(_algorithm(spec), "needs_label", False)
            if needs_label:
                ok = ds.label_column and ds.label_column in header
                check(f"label column {ds.label_column!r} is in the header", "" if ok else
                      f"set label_column in [datasets.{ds_name}] to a column of {ds.path}")
            if ds.columns is not None:
                missing = [c for c in ds.columns if c not in header]
                check(f"[datasets.{ds_name}] columns are in the header",
                      f"{missing} are not in {ds.path}" if missing else "")
            if ds.categorical:
                missing = [c for c in ds.categorical if c not in header]
                algo = _algorithm(spec) if spec.kind == "train" else None
                check(f"[datasets.{ds_name}] categorical columns",
                      f"{missing} are not in {ds.path}" if missing else
                      f"{spec.algorithm} takes numeric features only" if algo is not None
                      and not getattr(algo, "categorical", False) else "",
                      f"{len(ds.categorical)} column(s), at most {ds.max_categories} levels")
            wanted = spec.features_for(party)
            key = "features" if party == "bank" else "peer_features"
            if wanted is None and spec.kind == "train":
                try:
                    n = len(offered_columns(ds))
                except DataError:
                    n = 0
                out.append(("--", key, f"not set: the job uses all {n} feature columns "
                            f"dataset {ds_name!r} offers"))
            elif wanted is not None and party == "bank":
                check(f"features ({len(wanted)}) are columns of dataset {ds_name!r}",
                      feature_refusal(spec, node).removeprefix("features: "),
                      ", ".join(wanted))
    peer = "platform" if party == "bank" else "bank"
    pf = spec.features_for(peer)
    out.append(("--", f"the {peer}'s side", f"dataset {spec.dataset_for(peer)!r}"
                + (f", {len(pf)} chosen columns" if pf else "")
                + ("; its node checks it when the job is proposed" if peer == "platform"
                   else "; the bank's node checks it when the job is submitted")))
    return out


def _algorithm(spec):
    from parties import registry
    try:
        return registry.get(spec.model_algorithm) if spec.model_algorithm not in \
            ("psi", "score", "") else None
    except registry.RegistryError:
        return None


def _model_problem(spec, node) -> str:
    from federation.jobstore import JobStore
    db = Path(node.data_dir) / "jobs.db"
    if not db.is_file():
        return f"no model {spec.model!r} on this node (it has no job store yet)"
    try:
        m = JobStore(db).model(spec.model)
    except KeyError as exc:
        return str(exc.args[0])
    if not Path(m["path"]).is_file():
        return f"model {m['model_id']!r} is registered but its file {m['path']} is missing"
    return ""


@job.command("status")
@click.argument("job_id")
@config_option
@click.option("--json", "as_json", is_flag=True)
def job_status(job_id: str, config_path: str | None, as_json: bool) -> None:
    """Show one job's state, error and metrics."""
    rec = admin_client(config_path, read_only=True).call("status", job_id=job_id)
    if as_json:
        click.echo(json.dumps(rec, indent=2, default=str))
    else:
        _print_status(rec)


@job.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True)
def job_list(config_path: str | None, as_json: bool, limit: int) -> None:
    """List recent jobs on this node."""
    rows = admin_client(config_path, read_only=True).call("list", limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = [("JOB", "ALGORITHM", "ROLE", "STATE", "CREATED", "REASON / METRICS")]
    for r in rows:
        m = r.get("metrics") or {}
        extra = r.get("error") or r.get("waiting") or (
            f"auc={m['test_auc']:.4f}" if "test_auc" in m else
            f"intersection={m['intersection']:,}" if "intersection" in m else "")
        table.append((r["job_id"], r["algorithm"], r["role"], r["state"],
                      fmt_time(r["created"]), extra))
    print_table(table)


@job.command("logs")
@click.argument("job_id")
@config_option
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def job_logs(job_id: str, config_path: str | None, follow: bool, as_json: bool) -> None:
    """Print a job's event log."""
    client = admin_client(config_path, read_only=True)
    after = 0
    while True:
        res = client.call("logs", job_id=job_id, after=after)
        for e in res["events"]:
            after = max(after, e["id"])
            if as_json:
                click.echo(json.dumps(e, default=str))
            else:
                fields = {k: v for k, v in e.items() if k not in ("id", "ts", "event")}
                rest = " ".join(f"{k}={v}" for k, v in fields.items())
                click.echo(f"{fmt_time(e['ts'])}  {e['event']:<22} {rest}")
        if not follow or res["state"] in FINAL:
            if follow and res["state"] in FINAL:
                # drain events written alongside the final transition
                for e in client.call("logs", job_id=job_id, after=after)["events"]:
                    click.echo(json.dumps(e, default=str) if as_json else
                               f"{fmt_time(e['ts'])}  {e['event']}")
            return
        time.sleep(0.5)


@job.command("cancel")
@click.argument("job_id")
@config_option
def job_cancel(job_id: str, config_path: str | None) -> None:
    """Cancel a job (the peer is told too)."""
    res = admin_client(config_path).call("cancel", job_id=job_id)
    click.echo(f"job {res['job_id']} cancelled")


@job.command("resume")
@click.argument("job_id")
@config_option
def job_resume(job_id: str, config_path: str | None) -> None:
    """Resume an interrupted job from the last checkpoint both nodes hold."""
    res = admin_client(config_path).call("resume", job_id=job_id)
    where = f" ({res['stage']} step {res['step']})" if "stage" in res else ""
    if "checkpoint" in res:
        click.echo(f"job {job_id} resumed from checkpoint {res['checkpoint']}{where}")
    else:
        click.echo(f"job {job_id}: the bank resumes it")


@job.command("approve")
@click.argument("job_id")
@config_option
def job_approve(job_id: str, config_path: str | None) -> None:
    """Approve a proposed job (platform, when require_approval = true)."""
    res = admin_client(config_path).call("approve", job_id=job_id)
    click.echo(f"job {res['job_id']} approved")


@job.command("refuse")
@click.argument("job_id")
@config_option
@click.option("--reason", default="", help="shown to the bank's modeler")
def job_refuse(job_id: str, config_path: str | None, reason: str) -> None:
    """Refuse a proposed job (platform, when require_approval = true)."""
    res = admin_client(config_path).call("refuse", job_id=job_id, reason=reason)
    click.echo(f"job {res['job_id']} refused")


@job.command("report")
@click.argument("job_id")
@config_option
@click.option("--out", "out_path", type=click.Path(), default=None,
              help="HTML file to write (default: <data_dir>/jobs/<job>/report.html)")
@click.option("--oot", default=None, metavar="SCORE_JOB|FILE",
              help="out-of-time population: a done scoring job of this model on a "
                   "labelled dataset, or a scoring job file (score.toml) to run first")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="score threshold of the confusion matrix (default: the "
                                 "KS-optimal score on the test rows)")
@click.option("--binning", default=None, metavar="JOB",
              help="a binning job whose WOE/IV tables (and bins, for PSI) to include")
def job_report(job_id: str, config_path: str | None, out_path: str | None, oot: str | None,
               threshold: float | None, binning: str | None) -> None:
    """Write a self-contained HTML model-risk report of a job (docs/report.md)."""
    from federation import report
    cfg = need_config(config_path)
    if oot and oot.endswith(".toml"):
        oot = _run_oot_job(oot, config_path, job_id)
    data = admin_client(config_path, read_only=True).call(
        "report_data", job_id=job_id, oot=oot or "", threshold=threshold,
        binning=binning or "")
    out = Path(out_path) if out_path else Path(cfg.data_dir) / "jobs" / data["job"]["id"] / \
        "report.html"
    path = report.write_report(data, out)
    click.echo(f"report written to {path}")


def _run_oot_job(job_file: str, config_path: str | None, job_id: str) -> str:
    """Submit a scoring job file for the report's out-of-time population and wait
    (checked first: a scoring job of this job's model, so nothing runs in vain)."""
    if not Path(job_file).is_file():
        raise CliError(f"--oot {job_file}: no such scoring job file")
    spec = load_job_spec(job_file)
    if spec.algorithm != "score":
        raise CliError(f"--oot {job_file}: algorithm is {spec.algorithm!r}; an out-of-time "
                       "population is scored by a job with algorithm = 'score'")
    if not spec.model.startswith(job_id):
        raise CliError(f"--oot {job_file}: it scores model {spec.model!r}, not job {job_id}'s "
                       "(a pipeline's: <job>.<stage>)")
    client = admin_client(config_path)
    res = client.call("submit", spec=spec.to_dict(), source=str(job_file))
    rec = _follow(client, res["job_id"], quiet=True)
    if rec["state"] != "done":
        raise CliError(f"--oot {job_file}: scoring job {res['job_id']} ended {rec['state']}: "
                       f"{rec.get('error') or ''}")
    click.echo(f"out-of-time population scored by job {res['job_id']}", err=True)
    return res["job_id"]
