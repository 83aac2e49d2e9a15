"""The node's JSON-lines log and the bridge that feeds the channel's log records into it.

Logs are JSON lines (``data_dir/node.log`` and stderr): ``ts``, ``level``, ``event``,
``node`` and event fields. Field names that look secret are dropped, so the log never
holds keys, tokens or seeds; callers never pass data values.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


class JsonLog:
    """One JSON object per line; thread-safe. Never pass secrets or data values."""

    _SECRET_WORDS = ("token", "seed", "private", "secret", "password")

    def __init__(self, node: str, path: Path | None, stream=sys.stderr, quiet: bool = False):
        self.node = node
        self._lock = threading.Lock()
        self._fh = None
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._stream = None if quiet else stream
        self.listeners: list[Callable[[dict], None]] = []

    def __call__(self, event: str, fields: dict | None = None, level: str = "info") -> None:
        rec = {"ts": round(time.time(), 3), "level": level, "event": event, "node": self.node}
        for k, v in (fields or {}).items():
            if any(w in k.lower() for w in self._SECRET_WORDS):
                continue
            rec[k] = v
        line = json.dumps(rec, default=str, separators=(",", ":"))
        with self._lock:
            if self._fh:
                self._fh.write(line + "\n")
                self._fh.flush()
            if self._stream:
                try:
                    self._stream.write(line + "\n")
                    self._stream.flush()
                except (ValueError, OSError):
                    pass

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None


class ChannelLogBridge(logging.Handler):
    """Channel log records (``event k=v ...``) into the node's JSON log."""

    def __init__(self, log: JsonLog):
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "fj_event", None)
        fields = dict(getattr(record, "fj_fields", None) or {})
        if event is None:   # not a channel event line: keep its text as the message
            try:
                event, fields = "log", {"message": record.getMessage()}
            except Exception:  # noqa: BLE001
                return
        # two nodes in one process (tests, the demo) share the channel logger: keep
        # only this node's channel's records
        me = self._log.node
        if fields.get("party", me) != me or fields.get("peer") == me:
            return
        self._log(f"channel.{event}" if not event.startswith("channel.") else event, fields,
                  level=record.levelname.lower())
