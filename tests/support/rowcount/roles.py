"""Both roles of row_count: send own count, receive the peer's."""

from __future__ import annotations

from federation.link import ProtocolContext, ProtocolError
from parties.common.artifact import ModelPart, TrainOutcome


def count(ctx: ProtocolContext, party: str, data, params) -> TrainOutcome:
    n = int(len(data.X))
    ctx.link.send("rc.count", {"rows": n})
    peer = ctx.link.recv_json("rc.count").get("rows")
    if not isinstance(peer, int) or peer < 0:
        raise ProtocolError("rc.count: expected a non-negative row count")
    part = ModelPart("row_count", party, ctx.job_id, {"note": params.note},
                     {"own_rows": n, "peer_rows": peer}, list(data.feature_names))
    return TrainOutcome(part, {"own_rows": n, "peer_rows": peer})
