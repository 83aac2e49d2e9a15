"""Message tables and disclosure declarations.

Each protocol declares its messages once, in one table (:func:`declare_protocol`):
kind, sender, payload type, what it carries and what the receiver learns in the clear.
The table feeds the transcript's disclosure ledger, the docs' wire table
(:func:`wire_table_markdown`, docs/wire.md) and :class:`~federation.link.link.DeclaredLink`,
which refuses to send a kind the job's protocols do not declare.

Kinds whose values cross in the clear or under the receiver's own key carry a
``disclosure`` category (lower level: :func:`declare_disclosures`)::

    Message("sb.partition", "platform", "npy", "left/right bits of a node's rows",
            disclosure="sample partition", count=lambda p: int(p.size))

The transcript writer counts these values as the messages cross (``disc`` in the
record); the auditor sums them per category and receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from federation.link.codec import Payload, check_kind


@dataclass(frozen=True)
class Disclosure:
    category: str
    count: Callable[[Payload], int]


DISCLOSURES: dict[str, Disclosure] = {}


def default_count(payload: Payload) -> int:
    """Arrays count their elements; bytes and json objects count as one value."""
    if isinstance(payload, np.ndarray):
        return int(payload.size)
    return 1


def declare_disclosures(table: dict[str, str | tuple[str, Callable[[Payload], int] | None]]
                        ) -> None:
    """Declare message kinds whose values cross in the clear or under the receiver's key.

    ``table`` maps a message kind to ``category`` or ``(category, count_fn)``;
    ``count_fn(decoded_payload) -> int`` says how many values one message discloses
    (default: array size, or 1). Call at import time of the protocol module.
    """
    for kind, spec in table.items():
        check_kind(kind)
        category, fn = (spec, None) if isinstance(spec, str) else spec
        if not isinstance(category, str) or not category:
            raise ValueError(f"disclosure category for {kind!r} must be a non-empty string")
        DISCLOSURES[kind] = Disclosure(category, fn or default_count)




# ------------------------------------------------------------------- message tables

SENDERS = ("bank", "platform", "either")


@dataclass(frozen=True)
class Message:
    """One message kind of a protocol: who sends it, how it is encoded, what it
    carries, and what (if anything) the receiver learns from it in the clear."""

    kind: str
    sender: str            # "bank" | "platform" | "either"
    ptype: str             # "bin" | "npy" | "json"
    carries: str           # one line, for the docs' wire table
    disclosure: str = ""   # ledger category ('' = nothing beyond ciphertexts/masks/control)
    count: Callable[[Payload], int] | None = None  # values disclosed per message


@dataclass(frozen=True)
class ProtocolTable:
    """The declared messages of one protocol (``name``, ``version``)."""

    name: str
    version: str
    messages: tuple[Message, ...]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(m.kind for m in self.messages)

    def __getitem__(self, kind: str) -> Message:
        for m in self.messages:
            if m.kind == kind:
                return m
        raise KeyError(kind)


PROTOCOLS: dict[str, ProtocolTable] = {}


def declare_protocol(name: str, version: str, messages: list[Message] | tuple[Message, ...]
                     ) -> ProtocolTable:
    """Declare a protocol's message table (at import time of its wire module). Its
    disclosing kinds feed the transcript's ledger; a kind may belong to one protocol."""
    from federation.link.codec import PTYPES
    if not name or not version:
        raise ValueError("a protocol needs a name and a version")
    seen: set[str] = set()
    for m in messages:
        check_kind(m.kind)
        if m.kind in seen:
            raise ValueError(f"protocol {name!r}: message kind {m.kind!r} declared twice")
        seen.add(m.kind)
        if m.sender not in SENDERS:
            raise ValueError(f"protocol {name!r}: {m.kind}: sender {m.sender!r} is not one "
                             f"of {SENDERS}")
        if m.ptype not in PTYPES:
            raise ValueError(f"protocol {name!r}: {m.kind}: ptype {m.ptype!r} is not one of "
                             f"{PTYPES}")
        for other in PROTOCOLS.values():
            if other.name != name and m.kind in other.kinds:
                raise ValueError(f"message kind {m.kind!r} of protocol {name!r} is already "
                                 f"declared by protocol {other.name!r}")
    table = ProtocolTable(name, version, tuple(messages))
    PROTOCOLS[name] = table
    declare_disclosures({m.kind: (m.disclosure, m.count) for m in messages if m.disclosure})
    return table


def wire_table_markdown(tables: list[ProtocolTable] | None = None) -> str:
    """The docs' wire table (docs/wire.md), generated from the declarations."""
    out = ["# What crosses the wire", "",
           "Generated from the protocols' declared message tables "
           "(`python -m federation.job_protocol > docs/wire.md`); a test keeps it current.",
           "Disclosure: what the receiver learns in the clear, counted in the transcript's "
           "ledger; empty means only ciphertexts, masked values or control fields.", ""]
    for t in tables if tables is not None else sorted(PROTOCOLS.values(), key=lambda t: t.name):
        out += [f"## {t.name} (`{t.version}`)", "",
                "| kind | sender | payload | carries | disclosure |",
                "|---|---|---|---|---|"]
        out += [f"| `{m.kind}` | {m.sender} | {m.ptype} | {m.carries} | {m.disclosure} |"
                for m in t.messages]
        out.append("")
    return "\n".join(out)
