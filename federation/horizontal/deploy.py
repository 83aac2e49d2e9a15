"""Flower's processes for horizontal jobs, started and stopped by ``fedjoint horizontal``.

The platform runs ``flower-superlink`` (TLS with ``[horizontal] tls_cert/tls_key``,
``--enable-supernode-auth``: only the SuperNode keys listed under
``[horizontal.banks.*]`` are registered, at start, and may connect); each bank runs
``flower-supernode`` (TLS to the aggregator's CA, its SuperNode key, node config
``fedjoint_config`` = its node.toml). ``run`` submits a run of the fedjoint Flower
App (a FAB whose components are :mod:`federation.horizontal.apps`) with ``flwr run``
and waits for it; the SuperLink starts ``flwr-serverapp``, each SuperNode one
``flwr-clientapp`` per message. Flower's state (its config, installed FABs) lives in
``data_dir/horizontal/flwr`` (``FLWR_HOME``); nothing is installed at run time
(``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION``: the node's own environment runs the
app). Each started process leads its own process group; ``stop`` signals that group
by the PID it recorded, after checking the PID still runs the program it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from federation.config import ConfigError
from federation.config.horizontal import need
from federation.config.node import NodeConfig
from federation.config.toml import parse_address

CONNECTION = "fedjoint"
APP_VERSION = "1.0.0"


class DeployError(RuntimeError):
    """A Flower process could not be started, reached or stopped."""


def home(cfg: NodeConfig) -> Path:
    d = Path(cfg.data_dir) / "horizontal"
    d.mkdir(parents=True, exist_ok=True)
    return d


def flwr_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def flwr_env(cfg: NodeConfig) -> dict:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home(cfg) / "flwr")
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("FLWR_TELEMETRY_ENABLED", None)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    return env


def _pidfile(cfg: NodeConfig, role: str) -> Path:
    return home(cfg) / f"{role}.pid"


def _running(pid: int, program: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(program.encode() in part for part in cmd)


def _spawn(cfg: NodeConfig, role: str, program: str, args: list[str]) -> int:
    pf = _pidfile(cfg, role)
    if pf.exists():
        old = json.loads(pf.read_text())
        if _running(old["pid"], program):
            raise DeployError(f"{role} already runs (PID {old['pid']}); "
                              f"`fedjoint horizontal stop --config {cfg.file}` first")
    log = open(home(cfg) / f"{role}.log", "ab")   # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([flwr_bin(program), *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=flwr_env(cfg),
                            start_new_session=True, cwd=home(cfg))
    log.close()
    pf.write_text(json.dumps({"pid": proc.pid, "program": program, "args": args}))
    return proc.pid


def stop(cfg: NodeConfig, role: str, timeout: float = 10.0) -> bool:
    """Stop the ``role`` ("superlink" / "supernode") this node started; False if none."""
    pf = _pidfile(cfg, role)
    if not pf.exists():
        return False
    info = json.loads(pf.read_text())
    pid = int(info["pid"])
    if _running(pid, info["program"]):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _running(pid, info["program"]):
                _reap(pid)
                time.sleep(0.1)
            if not _running(pid, info["program"]):
                break
    _reap(pid)
    pf.unlink()
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_port(host: str, port: int, timeout: float, pid: int, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
    raise DeployError(f"the SuperLink did not listen on {host}:{port}: {tail}")


def _dial(listen: str) -> tuple[str, int]:
    host, port = parse_address(listen, "node.toml", "horizontal.listen")
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), port


def start_superlink(cfg: NodeConfig, timeout: float = 60.0) -> dict:
    """Start the SuperLink, write the Flower CLI's connection and register every bank's
    SuperNode key; returns {"pid", "nodes": {node id: bank}}."""
    h = cfg.horizontal
    if cfg.party != "platform":
        raise ConfigError(f"{cfg.file}: the aggregator runs on the platform node")
    need(h, cfg.file, "listen", "tls_cert", "tls_key", "ca_cert", "banks")
    host, port = parse_address(h.listen, str(cfg.file), "horizontal.listen")
    pid = _spawn(cfg, "superlink", "flower-superlink", [
        "--ssl-ca-certfile", str(h.ca_cert), "--ssl-certfile", str(h.tls_cert),
        "--ssl-keyfile", str(h.tls_key), "--enable-supernode-auth",
        "--host", host, "--port", str(port)])
    dial = _dial(h.listen)
    _wait_port(*dial, timeout, pid, home(cfg) / "superlink.log")
    fh = home(cfg) / "flwr"
    fh.mkdir(parents=True, exist_ok=True)
    (fh / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{dial[0]}:{dial[1]}"\nroot-certificates = "{h.ca_cert}"\n')
    nodes = {}
    for bank, entry in sorted(h.banks.items()):
        out = subprocess.run([flwr_bin("flwr"), "supernode", "register", str(entry.supernode_key),
                              CONNECTION, "--name", bank, "--format", "json"],
                             capture_output=True, text=True, env=flwr_env(cfg), timeout=timeout)
        try:
            text = out.stdout
            node_id = int(json.loads(text[text.index("{"):text.rindex("}") + 1])["node-id"])
        except (ValueError, KeyError, IndexError):
            stop(cfg, "superlink")
            raise DeployError(f"registering {bank}'s SuperNode key {entry.supernode_key} "
                              f"failed: {(out.stdout + out.stderr)[-600:]}") from None
        nodes[node_id] = bank
    (home(cfg) / "nodes.json").write_text(json.dumps({str(k): v for k, v in nodes.items()}))
    return {"pid": pid, "nodes": nodes}


def start_supernode(cfg: NodeConfig) -> int:
    h = cfg.horizontal
    if cfg.party != "bank":
        raise ConfigError(f"{cfg.file}: a SuperNode runs on a bank node")
    need(h, cfg.file, "aggregator", "aggregator_ca", "supernode_key")
    if not h.join:
        raise ConfigError(f"{cfg.file}: [horizontal] join = false: this bank does not take "
                          "part in horizontal jobs")
    pub = Path(str(h.supernode_key) + ".pub")
    return _spawn(cfg, "supernode", "flower-supernode", [
        "--root-certificates", str(h.aggregator_ca), "--superlink", h.aggregator,
        "--port", str(h.supernode_port), "--auth-supernode-private-key", str(h.supernode_key),
        "--auth-supernode-public-key", str(pub),
        "--node-config", f"fedjoint_config='{Path(cfg.file).resolve()}'"])


APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedjoint-horizontal"
version = "{version}"
description = "fedjoint horizontal jobs: the ServerApp / ClientApp of federation.horizontal.apps"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedjoint"

[tool.flwr.app.components]
serverapp = "federation.horizontal.apps:server_app"
clientapp = "federation.horizontal.apps:client_app"

[tool.flwr.app.config]
job = ""
job_id = ""
platform = ""
"""


def run(cfg: NodeConfig, job_path: str | Path, job_id: str, timeout: float = 3600.0) -> Path:
    """Submit one horizontal job to the running SuperLink and wait for it; returns the
    job's result.json (raises DeployError with Flower's output if there is none)."""
    app = home(cfg) / "app"
    app.mkdir(exist_ok=True)
    (app / "pyproject.toml").write_text(APP_TOML.format(version=APP_VERSION))
    (app / "fedjoint_app.py").write_text('"""fedjoint\'s Flower App: components live in '
                                         'federation.horizontal.apps."""\n')
    rc = (f"job='{Path(job_path).resolve()}' job_id='{job_id}' "
          f"platform='{Path(cfg.file).resolve()}'")
    out = subprocess.run([flwr_bin("flwr"), "run", str(app), CONNECTION, "--run-config", rc,
                          "--stream"], capture_output=True, text=True, env=flwr_env(cfg),
                         timeout=timeout, cwd=home(cfg))
    from federation.horizontal.ledger import job_dir
    result = job_dir(cfg.data_dir, job_id) / "result.json"
    if not result.exists():
        raise DeployError(f"job {job_id} left no result: {(out.stdout + out.stderr)[-1500:]}")
    return result
