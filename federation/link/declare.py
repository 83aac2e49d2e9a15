"""Disclosure declarations: which message kinds carry values the receiver learns.

Protocol modules declare, at import time, the message kinds whose values cross in the
clear or under the receiver's own key::

    declare_disclosures({"sb.partition": ("partition", lambda p: int(p.size))})

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


