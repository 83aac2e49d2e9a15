"""``fedjoint audit verify|replay|show``: the auditor's commands.

Thin: the checks live in :mod:`federation.audit`; this module parses options and
renders its reports (rich tables, or ``--json``) and exits with the report's code:
0 verified (or replay matched), 1 verification failed, 2 could not run.
"""

from __future__ import annotations

import json
import sys

import click

from federation.audit import (
    EXIT_CANNOT_RUN,
    EXIT_FAILED,
    EXIT_OK,
    CannotRun,
    JointReplayReport,
    ReplayReport,
    VerifyReport,
    joint_replay,
    pins_from_cli,
    replay,
    show,
    verify,
)
from federation.transcript import TranscriptError, TranscriptUnreadable


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def _print_summary(console, s: dict) -> None:
    if not s:
        return
    console.print(f"[bold]{s['file']}[/]  job {s['job_id']}  written by {s['party']} "
                  f"(peer {s['peer']})  status {s['status']}"
                  + (f" ({s['reason']})" if s.get("reason") else ""))
    console.print(f"  messages sent {s['messages']['sent']} ({_human(s['bytes']['sent'])}), "
                  f"received {s['messages']['received']} ({_human(s['bytes']['received'])}), "
                  f"duration {s['duration_s']:.1f} s")
    for name, fp in s.get("fingerprints", {}).items():
        pin = "pinned" if name in s.get("pinned", []) else "NOT pinned"
        console.print(f"  signing key {name}: {_fmt_fp(fp)}  ({pin})")
    for name, dg in s.get("model_digests", {}).items():
        console.print(f"  model part {name}: {dg}")
    for e in s.get("exports", []):
        what = f"revealed its half to {e['to']}" if e["act"] == "reveal" else \
            f"exported the full model as {e['format']} (file sha256 {str(e['sha256'])[:16]}..., " \
            f"revealed by {e['revealed_by']})"
        console.print(f"  export (record {e['record']}): {s['party']} {what}")
    if s.get("ledger"):
        from rich.table import Table

        tab = Table(title="disclosure ledger", title_justify="left")
        for col in ("to", "category", "messages", "values", "kinds"):
            tab.add_column(col)
        for e in s["ledger"]:
            tab.add_row(e["to"], e["category"], str(e["messages"]), str(e["values"]),
                        ", ".join(e["kinds"]))
        console.print(tab)


def _fmt_fp(hex_fp: str) -> str:
    """Fingerprints as `fedjoint keys init` prints them (AB:CD:...)."""
    try:
        return ":".join(hex_fp[i:i + 2] for i in range(0, len(hex_fp), 2)).upper()
    except TypeError:
        return str(hex_fp)


@click.group("audit", help="Verify, replay and show job transcripts (exit codes: 0 "
                           "verified, 1 verification failed, 2 could not run).")
def audit_group() -> None:
    pass


@audit_group.command("verify")
@click.argument("transcript")
@click.option("--peer", "peer", default=None, help="the other party's transcript")
@click.option("--pin", "pins", multiple=True,
              help="NAME=KEY: pin a party's Ed25519 key (hex or sha256 fingerprint)")
@click.option("--config", "config_path", default=None,
              help="node.toml: pin this node's and its peer's signing keys")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def verify_cmd(transcript, peer, pins, config_path, as_json) -> None:
    """Check a transcript's hash chain, signatures, sequences and outcome (and,
    with --peer, that both parties' transcripts agree on every message)."""
    try:
        pinned = pins_from_cli(pins, config_path)
    except (CannotRun, TranscriptError) as exc:
        _die(str(exc), as_json)
    rep = verify(transcript, peer, pinned)
    _emit_verify(rep, as_json)
    sys.exit(rep.exit_code)


@audit_group.command("replay")
@click.argument("transcript")
@click.option("--party-dir", required=True, help="the party's directory (node.toml)")
@click.option("--peer", "peer", default=None,
              help="joint replay: the other party's transcript (needs --peer-dir)")
