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
          P->B sb.hist_meta  {slot_bits, per_ct, n_cand: [per node], n_ct: [per node],
                              cat_sizes: [per node: block sizes] (categorical only)}
          P->B sb.hist       packed ciphertexts of permuted cumulative (G_L, H_L), then
                             (categorical only) per-level (G, H) in permuted blocks
          (categorical only) B->P sb.cat_ties {runs: [[node, block, [permuted levels
                             whose weights tie]]]}; P->B sb.cat_order {runs: [the same,
                             sorted by level]}
          B->P sb.split      {splits: [[node, owner, candidate (0 if bank), ties]],
                              cat: {node: permuted levels} (categorical wins only)}
          B->P sb.bank_partition   (if bank splits) packed left-bits per node
          P->B sb.partition_meta / sb.partition   (if platform splits)
        if validation set:
          B->P sb.route_request {keys, set: "valid"}; P->B sb.route_bits
    B->P sb.tree {stop: true, n_trees}; P->B sb.labels {key: label}
    both: sb.digest (model part digests)
    on any failure: sb.abort {reason} to the peer, best effort.

Multiclass jobs (``multi:softprob`` / ``multi:softmax``; parties.common.
secureboost_multiclass) speak in-band version 3 over the same kinds: ``sb.init`` adds
``num_class`` K; a round is K ``sb.tree`` messages with ``class`` 0..K-1 (tree index
``round * K + class``); the first federated one of a round is followed by the round's
``sb.grad_meta`` (adds ``num_class``, ``class_bits``, ``per_row``, ``groups``) and
``groups`` x n_chunks ``sb.grad`` chunks (each row's K pairs packed, ``per_row`` classes
per ciphertext); every class tree then runs the per-level exchange above, its
``sb.hist`` entries ``per_row * class_bits`` wide with every slot but the tree's class
masked. Binary and regression jobs stay at version 2, byte for byte.
"""

from __future__ import annotations

import numpy as np

from federation.link import Link, Message, ProtocolError, declare_protocol
from parties.common import aborts

PROTOCOL_VERSION = 2  # v2: missing-left candidates listed from the highest bin down

K_INIT = "sb.init"
K_INIT_ACK = "sb.init_ack"
K_TREE = "sb.tree"
K_GRAD_META = "sb.grad_meta"
K_GRAD = "sb.grad"
K_EXPAND = "sb.expand"
K_HIST_META = "sb.hist_meta"
K_HIST = "sb.hist"
K_SPLIT = "sb.split"
K_BANK_PARTITION = "sb.bank_partition"
K_PARTITION_META = "sb.partition_meta"
K_PARTITION = "sb.partition"
K_ROUTE_REQUEST = "sb.route_request"
K_ROUTE_BITS = "sb.route_bits"
K_LABELS = "sb.labels"
K_DIGEST = "sb.digest"
K_ABORT = "sb.abort"
K_SCORE_BEGIN = "sb.score_begin"
K_SCORE_END = "sb.score_end"
K_CAT_TIES = "sb.cat_ties"
K_CAT_ORDER = "sb.cat_order"


def send_abort(link: Link, exc: BaseException) -> None:
    """Tell the peer we failed (best effort) so it does not wait for a timeout."""
    aborts.send(link, K_ABORT, f"{type(exc).__name__}: {exc}")


def recv_json(link: Link, kind: str, timeout: float | None = None) -> dict:
    return aborts.recv(link, kind, K_ABORT, "recv_json", *((timeout,) if timeout else ()))


def recv(link: Link, kind: str):
    return aborts.recv(link, kind, K_ABORT)


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


# Values that cross in the clear or under the receiver's own key (docs/secureboost.md)
# carry a disclosure, counted per job in the transcript's ledger. Messages, not rows: a
# partition message covers every node split at one depth.
TABLE = declare_protocol("secureboost", str(PROTOCOL_VERSION), [
    Message(K_INIT, "bank", "json",
            "n_rows, shared params, public key description, n_valid; multiclass: "
            "num_class"),
    Message(K_INIT_ACK, "platform", "json",
            "n_rows, number of platform features, n_valid"),
    Message(K_TREE, "bank", "json",
            "tree index, federated or bank-only, sampled platform features, stop; "
            "multiclass: the tree's class"),
    Message(K_GRAD_META, "bank", "json",
            "packing of the encrypted gradients (slot bits, chunks; multiclass: class "
            "slot bits, classes per row, groups)"),
    Message(K_GRAD, "bank", "bin",
            "Paillier ciphertexts of packed (g, h) per row, in chunks (multiclass: the "
            "K pairs of a row packed, per group)"),
    Message(K_EXPAND, "bank", "json",
            "the nodes to split at this depth (empty: tree done)"),
    Message(K_HIST_META, "platform", "json",
            "per node: candidate and ciphertext counts; categorical block sizes"),
    Message(K_HIST, "platform", "bin",
            "refreshed packed ciphertexts of permuted cumulative (G_L, H_L) "
            "(multiclass: other classes' slots masked), and of per-level (G, H) of "
            "categorical features in permuted blocks",
            disclosure="g/h histograms of platform bins (and of permuted categorical "
                       "levels) under the bank's key (messages)"),
    Message(K_SPLIT, "bank", "json",
            "per node: owner and winning (permuted) platform candidate (0 for a bank "
            "split: the bank's feature and bin stay with the bank), or the permuted "
            "categorical levels going right",
            disclosure="which platform candidate split (or permuted level group) won "
                       "(messages)"),
    Message(K_BANK_PARTITION, "bank", "npy",
            "left/right bits of rows at bank-owned splits",
            disclosure="sample partitions at bank-owned splits (messages)"),
    Message(K_PARTITION_META, "platform", "json",
            "which platform-split nodes the bits cover"),
    Message(K_PARTITION, "platform", "npy",
            "left/right bits of rows at platform-owned splits",
            disclosure="sample partitions at platform-owned splits (messages)"),
    Message(K_ROUTE_REQUEST, "bank", "json",
            "platform split keys to evaluate on a row set"),
    Message(K_ROUTE_BITS, "platform", "npy",
            "left/right bits per requested split and row",
            disclosure="left/right answers at platform splits for scored rows (messages)"),
    Message(K_LABELS, "platform", "json",
            "feature labels of platform splits (anonymous unless policy reveals)",
            disclosure="platform feature labels released by policy"),
    Message(K_DIGEST, "either", "json",
            "digest of the sender's model part"),
    Message(K_ABORT, "either", "json",
            "reason the sender failed"),
    Message(K_SCORE_BEGIN, "bank", "json",
            "number of rows to score"),
    Message(K_SCORE_END, "bank", "json",
            "number of rows scored"),
    Message(K_CAT_TIES, "bank", "json",
            "permuted categorical levels whose sort weights tie (categorical jobs only)"),
    Message(K_CAT_ORDER, "platform", "json",
            "the same levels in the platform's level order",
            disclosure="relative order of tied platform categorical levels (messages)"),
])
