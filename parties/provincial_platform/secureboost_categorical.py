"""SecureBoost, platform role: categorical features (``parties.common.categorical``).

Per histogrammed node the platform appends to its packed candidates the encrypted
per-level ``(G_c, H_c)`` of each allowed categorical feature, the features' blocks and
each block's levels in a fresh private order (stream ``sb/catperm/<tree>/<node>``);
``sb.hist_meta`` names only the block sizes. When the bank answers with a block and
permuted levels, the platform maps them back to its own levels, records the level set
going right in its split record (``{"cats": [...]}``, never sent) and returns the
partition like any platform split. The bank never sees a level, its name or order.
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import secureboost_wire as W
from parties.common.categorical import go_left, resolve


class PlatformCategorical:
    """The platform's categorical state for one training job."""

    def __init__(self, names: list[str], categories: dict | None, n_cuts: np.ndarray):
        cats = dict(categories or {})
        unknown = sorted(set(cats) - set(names))
        if unknown:
            raise ValueError(f"categories given for unknown feature(s) {unknown}")
        self.is_cat = np.array([n in cats for n in names], dtype=bool)
        self.levels = {n: list(cats[n]) for n in names if n in cats}
        self.k = np.asarray(n_cuts, np.int64) + 1
        self.perms: dict[int, list[tuple[int, np.ndarray]]] = {}

    def entries(self, cipher, hist, sub: np.ndarray, width: int, nid: int, rng):
        """The node's categorical entries (a cipher vector, or None) and block sizes;
        ``hist`` is the node's raw histogram over the features ``sub``."""
        local = [li for li, f in enumerate(sub.tolist()) if self.is_cat[f]]
        self.perms[nid] = []
        if not local:
            return None, []
        g = rng.numpy()
        idx, sizes = [], []
        for o in g.permutation(len(local)).tolist():
            li = local[o]
            f = int(sub[li])
            perm = g.permutation(int(self.k[f]))
            idx.append(li * width + perm)
            sizes.append(int(perm.size))
            self.perms[nid].append((f, perm))
        return cipher.take(hist, np.concatenate(idx)), sizes

    def split(self, nid: int, desc, bins: np.ndarray):
        """The bank's answer for node ``nid`` -> (feature, split record value, default
        direction, left mask over ``bins`` = the node's bin rows)."""
        blocks = self.perms.get(nid, [])
        b = desc.get("block") if isinstance(desc, dict) else None
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < len(blocks):
            raise ProtocolError(f"sb.split: bad categorical block for node {nid}")
        f, perm = blocks[b]
        right, dl = resolve(desc, perm)
        col = bins[:, f]
        left = go_left(np.where(col < 0, np.nan, col), right, dl)
        return f, {"cats": right}, dl, left

    def options(self, nid: int, answers, bins: np.ndarray) -> list:
        """Every block the bank named for node ``nid`` in ``sb.split``'s ``cat`` (equal
        gains), resolved: [(feature, record value, default direction, left mask)]."""
        if answers is None:
            return []
        if not isinstance(answers, dict):
            raise ProtocolError("sb.split: cat must map nodes to lists of answers")
        got = answers.get(str(nid))
        if got is None:
            return []
        if not isinstance(got, list) or not got:
            raise ProtocolError(f"sb.split: cat answers for node {nid} must be a list")
        return [self.split(nid, desc, bins) for desc in got]

    def order_ties(self, link, share: bool = True) -> None:
        """Answer ``sb.cat_ties``: each asked run of permuted levels (of blocks of this
        level's nodes) sorted by this platform's level order; ``share`` False (policy
        ``categorical_tie_order = false``): returned as asked, i.e. in the node's random
        order, which reveals nothing (and may cost XGBoost-equal trees on exact ties)."""
        req = W.recv_json(link, W.K_CAT_TIES).get("runs")
        if not isinstance(req, list):
            raise ProtocolError("sb.cat_ties: expected a list of runs")
        out = []
        for item in req:
            ok = isinstance(item, list) and len(item) == 3 and isinstance(item[0], int) \
                and isinstance(item[1], int) and isinstance(item[2], list)
            blocks = self.perms.get(item[0], []) if ok else []
            if not ok or not 0 <= item[1] < len(blocks):
                raise ProtocolError("sb.cat_ties: a run names no block of this level")
            perm = blocks[item[1]][1]
            run = item[2]
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < perm.size
                       for i in run) or len(set(run)) != len(run):
                raise ProtocolError("sb.cat_ties: a run holds an index out of its block")
            out.append(sorted(run, key=lambda i: int(perm[i])) if share else list(run))
        link.send(W.K_CAT_ORDER, {"runs": out})

    def model_body(self) -> dict:
        """What the platform's model part adds: its categorical levels."""
        return {"categories": self.levels} if self.levels else {}
