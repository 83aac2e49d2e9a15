"""How the linear-model protocol's per-row ciphertext vectors cross: a batch's rows in
chunks, and the obfuscators they use computed a few chunks ahead.

Per mini-batch of ``m`` rows three vectors are per row: ``lr.enc_u`` and, with per-row
curvature, ``lr.enc_a`` (bank -> platform, under the bank's key) and ``lr.enc_zp``
(platform -> bank, under the platform's key). A batch of at most :data:`CHUNK_ROWS`
rows sends each as one message, exactly as protocol v1 always did. A larger batch (a
full batch at scale) sends ``ceil(m / CHUNK_ROWS)`` chunks of consecutive batch rows,
each a ``<kind>_part`` message: a 24-byte header (six big-endian uint32: epoch, batch,
chunk, chunks, first row, rows; epoch and batch counted from 0) and the chunk's
ciphertexts (class-major within the chunk). Both parties know the batch, so the
receiver checks every header field and the ciphertext count against it and refuses
anything else with a ``ProtocolError`` naming the field.

Both roles go through a batch's chunks in lockstep: send chunk ``c``, then receive the
peer's chunk ``c`` and fold it into running sums (``X^T d`` per class, the loss terms).
So a party holds one chunk of the peer's ciphertexts at a time, the channel buffers at
most a chunk or two per direction, and every message stays under
``limits.max_message_bytes`` (4096 rows x K x 512 bytes at 2048 bits). Ciphertext sums
are products mod ``n^2`` (mod ``n`` for OU): summing per chunk gives the same
ciphertexts as summing the batch at once, and the decrypted integers, hence the model,
are the same for every chunking. Nothing here is party-specific.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from federation.link import ProtocolError

#: rows per chunk of a batch's per-row ciphertext vectors (a protocol constant)
CHUNK_ROWS = 4096
#: obfuscator pieces (one per chunk, or per batch) computed ahead per stream
LOOKAHEAD = 3
PART = "_part"  #: suffix of a chunk's message kind
HEADER = struct.Struct(">6I")
FIELDS = ("epoch", "batch", "chunk", "chunks", "first row", "rows")


@dataclass(frozen=True)
class Chunk:
    """Chunk ``index`` of ``count`` of batch ``batch`` of ``epoch``: rows ``lo..hi``."""

    epoch: int
    batch: int
    index: int
    count: int
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def header(self) -> tuple[int, ...]:
        return (self.epoch, self.batch, self.index, self.count, self.lo, self.rows)


def spans(m: int) -> list[tuple[int, int]]:
    """Row ranges of the chunks of a batch of ``m`` rows."""
    if m <= CHUNK_ROWS:
        return [(0, m)]
    return [(s, min(m, s + CHUNK_ROWS)) for s in range(0, m, CHUNK_ROWS)]


def chunks(epoch: int, batch: int, m: int) -> list[Chunk]:
    sp = spans(m)
    return [Chunk(epoch, batch, i, len(sp), lo, hi) for i, (lo, hi) in enumerate(sp)]


def rows(M: np.ndarray, ch: Chunk) -> np.ndarray:
    """The chunk's rows of an ``(m, K)`` (or ``(m,)``) array, class-major."""
    return np.ascontiguousarray(M[ch.lo:ch.hi].T).ravel()


def send(peer, kind: str, cipher, vec, ch: Chunk) -> None:
    """One chunk of a per-row vector (the whole vector when the batch has one chunk)."""
    if ch.count == 1:
        peer.send_ct(kind, cipher, vec)
    else:
        peer.link.send(kind + PART, HEADER.pack(*ch.header()) + cipher.to_bytes(vec))


def recv(peer, kind: str, cipher, count: int, bound_bits: int, ch: Chunk):
    """The peer's chunk ``ch`` of a per-row vector: ``count`` ciphertexts, its header
    checked against the agreed batch."""
    if ch.count == 1:
        return peer.recv_ct(kind, cipher, count, bound_bits)
    kind += PART
    data = peer._recv(kind)
    if not isinstance(data, bytes) or len(data) < HEADER.size:
        raise ProtocolError(f"{kind}: expected a {HEADER.size}-byte chunk header and "
                            "ciphertext bytes")
    for name, got, want in zip(FIELDS, HEADER.unpack_from(data), ch.header(), strict=True):
        if got != want:
            raise ProtocolError(f"{kind}: {name} {got}, expected {want} (chunk {ch.index} "
                                f"of {ch.count} of batch {ch.batch}, epoch {ch.epoch})")
    return peer.parse_ct(kind, cipher, data[HEADER.size:], count, bound_bits)


def total(pk, parts: list):
    """Sum of the chunks' ciphertext vectors, pairwise (the bound grows by the tree's
    depth, not by the chunk count)."""
    while len(parts) > 1:
        parts = [pk.add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def batch_rows(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``X[idx]``, without the copy for a full batch (``idx`` is then ``arange(n)``)."""
    return X if idx.size == X.shape[0] and X.flags.c_contiguous else X[idx]


class Ahead:
    """Obfuscators a few pieces ahead: the next ones are computed in the background
    (low-priority worker processes, :meth:`PublicCipher.precompute_obfuscators`) while
    this one is used or the peer is awaited. Each stream ``name`` has its own cipher,
    rng, pieces per batch and scheme; every piece of batch ``(epoch, b)`` draws, in
    order, from one ``rng.child("e<epoch>/b<b>")``, so the ciphertexts depend neither on
    timing nor on how a batch is cut into pieces (audit replay reproduces them). At most
    :data:`LOOKAHEAD` pieces per stream are held ahead; unused ones are discarded by
    :meth:`close`."""

    def __init__(self, epochs: int, sizes: list[int]):
        self.epochs, self.sizes = epochs, sizes
        self._streams: dict[str, _Stream] = {}

    def add(self, name: str, cipher, rng, pieces, obfuscation=None) -> None:
        """``pieces(batch_rows) -> [obfuscators of each piece]``, in consumption order."""
        self._streams[name] = _Stream(self, cipher, rng, pieces, obfuscation)

    def take(self, name: str, epoch: int, b: int, piece: int = 0):
        """Piece ``piece`` of batch ``(epoch, b)`` of stream ``name`` (taken in order)."""
        return self._streams[name].take((epoch, b, piece))

    def close(self) -> None:
        for s in self._streams.values():
            s.close()


class _Stream:
    def __init__(self, ahead: Ahead, cipher, rng, pieces, obfuscation):
        self.cipher, self.rng, self.obfuscation = cipher, rng, obfuscation
        self._todo = ((e, b, i, c) for e in range(ahead.epochs)
                      for b, m in enumerate(ahead.sizes) for i, c in enumerate(pieces(m)))
        self._live: deque = deque()
        self._rngs: dict = {}

    def _fill(self, want: int) -> None:
        while len(self._live) < want:
            nxt = next(self._todo, None)
            if nxt is None:
                return
            e, b, i, count = nxt
            if i == 0:
                self._rngs = {(e, b): self.rng.child(f"e{e}/b{b}")}
            self._live.append(((e, b, i), self.cipher.precompute_obfuscators(
                count, rng=self._rngs[(e, b)], obfuscation=self.obfuscation)))

    def take(self, key: tuple):
        self._fill(1)
        if not self._live or self._live[0][0] != key:
            raise RuntimeError(f"obfuscator piece {key} taken out of order")
        batch = self._live.popleft()[1]
        self._fill(LOOKAHEAD)
        return batch

    def close(self) -> None:
        while self._live:
            self._live.popleft()[1].close()
