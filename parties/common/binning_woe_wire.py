"""Message kinds of the federated binning (WOE/IV) protocol, shared by both roles.

Message sequence (B = bank, P = platform)::

    B->P bin.init    version, n_rows, the shared [params], public key, chunk_rows
    P->B bin.ack     n_rows (checked against the bank's), n_features
    B->P bin.labels  x ceil(n_rows / chunk_rows): Paillier ciphertexts of y (0/1)
    P->B bin.meta    per platform feature, in a private permuted order: its label
                     (anonymous unless policy reveals names) and its number of bins
    P->B bin.counts  rows per bin (.npy int64), bins in x order then the missing bin
    P->B bin.sums    re-randomised ciphertexts of the event sum of each of those bins
    either bin.abort reason the sender failed

The bank decrypts the sums; both ``bin.counts`` and ``bin.sums`` carry disclosures
(counted per value in the ledger). Nothing derived from the labels is sent back.
See :mod:`parties.bank.binning_woe` for the whole design.
"""

from __future__ import annotations

import numpy as np

from federation.link import Link, Message, declare_protocol
from parties.common import aborts

PROTOCOL_VERSION = 1
CHUNK_ROWS = 2048
#: the [params] both parties must agree on (all of them)
SHARED = ("method", "n_bins", "n_prebins", "monotonic_trend", "min_bin_size",
          "min_bin_n_event", "min_bin_n_nonevent")

K_INIT = "bin.init"
K_ACK = "bin.ack"
K_LABELS = "bin.labels"
K_META = "bin.meta"
K_COUNTS = "bin.counts"
K_SUMS = "bin.sums"
K_ABORT = "bin.abort"


def anonymous_label(k: int) -> str:
    """The bank's name for the platform's ``k``-th feature in the permuted order."""
    return f"platform#{k}"


def revealed_label(name: str) -> str:
    """The bank's name for a platform feature whose name the platform's policy releases
    (prefixed, so it never shadows a bank feature of the same name)."""
    return f"platform:{name}"


def recv(link: Link, kind: str, how: str = "recv"):
    """``link.recv`` (or ``recv_json`` / ``recv_array`` with ``how``) that turns the
    peer's ``bin.abort`` into :class:`PeerAborted`."""
    return aborts.recv(link, kind, K_ABORT, how)


def send_abort(link: Link, exc: BaseException) -> None:
    """Tell the peer we failed (best effort) so it does not wait for a timeout."""
    aborts.send(link, K_ABORT, aborts.reason(exc))


def _size(payload) -> int:
    return int(payload.size) if isinstance(payload, np.ndarray) else 1


def _named(payload) -> int:
    feats = payload.get("features") if isinstance(payload, dict) else None
    return sum(1 for f in feats or [] if isinstance(f, dict) and f.get("named"))


TABLE = declare_protocol("binning", str(PROTOCOL_VERSION), [
    Message(K_INIT, "bank", "json",
            "version, n_rows, binning params, public key description, chunk_rows"),
    Message(K_ACK, "platform", "json", "n_rows, number of platform features"),
    Message(K_LABELS, "bank", "bin",
            "Paillier ciphertexts of the 0/1 labels (fresh randomness each), in chunks"),
    Message(K_META, "platform", "json",
            "per platform feature in a private permuted order: label (anonymous unless "
            "reveal_feature_names), number of bins",
            disclosure="platform feature names released by policy", count=_named),
    Message(K_COUNTS, "platform", "npy",
            "rows per anonymous platform bin (bins in value order, then missing)",
            disclosure="row counts of anonymous platform bins", count=_size),
    Message(K_SUMS, "platform", "bin",
            "re-randomised ciphertexts of the event sum per anonymous platform bin",
            disclosure="event counts of anonymous platform bins under the bank's key "
                       "(messages)"),
    Message(K_ABORT, "either", "json", "reason the sender failed"),
])
