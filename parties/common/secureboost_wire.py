"""Message kinds and small wire helpers of the SecureBoost protocol (both roles).

Message sequence (B = bank, P = platform); every payload is JSON, ``.npy`` or
fixed-width ciphertext bytes:

    B->P sb.init          n_rows, shared params, public key description, n_valid
    P->B sb.init_ack      n_rows, n_features, n_valid
    per tree t:
      B->P sb.tree        {tree, federated, platform_features|None, stop}
      if federated:
        B->P sb.grad_meta {s, row_bits, n_chunks, chunk_rows}
        B->P sb.grad      x n_chunks: ciphertexts of g_int + h_int * 2**s per row
        per level:
          B->P sb.expand     {nodes: [ids to split at this level]} (empty: tree done)
          P->B sb.hist_meta  {slot_bits, per_ct, n_cand: [per node], n_ct: [per node]}
          P->B sb.hist       packed ciphertexts of permuted cumulative (G_L, H_L)
          B->P sb.split      {splits: [[node, owner, candidate]]}
          B->P sb.bank_partition   (if bank splits) packed left-bits per node
          P->B sb.partition_meta / sb.partition   (if platform splits)
        if validation set:
          B->P sb.route_request {keys, set: "valid"}; P->B sb.route_bits
    B->P sb.tree {stop: true, n_trees}; P->B sb.labels {key: label}
    both: sb.digest (model part digests)
    on any failure: sb.abort {reason} to the peer, best effort.
"""

from __future__ import annotations

import numpy as np

from federation.link import Link, ProtocolError, declare_disclosures

PROTOCOL_VERSION = 1


def send_abort(link: Link, exc: BaseException) -> None:
    """Tell the peer we failed (best effort) so it does not wait for a timeout."""
    try:
        link.send("sb.abort", {"reason": f"{type(exc).__name__}: {exc}"[:500]})
    except Exception:  # noqa: BLE001 - the link may be gone already
        pass


def recv_json(link: Link, kind: str, timeout: float | None = None) -> dict:
    try:
        return link.recv_json(kind, timeout) if timeout else link.recv_json(kind)
    except ProtocolError as exc:
        if "'sb.abort'" in str(exc):
            raise ProtocolError(f"peer aborted while we waited for {kind!r}") from None
        raise


def recv(link: Link, kind: str):
    try:
        return link.recv(kind)
    except ProtocolError as exc:
        if "'sb.abort'" in str(exc):
            raise ProtocolError(f"peer aborted while we waited for {kind!r}") from None
        raise


def pack_bits(masks: list[np.ndarray]) -> np.ndarray:
    """Concatenate per-node packed bit arrays (each padded to whole bytes)."""
    if not masks:
        return np.zeros(0, np.uint8)
    return np.concatenate([np.packbits(m.astype(bool)) for m in masks]).astype(np.uint8)


def unpack_bits(packed: np.ndarray, sizes: list[int], what: str) -> list[np.ndarray]:
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ProtocolError(f"{what}: expected a 1-D uint8 array")
    need = sum((n + 7) // 8 for n in sizes)
    if packed.size != need:
        raise ProtocolError(f"{what}: {packed.size} bytes for node sizes {sizes} "
                            f"(expected {need})")
    out, pos = [], 0
    for n in sizes:
        nb = (n + 7) // 8
        out.append(np.unpackbits(packed[pos:pos + nb], count=n).astype(bool))
        pos += nb
    return out


def key_of(tree: int, node: int) -> str:
    return f"{tree}:{node}"


# Values that cross in the clear or under the receiver's own key (docs/secureboost.md);
# counted per job in the transcript's disclosure ledger. Messages, not rows: a
# partition message covers every node split at one depth.
declare_disclosures({
    "sb.partition": "sample partitions at platform-owned splits (messages)",
    "sb.bank_partition": "sample partitions at bank-owned splits (messages)",
    "sb.route_bits": "left/right answers at platform splits for scored rows (messages)",
    "sb.hist": "g/h histograms of platform bins under the bank's key (messages)",
    "sb.split": "which platform candidate split won (messages)",
    "sb.labels": "platform feature labels released by policy",
})
