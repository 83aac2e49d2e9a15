"""The node's local admin endpoint, used by the CLI.

A small JSON-over-HTTP server bound to a loopback address only. Every call carries the
operator token (``Authorization: Bearer <token>``); the token is generated from the OS
CSPRNG at node start and written to ``data_dir/admin.token`` with mode 0600, so only
the operator account that runs the node can use the endpoint. The bound address is
written to ``data_dir/admin.json`` so the CLI finds it from node.toml.

Requests: ``POST /v1/<op>`` with a JSON object body; responses are JSON objects
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one clear line"}``.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOKEN_FILE = "admin.token"
ADDR_FILE = "admin.json"
MAX_BODY = 4 << 20


class AdminError(Exception):
    """A CLI-facing failure: the message is one clear line."""


def write_private(path: Path, data: bytes) -> None:
    """Create/replace ``path`` with mode 0600 (never world- or group-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class AdminServer:
    """Serve ``handlers[op](args) -> result`` on loopback with token auth."""

    def __init__(self, host: str, port: int, data_dir: Path,
                 handlers: dict[str, Callable[[dict], object]],
                 log: Callable[[str, dict], None] | None = None):
        self.data_dir = Path(data_dir)
        self.handlers = handlers
        self._log = log or (lambda e, f: None)
        self.token = secrets.token_urlsafe(32)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # silence default stderr logging
                pass

            def _reply(self, code: int, obj: dict) -> None:
                body = json.dumps(obj, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._reply(405, {"ok": False, "error": "use POST"})

            def do_POST(self):
                auth = self.headers.get("Authorization", "")
                given = auth[7:] if auth.startswith("Bearer ") else ""
                if not hmac.compare_digest(given.encode(), server.token.encode()):
                    server._log("admin.unauthorized", {"client": self.client_address[0],
                                                       "path": self.path[:64]})
                    return self._reply(401, {"ok": False, "error": "bad or missing admin "
                                             "token"})
                op = self.path.removeprefix("/v1/")
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    return self._reply(400, {"ok": False, "error": "bad request length"})
                try:
                    args = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(args, dict):
                        raise ValueError
                except ValueError:
                    return self._reply(400, {"ok": False, "error": "body must be a JSON object"})
                fn = server.handlers.get(op)
                if fn is None:
                    return self._reply(404, {"ok": False, "error": f"unknown admin call {op!r}"})
                try:
                    result = fn(args)
                except AdminError as exc:
                    return self._reply(200, {"ok": False, "error": str(exc)})
                except Exception as exc:  # noqa: BLE001 - one line back to the CLI
                    server._log("admin.error", {"op": op, "error": f"{type(exc).__name__}: "
                                                f"{exc}"})
                    msg = str(exc) or type(exc).__name__
                    return self._reply(200, {"ok": False, "error": msg.splitlines()[0]})
                self._reply(200, {"ok": True, "result": result})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="admin",
                                        daemon=True)

    def start(self) -> None:
        write_private(self.data_dir / TOKEN_FILE, self.token.encode())
        write_private(self.data_dir / ADDR_FILE,
                      json.dumps({"address": self.address, "pid": os.getpid()}).encode())
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        try:
            (self.data_dir / ADDR_FILE).unlink()
        except FileNotFoundError:
            pass


class AdminClient:
    """What the CLI uses: finds the node from its data_dir and calls it."""

    def __init__(self, data_dir: Path, timeout: float = 30.0):
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        addr_file = self.data_dir / ADDR_FILE
        tok_file = self.data_dir / TOKEN_FILE
        try:
            self.address = json.loads(addr_file.read_text())["address"]
        except FileNotFoundError:
            raise AdminError(f"the node is not running (no {addr_file}); start it with "
                             "`fedjoint node start --config node.toml`") from None
        except (OSError, ValueError, KeyError) as exc:
            raise AdminError(f"cannot read {addr_file}: {exc}") from None
        try:
            self.token = tok_file.read_text().strip()
        except PermissionError:
            raise AdminError(f"cannot read the admin token {tok_file}: permission denied "
                             "(run as the operator account that started the node)") from None
        except OSError as exc:
            raise AdminError(f"cannot read the admin token {tok_file}: {exc}") from None

    def call(self, op: str, timeout: float | None = None, **args):
        req = urllib.request.Request(
            f"http://{self.address}/v1/{op}", data=json.dumps(args).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(f"cannot reach the node's admin endpoint at {self.address} "
                             f"({reason}); is `fedjoint node start` running?") from None
        try:
            obj = json.loads(body)
        except ValueError:
            raise AdminError(f"the admin endpoint at {self.address} sent a malformed "
                             "reply") from None
        if not obj.get("ok"):
            raise AdminError(obj.get("error") or "admin call failed")
        return obj.get("result")
