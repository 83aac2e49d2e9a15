"""Helpers for node tests: keys, node.toml files and free loopback ports."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_party_keys(root: Path) -> dict:
    from federation.keys import init_party_keys
    keys = {}
    for name in ("bank-a", "platform-b"):
        keys[name] = init_party_keys(name, root / "keys" / name)
    return keys


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_node_tomls(root: Path, *, bank_policy: dict | None = None,
                     platform_policy: dict | None = None, bank_rows: int | None = None,
                     platform_rows: int | None = None, deadline_s: float = 5.0,
                     keys: dict | None = None) -> tuple[Path, Path]:
    """Write bank.toml and platform.toml under ``root`` (keys, data slices, policies)."""
    keys = keys or make_party_keys(root)
    ports = {"bank-a": free_port(), "platform-b": free_port()}
    data = {"bank-a": _slice(DATA / "breast_hetero_guest.csv", root / "bank.csv", bank_rows),
            "platform-b": _slice(DATA / "breast_hetero_host.csv", root / "platform.csv",
                                 platform_rows)}
    base_policy = {"allow_insecure_test_jobs": True, "min_intersection": 50,
                   "min_key_bits": 512}   # test nodes: keys down to 512 bits
    out = []
    for name, peer, party, pol in (("bank-a", "platform-b", "bank", bank_policy),
                                   ("platform-b", "bank-a", "platform", platform_policy)):
        k, pk = keys[name], keys[peer]
        ds = "loans" if party == "bank" else "enterprises"
        lines = [
            "[node]", f'party = "{party}"', f'name = "{name}"',
            f'listen = "127.0.0.1:{ports[name]}"', f'data_dir = "{name}-data"', "",
            "[keys]", f"tls_key = {_toml_value(k['tls_key'])}",
            f"tls_cert = {_toml_value(k['tls_cert'])}",
            f"signing_key = {_toml_value(k['signing_key'])}", "",
            "[peer]", f'name = "{peer}"', f'address = "127.0.0.1:{ports[peer]}"',
            f"cert = {_toml_value(pk['tls_cert'])}",
            f'cert_fingerprint = "{pk["cert_fingerprint"]}"',
            f"signing_public_key = {_toml_value(pk['signing_pub'])}", "",
            f"[datasets.{ds}]", f"path = {_toml_value(data[name])}", 'id_column = "id"',
        ]
        if party == "bank":
            lines.append('label_column = "y"')
        lines += ["", "[policy]"]
        for key, val in {**base_policy, **(pol or {})}.items():
            lines.append(f"{key} = {_toml_value(val)}")
        lines += ["", "[channel]", f"deadline_s = {deadline_s}", "heartbeat_s = 0.5",
                  "connect_timeout_s = 3.0", ""]
        p = root / f"{party}.toml"
        p.write_text("\n".join(lines))
        out.append(p)
    return out[0], out[1]


def _slice(src: Path, dst: Path, rows: int | None) -> Path:
    lines = src.read_text().splitlines(keepends=True)
    if rows is not None:
        lines = lines[: rows + 1]
    dst.write_text("".join(lines))
    return dst


def write_job(root: Path, name: str = "job", algorithm: str = "logistic_regression",
              params: dict | None = None, evaluation: dict | None = None,
              extra_job: dict | None = None, psi: dict | None = None) -> Path:
    lines = ["[job]", f'name = "{name}"', f'algorithm = "{algorithm}"',
             'dataset = "loans"', 'peer_dataset = "enterprises"']
    for k, v in (extra_job or {}).items():
        lines.append(f"{k} = {_toml_value(v)}")
    lines += ["[psi]"] + [f"{k} = {_toml_value(v)}"
                          for k, v in {"id_type": "string", **(psi or {})}.items()]
    if params:
        lines.append("[params]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in params.items()]
    ev = {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25, **(evaluation or {})}
    if algorithm != "psi":
        lines.append("[evaluation]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in ev.items()]
    p = root / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def stages_toml(stages: list[dict]) -> str:
    """A pipeline job.toml's ``[[stages]]`` tables, one per dict: ``name``,
    ``algorithm``, and optionally ``inputs`` ({input: earlier stage}) and ``params``."""
    out = []
    for st in stages:
        lines = ["", "[[stages]]", f'name = "{st["name"]}"', f'algorithm = "{st["algorithm"]}"']
        if st.get("inputs"):
            lines.append("inputs = { " + ", ".join(f'{k} = "{v}"' for k, v in
                                                   st["inputs"].items()) + " }")
        if st.get("params"):
            lines.append("[stages.params]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in st["params"].items()]
        out.append("\n".join(lines))
    return "\n".join(out) + "\n"


def pipeline_job(root: Path, stages: str | list[dict], name: str = "pl",
                 evaluation: dict | None = None) -> Path:
    """``write_job``'s pipeline job file with these stages (a list for
    :func:`stages_toml`, or the ``[[stages]]`` text itself)."""
    p = write_job(root, name, "pipeline", evaluation=evaluation)
    p.write_text(p.read_text() + (stages if isinstance(stages, str) else stages_toml(stages)))
    return p


def submit(client, job: Path) -> str:
    """Submit the job file ``job`` through ``client`` (an AdminClient); its job id."""
    from federation.config import load_job_spec
    return client.call("submit", spec=load_job_spec(job).to_dict(), source=str(job))["job_id"]


def wait_state(client, job_id: str, states=("done", "failed", "cancelled"),
               timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = client.call("status", job_id=job_id)
        if rec["state"] in states:
            return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {rec['state']} ({rec.get('error')})")
        time.sleep(0.1)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``fedjoint ARGS`` in this process: (exit code, stdout, stderr)."""
    from federation.cli import main
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@contextlib.contextmanager
def two_nodes(tmp_path: Path, monkeypatch, allowed: list[str], bank_df, plat_df):
    """Both nodes started on loopback with test keys, ``allowed`` algorithms on both,
    the frames as their datasets (bank.csv / platform.csv) and the CLI pointed at the
    bank's node.toml; stopped on exit."""
    keys = make_party_keys(tmp_path)
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys,
                                            bank_policy={"allowed_algorithms": allowed},
                                            platform_policy={"allowed_algorithms": allowed})
    bank_df.to_csv(tmp_path / "bank.csv", index=False)
    plat_df.to_csv(tmp_path / "platform.csv", index=False)
    with running_nodes(bank_toml, plat_toml):
        monkeypatch.setenv("FEDJOINT_CONFIG", str(bank_toml))
        yield bank_toml


def start_node(toml: Path):
    """The node of this node.toml started (quiet) on its loopback ports; the caller
    stops it (``node.stop()``)."""
    from federation.config import load_node_config
    from federation.node import Node
    return Node(load_node_config(toml), quiet=True).start()


@contextlib.contextmanager
def running_nodes(bank_toml: Path, plat_toml: Path):
    """The two nodes of these node.toml files started (quiet), as ``(bank, platform)``;
    stopped on exit (the bank too when the platform fails to start)."""
    bank = start_node(bank_toml)
    try:
        plat = start_node(plat_toml)
    except BaseException:
        bank.stop()
        raise
    try:
        yield bank, plat
    finally:
        try:
            bank.stop()
        finally:
            plat.stop()