@click.option("--peer-dir", default=None,
              help="joint replay: the other party's directory (node.toml, data, vault)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def replay_cmd(transcript, party_dir, peer, peer_dir, as_json) -> None:
    """Re-run this party's side from its own data, keys and seed; check every sent
    message and the final model part against the signed record. With --peer and
    --peer-dir, replay both sides together from both vaults (no sidecar needed) and
    check every message against both transcripts."""
    if (peer is None) != (peer_dir is None):
        _die("joint replay needs both --peer (the other party's transcript) and "
             "--peer-dir (its directory)", as_json)
    if peer is not None:
        jrep = joint_replay(transcript, party_dir, peer, peer_dir)
        _emit_joint(jrep, as_json)
        sys.exit(jrep.exit_code)
    rep = replay(transcript, party_dir)
    _emit_replay(rep, as_json)
    sys.exit(rep.exit_code)


@audit_group.command("show")
@click.argument("transcript")
@click.option("--json", "as_json", is_flag=True, help="machine-readable timeline")
def show_cmd(transcript, as_json) -> None:
    """Print the transcript as a timeline (rich table) or as JSON."""
    try:
        data = show(transcript)
    except TranscriptError as exc:
        _die(str(exc), as_json, code=EXIT_CANNOT_RUN if isinstance(
            exc, TranscriptUnreadable) else EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(data, indent=1))
    else:
        _print_show(data)
    sys.exit(EXIT_OK if data["verified"] else EXIT_FAILED)


def _die(msg: str, as_json: bool, code: int = EXIT_CANNOT_RUN):
    if as_json:
        click.echo(json.dumps({"ok": False, "exit_code": code, "errors": [msg]}))
    else:
        click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, emoji=False,
                   width=None if sys.stdout.isatty() else 160)


def _emit_verify(rep: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rep.to_json(), indent=1))
        return
    c = _console()
    _print_summary(c, rep.summary)
    if rep.peer_summary:
        _print_summary(c, rep.peer_summary)
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/] {w}")
    if rep.ok:
        c.print("[green]VERIFIED[/]" + (": both transcripts agree on every message"
                                        if rep.peer_summary else ""))
    else:
        label = "CANNOT RUN" if rep.exit_code == EXIT_CANNOT_RUN else "FAILED"
        c.print(f"[red]{label}[/]: {rep.first_bad}")
        for e in rep.errors[1:]:
            c.print(f"  also: {e}")


def _emit_replay(rep: ReplayReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rep.to_json(), indent=1))
        return
    c = _console()
    if rep.timeline:
        from rich.table import Table

        tab = Table(title=f"replay of {rep.party}'s side of job {rep.job_id}",
                    title_justify="left")
        for col in ("round", "t (s)", "records", "sent", "received", "bytes", "replay"):
            tab.add_column(col)
        for r in rep.timeline:
            tab.add_row(str(r["round"]), f"{r['t']:.2f}",
                        f"{r['first_record']}-{r['last_record']}", _kinds(r["sent"]),
                        _kinds(r["received"]),
                        f"{_human(r['bytes']['sent'])} / {_human(r['bytes']['received'])}",
                        r.get("replay", ""))
        c.print(tab)
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/] {w}")
    if rep.ok:
        c.print(f"[green]REPLAYED[/]: every message {rep.party} sent matched the record; "
                f"model part {rep.model_digest} matches the signed digest")
    else:
        label = "CANNOT RUN" if rep.exit_code == EXIT_CANNOT_RUN else "FAILED"
        c.print(f"[red]{label}[/]: {rep.first_bad}")
        for e in rep.errors[1:]:
            c.print(f"  also: {e}")


def _emit_joint(rep: JointReplayReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rep.to_json(), indent=1))
        return
    c = _console()
    for w in rep.warnings:
        c.print(f"[yellow]warning:[/] {w}")
    if rep.ok:
        parts = ", ".join(f"{p} {d['replayed']}" for p, d in rep.model_digests.items())
        c.print(f"[green]JOINT REPLAY OK[/]: job {rep.job_id}: {rep.messages} messages "
                "regenerated from both seeds and datasets matched both transcripts bit for "
                f"bit; model parts match the signed digests ({parts}) "
                f"[{rep.seconds:.1f} s]")
        return
    label = "CANNOT RUN" if rep.exit_code == EXIT_CANNOT_RUN else "FAILED"
    c.print(f"[red]{label}[/]: {rep.first_bad}")
    for e in rep.errors[1:]:
        c.print(f"  also: {e}")


def _kinds(d: dict) -> str:
    return ", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in d.items())


def _print_show(data: dict) -> None:
    from rich.table import Table

    c = _console()
    _print_summary(c, data["summary"])
    tab = Table(title="records", title_justify="left")
    for col in ("#", "t (s)", "type", "dir", "seq", "kind", "bytes", "sha256", "ledger"):
        tab.add_column(col)
    for r in data["records"]:
        disc = r.get("disclosure")
        tab.add_row(str(r["i"]), f"{r['t']:.3f}", r["type"] or "", r.get("dir", ""),
                    str(r.get("seq", "")), r.get("kind", ""),
                    _human(r["len"]) if "len" in r else "",
                    (r.get("sha256") or "")[:16],
                    f"{disc[0]} x{disc[1]}" if disc else "")
    c.print(tab)
    if data["verified"]:
        c.print("[green]verified[/]")
    else:
        c.print(f"[red]verification failed[/]: {data['errors'][0] if data['errors'] else ''}")
