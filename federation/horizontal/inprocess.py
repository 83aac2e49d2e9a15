"""Flower's Message API in one process: a Grid whose nodes are ClientApps called
directly (no SuperLink, no Ray), for ``fedjoint.run_horizontal`` and the tests.

The ServerApp loop and the ClientApp handlers are the same objects the SuperLink and
SuperNodes run; only the transport differs. Each node keeps its own ``Context`` (its
``state`` persists across messages, as a SuperNode's does). A ClientApp that raises
answers with a Flower ``Error`` message, as a SuperNode does; ``drop`` makes a node
stop answering from a given message type on (the tests' bank that leaves mid-round).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

SUPERLINK_NODE_ID = 1   # flwr.common.constant.SUPERLINK_NODE_ID


class InProcessGrid(Grid):
    def __init__(self, apps: dict[int, object], node_configs: dict[int, dict] | None = None,
                 run_id: int = 1, drop: dict[int, tuple[str, int]] | None = None):
        """``apps``: node id -> ClientApp; ``drop``: node id -> (message type, n): the
        node stops answering at its n-th message of that type (1-based)."""
        self.apps = dict(apps)
        self.contexts = {n: Context(run_id=run_id, node_id=n,
                                    node_config=dict((node_configs or {}).get(n, {})),
                                    state=RecordDict(), run_config={})
                         for n in self.apps}
        self._run_id = run_id
        # Message() stamps the run id of the process's task (flwr-serverapp sets it)
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = 1
        self._replies: dict[str, Message] = {}
        self._drop = dict(drop or {})
        self._seen: dict[tuple[int, str], int] = {}
        self.errors: dict[int, list[str]] = {}

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return getattr(self, "_run", None)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.apps)

    def _dropped(self, node: int, mtype: str) -> bool:
        key = (node, mtype)
        self._seen[key] = self._seen.get(key, 0) + 1
        rule = self._drop.get(node)
        if rule and rule[0] == mtype and self._seen[key] >= rule[1]:
            self._drop[node] = ("*", 0)   # gone for good
        return self._drop.get(node, ("", 0))[0] == "*"

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            md = msg.metadata.__dict__
            md["_message_id"] = uuid.uuid4().hex
            md["_src_node_id"] = SUPERLINK_NODE_ID
            md["_run_id"] = self._run_id
            node = msg.metadata.dst_node_id
            ids.append(msg.metadata.message_id)
            if node not in self.apps or self._dropped(node, msg.metadata.message_type):
                continue
            try:
                TaskIdentity.node_id = node
                reply = self.apps[node](msg, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - a SuperNode answers with an Error
                self.errors.setdefault(node, []).append(f"{type(exc).__name__}: {exc}")
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"),
                                reply_to=msg)
            finally:
                TaskIdentity.node_id = SUPERLINK_NODE_ID
            self._replies[msg.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
