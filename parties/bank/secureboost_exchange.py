"""SecureBoost, bank role: the messages of one tree (what crosses is described in
parties.bank.secureboost).

* :func:`send_gradients`: ``sb.grad_meta`` then the row ciphertexts ``sb.grad`` in chunks
  of ``chunk_rows`` (a binary tree: one ``g + h * 2**s`` plaintext a row; a multiclass
  round: ``groups`` passes over the rows, each packing some classes' pairs);
* :func:`recv_histograms`: ``sb.hist_meta`` + ``sb.hist``, range-checked before decryption;
* :func:`request_routes`: the platform's left/right bits for its splits.

``tr`` is the bank's ``_BankTrainer`` (its cipher, link, params, timer, obfuscators).
"""

from __future__ import annotations

import time

import numpy as np

from federation.link import ProtocolError
from parties.common import secureboost_wire as W
from parties.common.secureboost_wire import recv, recv_json
from parties.common.tree import GradCodec, unpack_entries


def send_gradients(tr, key: int, tree: int, codec: GradCodec, encode, groups: int = 1,
                   extra: dict | None = None) -> None:
    """Encrypt and stream the rows: ``encode(group, lo, hi)`` gives the plaintexts of rows
    ``lo..hi`` of ``group`` and their bound in bits; the obfuscators are ``tr._obf[key]``
    (drawn from the stream ``sb/enc/<key>``, computed ahead)."""
    cipher, link, n = tr.cipher, tr.link, tr.n
    chunk = tr.p.chunk_rows
    n_chunks = (n + chunk - 1) // chunk
    link.send(W.K_GRAD_META, {"tree": tree, "s": codec.s, "row_bits": codec.row_bits,
                              "frac_bits": codec.frac_bits, "n_chunks": n_chunks,
                              "chunk_rows": chunk, **(extra or {})})
    obf = tr._obf.pop(key)
    for grp in range(groups):
        for c in range(n_chunks):
            lo, hi = c * chunk, min(n, (c + 1) * chunk)
            te = time.perf_counter()
            plain, bound = encode(grp, lo, hi)
            ct = cipher.encrypt(plain, bound_bits=bound, obfuscators=obf)
            blob = cipher.to_bytes(ct)
            tr.timer.add("encrypt", time.perf_counter() - te)
            ts = time.perf_counter()
            link.send(W.K_GRAD, blob)
            tr.timer.add("send", time.perf_counter() - ts)
    obf.close()
    for who in ("background", "stolen", "duplicated"):  # where the obfuscators came from
        tr.timer.add(f"obf_chunks_{who}", getattr(obf, f"{who}_chunks", 0))


def recv_histograms(tr, frontier, codec: GradCodec) -> dict:
    """The platform's packed cumulative histograms of ``frontier``, checked against the
    announced shape and decrypted: ``{node: (G_L, H_L)}`` per platform candidate."""
    cipher, link = tr.cipher, tr.link
    tw = time.perf_counter()
    meta = recv_json(link, W.K_HIST_META)
    blob = recv(link, W.K_HIST)
    tr.timer.add("wait_histograms", time.perf_counter() - tw)
    if not isinstance(blob, bytes):
        raise ProtocolError("sb.hist: expected ciphertext bytes")
    try:
        nodes = [int(v) for v in meta["nodes"]]
        n_cand = [int(v) for v in meta["n_cand"]]
        tr.cat.read_sizes(meta, nodes, n_cand)
        n_ct = [int(v) for v in meta["n_ct"]]
        slot, per_ct = int(meta["slot_bits"]), int(meta["per_ct"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"sb.hist_meta malformed: {exc}") from None
    if nodes != list(frontier):
        raise ProtocolError(f"histograms for nodes {nodes}, expected {frontier}")
    if not (len(n_cand) == len(n_ct) == len(nodes)):
        raise ProtocolError("sb.hist_meta: per-node lists differ in length")
    if slot < codec.s + 2 or per_ct < 1 or slot * per_ct > cipher.capacity_bits:
        raise ProtocolError(f"sb.hist_meta: packing {per_ct} x {slot} bits does not fit "
                            f"the plaintext space ({cipher.capacity_bits} bits)")
    if len(set(n_cand)) > 1:
        raise ProtocolError(f"sb.hist_meta: candidate counts differ between nodes "
                            f"{n_cand}")
    for c, k in zip(n_cand, n_ct, strict=True):
        if k != (c + per_ct - 1) // per_ct:
            raise ProtocolError(f"sb.hist_meta: {c} candidates need "
                                f"{(c + per_ct - 1) // per_ct} ciphertexts, got {k}")
    w = cipher.ciphertext_bytes
    if len(blob) != w * sum(n_ct):
        raise ProtocolError(f"sb.hist: {len(blob)} bytes, expected {sum(n_ct)} "
                            f"ciphertexts of {w} bytes (wrong histogram shape)")
    td = time.perf_counter()
    try:
        vec = cipher.from_bytes(blob, slot * per_ct)
    except ValueError as exc:
        raise ProtocolError(f"sb.hist: {exc}") from None
    plain = cipher.decrypt(vec)
    tr.timer.add("decrypt", time.perf_counter() - td)
    tu = time.perf_counter()
    out, pos = {}, 0
    scale = float(1 << codec.frac_bits)
    for nid, c, k in zip(nodes, n_cand, n_ct, strict=True):
        entries = unpack_entries(plain[pos:pos + k], slot, per_ct, c)
        pos += k
        G = np.empty(c)
        H = np.empty(c)
        for i, e in enumerate(entries):
            gi, hi = codec.decode_sum(e)
            G[i], H[i] = gi / scale, hi / scale
        if (H < -1e-9).any():
            raise ProtocolError("sb.hist: negative hessian sum (corrupt histogram)")
        out[nid] = (G, H)
    tr.timer.add("unpack", time.perf_counter() - tu)
    return out


def request_routes(link, keys: list[str], n_rows: int, which: str) -> dict:
    """Ask the platform for its left/right decisions on ``n_rows`` rows."""
    link.send(W.K_ROUTE_REQUEST, {"keys": keys, "set": which, "n_rows": int(n_rows)})
    bits = recv(link, W.K_ROUTE_BITS)
    nb = (n_rows + 7) // 8
    if (not isinstance(bits, np.ndarray) or bits.dtype != np.uint8
            or bits.shape != (len(keys), nb)):
        raise ProtocolError(f"sb.route_bits: expected uint8 shape {(len(keys), nb)}, got "
                            f"{getattr(bits, 'shape', None)}")
    return {k: np.unpackbits(bits[i], count=n_rows).astype(bool)
            for i, k in enumerate(keys)}
