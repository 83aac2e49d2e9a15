"""Multiclass SecureBoost, platform side: the hooks ``_PlatformTrainer`` calls for a
``multi:softprob`` / ``multi:softmax`` job (packing: parties.common.secureboost_multiclass).

Per round the bank sends K class trees (``sb.tree`` with ``class`` 0..K-1, in order);
with the first federated one it streams the round's row ciphertexts, each row's K
gradient pairs packed into ``groups`` ciphertexts. The platform builds one root
histogram per group over all its columns and serves every class tree of the round from
it (a column sample takes its columns' slots); deeper nodes are histogrammed per class
tree from the same row ciphertexts. Before an entry goes to the bank every slot but the
tree's own class is masked (fresh per node, stream ``sb/mask/<tree>/<node>``).

What the platform learns beyond a binary job: K, announced in ``sb.init`` and bounded by
its ``limits.max_classes``; the partitions of each class tree (as K trees would show).
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import secureboost_wire as W
from parties.common.secureboost_multiclass import ClassPacking
from parties.common.secureboost_wire import recv_json


class PlatformMulticlass:
    def __init__(self, trainer, num_class: int):
        self.tr, self.K = trainer, num_class
        self.k = -1                 # class of the tree being built
        self.pack: ClassPacking | None = None
        self.grads: list = []       # per group: (row ciphertexts, all-column root histogram)

    @classmethod
    def from_init(cls, trainer, init: dict, params, policy):
        """The announced K: an integer in [2, policy.max_classes], equal to the job's
        ``num_class`` when the job sets one."""
        K = init.get("num_class")
        if not isinstance(K, int) or isinstance(K, bool) or K < 2:
            raise ProtocolError(f"sb.init: num_class {K!r} is not an integer >= 2")
        if K > policy.max_classes:
            raise ValueError(f"the bank's label has {K} classes, more than this platform's "
                             f"limits.max_classes = {policy.max_classes}")
        if params.num_class and params.num_class != K:
            raise ValueError(f"num_class = {params.num_class} but the bank's label has {K} "
                             "classes")
        return cls(trainer, K)

    def for_tree(self, msg: dict) -> PlatformMulticlass:
        k = msg.get("class")
        if not isinstance(k, int) or k != (self.k + 1) % self.K:
            raise ProtocolError(f"sb.tree: class {k!r}, expected {(self.k + 1) % self.K}")
        self.k = k
        if k == 0:
            self.grads = []
        return self

    def _recv_round(self) -> None:
        tr = self.tr
        meta = recv_json(tr.link, W.K_GRAD_META)
        try:
            s, row_bits = int(meta["s"]), int(meta["row_bits"])
            n_chunks, chunk = int(meta["n_chunks"]), int(meta["chunk_rows"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"sb.grad_meta malformed: {exc}") from None
        if n_chunks != (tr.n + chunk - 1) // chunk or not 0 < s < row_bits:
            raise ProtocolError(f"sb.grad_meta inconsistent with {tr.n} rows: {meta}")
        try:
            pack = ClassPacking.plan(self.K, row_bits, tr.n, tr.cipher.capacity_bits)
        except ValueError as exc:
            raise ProtocolError(f"sb.grad_meta: {exc}") from None
        pack.check_meta(meta)
        self.pack = pack
        self.grads = [tr._recv_gradients(f"group {g} ", n_chunks, chunk, pack.row_bound(g),
                                         tr.hbins, tr.B, pack.sum_bound(g))
                      for g in range(pack.groups)]

    def tree_inputs(self, sub: np.ndarray, B: int):
        """(row ciphertexts, root histogram over ``sub``'s columns, bound of a sum,
        entry width) for the current class tree."""
        if not self.grads:
            self._recv_round()
        group, _ = self.pack.group_of(self.k)
        enc, root = self.grads[group]
        full = self.tr.B
        idx = [f * full + (b if b < B - 1 else full - 1) for f in sub.tolist()
               for b in range(B)]
        tight = self.pack.sum_bound(group)
        return (enc, self.tr.restate(self.tr.cipher.take(root, idx), tight), tight,
                self.pack.entry_bits(group))

    def per_ct(self, slot: int) -> int:
        """Entries per histogram ciphertext, leaving a bit for the masks' bound."""
        return max(1, (self.tr.cipher.capacity_bits - 1) // slot)

    def mask(self, packed, t: int, nid: int, n_entries: int, slot: int, per_ct: int):
        rng = self.tr.ctx.rng.child(f"sb/mask/{t}/{nid}")
        masks = self.pack.masks(rng, self.k, n_entries, per_ct)
        return self.tr.restate(self.tr.cipher.add_plain(packed, masks), slot * per_ct)
