"""With ``[node] engine = "ray"``: warm the party's Ray actor pool when the node starts
or reloads its engine keys, so the first job also finds it running.

The node runs ``python -m secure_agg.ray_engine warm ADDRESS TIMEOUT [TOKEN_FILE]`` (a
short-lived Ray driver of its own: the daemon never imports Ray), which looks the pool
up or creates it (:mod:`secure_agg.ray_engine`) and exits; the pool's actors are
detached and outlive it. Its one JSON line is logged as ``engine.pool`` (address, CPUs,
pool size, actors created, seconds until they answered) or ``engine.pool_failed`` (the
reason; jobs then connect, and fail, on their own, naming the address). Nothing here
talks to the peer; the token file's path is passed, never its content.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


class PoolWarmer:
    """At most one warm-up process at a time; :meth:`stop` ends it (by its PID)."""

    def __init__(self, log):
        self.log = log
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self, cfg) -> None:
        eng = cfg.engine
        self.stop()
        if eng.engine != "ray":
            return
        args = [sys.executable, "-m", "secure_agg.ray_engine", "warm", eng.ray_address,
                str(eng.ray_connect_timeout_s)]
        if eng.ray_auth_token_file:
            args.append(str(eng.ray_auth_token_file))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with self._lock:
            self._proc = proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                cwd=str(_ROOT), text=True)
        threading.Thread(target=self._report, args=(proc,), name="ray-pool-warm",
                         daemon=True).start()

    def _report(self, proc: subprocess.Popen) -> None:
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait()
        try:
            info = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            info = {"error": f"the warm-up process exited with code {proc.returncode}"}
        if not isinstance(info, dict):
            info = {"error": "the warm-up process printed no result"}
        with self._lock:
            if self._proc is not proc:      # stopped or replaced: nobody to tell
                return
            self._proc = None
        if "error" in info:
            self.log("engine.pool_failed", {"reason": str(info["error"])[:500]},
                     level="warning")
        else:
            self.log("engine.pool", info)

    def stop(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
