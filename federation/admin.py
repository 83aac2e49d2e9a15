"""The node's local admin endpoint, used by the CLI.

A small JSON-over-HTTP server bound to a loopback address only. Every call carries the
operator token (``Authorization: Bearer <token>``); the token is generated from the OS
CSPRNG at node start and written to ``data_dir/admin.token`` with mode 0600, so only
the operator account that runs the node can use the endpoint. The bound address is
written to ``data_dir/admin.json`` so the CLI finds it from node.toml.

Requests: ``POST /v1/<op>`` with a JSON object body; responses are JSON objects
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one clear line"}``.

Limits (node.toml ``[limits]``): each request, headers and body, must arrive within
``admin_timeout_s`` of the connection starting to wait for it, however slowly its bytes
trickle in (idle keep-alive connections are closed after the same time); the body is at
most ``admin_max_request_bytes`` (413 otherwise) and is held to the JSON limits (400
naming the limit). A connection that hits a limit is closed; the endpoint serves on.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from federation.config.limits import Limits
from federation.link import ProtocolError
from federation.link.codec import clip, decode_json

TOKEN_FILE = "admin.token"
ADDR_FILE = "admin.json"


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


class _DeadlineReader(io.RawIOBase):
    """The connection's socket as a raw stream whose reads fail with TimeoutError once
    ``deadline`` (monotonic; None: none) has passed, however the bytes trickle in."""

    def __init__(self, sock, timeout: float):
        self.sock, self.timeout = sock, timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(self.why())
            self.sock.settimeout(left)
        try:
            return self.sock.recv_into(b)
        except TimeoutError:
            raise TimeoutError(self.why()) from None

    def why(self) -> str:
        return (f"no complete request within {self.timeout}s (limits.admin_timeout_s = "
                f"{self.timeout})")


class AdminServer:
    """Serve ``handlers[op](args) -> result`` on loopback with token auth."""

    def __init__(self, host: str, port: int, data_dir: Path,
                 handlers: dict[str, Callable[[dict], object]],
                 log: Callable[[str, dict], None] | None = None,
                 limits: Limits | None = None):
        self.data_dir = Path(data_dir)
        self.handlers = handlers
        self._log = log or (lambda e, f: None)
        self.limits = limits = limits or Limits()
        self.token = secrets.token_urlsafe(32)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = limits.admin_timeout_s  # socket timeout of every read and write

            def setup(self):
                super().setup()
                self._raw = _DeadlineReader(self.connection, limits.admin_timeout_s)
                self.rfile = io.BufferedReader(self._raw)

            def handle_one_request(self):
                # the whole request must arrive within admin_timeout_s (a slow trickle of
                # header bytes included); BaseHTTPRequestHandler closes the connection on
                # the TimeoutError and calls log_error
                self._raw.deadline = time.monotonic() + limits.admin_timeout_s
                super().handle_one_request()

            def log_message(self, fmt, *args):  # silence default stderr logging
                pass

            def log_error(self, fmt, *args):
                if args and isinstance(args[-1], TimeoutError):
                    server._log("admin.refused", {"client": self.client_address[0],
                                                  "reason": clip(args[-1], 200)})

            def _body_done(self) -> None:
                """The request is in: handlers and the reply are not under the deadline."""
                self._raw.deadline = None
                self.connection.settimeout(limits.admin_timeout_s)

            def _reply(self, code: int, obj: dict) -> None:
                self._body_done()
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
                    self.close_connection = True  # its body, if any, is never read
                    return self._reply(401, {"ok": False, "error": "bad or missing admin "
                                             "token"})
                op = self.path.removeprefix("/v1/")
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                cap = limits.admin_max_request_bytes
                if length > cap:
                    self.close_connection = True  # the unread body must not be parsed
                    server._log("admin.refused", {"client": self.client_address[0],
                                                  "reason": f"request of {length} bytes"})
                    return self._reply(413, {"ok": False, "error": (
                        f"request of {length} bytes exceeds limits.admin_max_request_bytes"
                        f" = {cap}")})
                if length < 0:
                    self.close_connection = True
                    return self._reply(400, {"ok": False, "error": "bad request length"})
                try:
                    body = self.rfile.read(length)
                except TimeoutError as exc:
                    self.close_connection = True
                    server._log("admin.refused", {"client": self.client_address[0],
                                                  "reason": str(exc)})
                    return self._reply(408, {"ok": False, "error": str(exc)})
                self._body_done()
                try:
                    args = decode_json(body or b"{}", limits.json)
                except ProtocolError as exc:
                    return self._reply(400, {"ok": False, "error": f"body must be a JSON "
                                             f"object: {exc}"})
                fn = server.handlers.get(op)
                if fn is None:
                    return self._reply(404, {"ok": False, "error": f"unknown admin call "
                                             f"{clip(repr(op), 80)}"})
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

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # e.g. a client that vanished mid-request: one log line, not a traceback
                exc = sys.exc_info()[1]
                server._log("admin.connection_error", {
                    "client": client_address[0],
                    "error": f"{type(exc).__name__}: {clip(exc, 200)}"})

        self.httpd = Server((host, port), Handler)
        self.address = f"{host}:{self.httpd.server_address[1]}"
        # shutdown() waits for the loop's next poll: 0.1 s, not the default 0.5 s
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,),
                                        name="admin", daemon=True)

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
