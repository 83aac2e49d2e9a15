"""A local Ray cluster for tests: ``ray start --head --block`` on 127.0.0.1, stopped by
its PID after fedjoint's pool actors are dropped; every process it started (GCS,
raylet, workers, agents) must be gone after."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support.nodes import free_port


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _drop_pool(address: str, token_file: Path | None, log_dir: Path) -> None:
    """Kill fedjoint's detached pool actors first (a head with live detached actors
    takes over 30 s to stop), in a driver process of its own."""
    args = [sys.executable, "-m", "secure_agg.ray_engine", "drop", address, "30"]
    with (log_dir / "ray-drop.log").open("wb") as out:
        subprocess.run(args + ([str(token_file)] if token_file else []), stdout=out,
                       stderr=subprocess.STDOUT, timeout=90, check=False,
                       cwd=Path(__file__).resolve().parents[2])


@contextlib.contextmanager
def ray_head(log_dir: Path, cpus: int = 2, token_file: Path | None = None):
    """Yields ``(address, head_pid)``; on exit SIGTERM to the head and an assertion that
    none of its processes is left (stragglers are SIGKILLed by PID, then reported)."""
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           # advertise 127.0.0.1, not the machine's outward address
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if token_file is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    log = (log_dir / "ray-head.log").open("wb")
    ray_cli = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    seen: set[int] = set()
    started = False
    try:
        deadline = time.monotonic() + 180     # niced, on a loaded machine
        while b"Ray runtime started" not in (log_dir / "ray-head.log").read_bytes():
            assert proc.poll() is None, (log_dir / "ray-head.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the Ray head did not start within 180 s"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        started = True
        yield address, proc.pid
    finally:
        if started:
            _drop_pool(address, token_file, log_dir)
        seen.update(children(proc.pid))
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in seen if _alive(p)]
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        text = (log_dir / "ray-head.log").read_text(errors="replace")
        for line in text.splitlines():   # this head's session directory (logs, sockets)
            if "Process exit logs will be saved to:" in line:
                session = Path(line.split("saved to:", 1)[1].strip()).parents[1]
                if session.name.startswith("session_"):
                    shutil.rmtree(session, ignore_errors=True)
        assert not left, f"Ray processes left after the head stopped: " \
                         f"{[cmdline(p)[:80] for p in left]}"
