"""A trivial plug-in algorithm, "row_count" (kind transform): each party learns how many
aligned rows the other holds. Its own files plus one ``registry.register`` call: the
runtime is not edited for it (tests/parties/test_registry.py proves that)."""

from __future__ import annotations

from dataclasses import dataclass

from federation.link import Message, declare_protocol

K_COUNT = "rc.count"
TABLE = declare_protocol("row_count", "fedjoint-row-count-v1", [
    Message(K_COUNT, "either", "json", "the sender's aligned row count",
            disclosure="aligned row count"),
])


@dataclass
class RowCountParams:
    note: str = ""


def algorithm():
    from parties.registry import Algorithm
    from support.rowcount import bank, platform
    return Algorithm("row_count", "transform", RowCountParams, bank, platform, TABLE,
                     key_holders=(), needs_label=False, summary="federated row count")
