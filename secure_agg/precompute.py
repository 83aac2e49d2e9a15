"""Precomputed obfuscators: batches computed ahead of time, each obfuscator used once.

Held here: :class:`PaillierObfuscatorBatch`, what
:meth:`secure_agg.paillier.PaillierPublicCipher.precompute_obfuscators` returns. The
draws (exponents or units) are made by the cipher up front, in order; this module only
schedules who computes their powers -- low-priority background processes
(:class:`secure_agg.procpool.BackgroundPool`) or the consumer itself (stealing a chunk
nobody started, or duplicating one the starved background has in flight) -- and hands
each obfuscator out exactly once (DESIGN.md rule 5). It is separate from the cipher
because it is concurrency (threads, a condition variable, a cursor), not arithmetic.

The batch drives its cipher through a small duck-typed surface: ``workers``,
``ciphertext_bytes``, ``_spec()``, ``_exp_bits(scheme)``, ``_precompute_window(scheme)``
and ``_obfuscate_parallel(draws, scheme)``.
"""

from __future__ import annotations

import bisect
import threading
import time

from gmpy2 import mpz

from secure_agg.cipher import ObfuscatorBatchBase, ObfuscatorsExhausted, PublicCipher
from secure_agg.framing import obfuscate_request, split_reply
from secure_agg.procpool import PROCESS_MIN_VALUES, get_background_pool

#: fixed-base window of the key holder's tables in the precompute path (12 bits: 86
#: rows of 4,096 entries, ~100 MB per prime, ~1.25x faster than bytes); elsewhere 8
PRECOMPUTE_WINDOW_BITS = 12
#: obfuscators per background chunk (~0.25 s of one core for a 2048-bit key holder)
PRECOMPUTE_CHUNK = 1024
#: a consumer waiting this long for chunks in flight in the (low-priority) background
#: computes them itself too (same values; whichever finishes first is used)
PRECOMPUTE_DUPLICATE_AFTER = 2.0

_PENDING, _RUNNING, _STOLEN, _DONE = 0, 1, 2, 3


class PaillierObfuscatorBatch(ObfuscatorBatchBase):
    """Fresh obfuscators computed ahead of time (see
    :meth:`PaillierPublicCipher.precompute_obfuscators`).

    The draws are split into chunks. Low-priority background worker processes
    (:func:`secure_agg.procpool.get_background_pool`) take the chunks in order; a
    consumer (:meth:`take`, ``encrypt(m, obfuscators=batch)``) that reaches a chunk
    nobody has started computes it itself at normal priority (on the cipher's worker
    processes), and waits for chunks already in flight. Whoever computes a chunk, the
    values are the same exact powers, so the ciphertexts never depend on timing.

    Each obfuscator is handed out once: consumption is a cursor, consumed chunks are
    dropped, asking for more than remain or using a closed batch raises
    :class:`~secure_agg.cipher.ObfuscatorsExhausted`. :meth:`close` discards the rest.
    """

    def __init__(self, cipher: PublicCipher, draws: list, scheme: str,
                 chunk: int | None = None):
        super().__init__(cipher, len(draws))
        self.scheme = scheme
        count, workers = len(draws), max(1, cipher.workers)
        if chunk is None:
            chunk = max(PROCESS_MIN_VALUES, min(PRECOMPUTE_CHUNK, -(-count // workers)))
        self._starts = list(range(0, count, chunk))
        self._draws: list = [draws[s:s + chunk] for s in self._starts]
        self._lens = [len(d) for d in self._draws]
        k = len(self._starts)
        self._state = [_PENDING] * k
        self._rhos: list = [None] * k
        self._pending = k
        self._bg_ok = count >= PROCESS_MIN_VALUES
        self._cond = threading.Condition()
        #: chunks computed by the background / stolen by the consumer / computed twice
        #: because the background was starved (for benches and tests)
        self.background_chunks = self.stolen_chunks = self.duplicated_chunks = 0
        if self._bg_ok:
            get_background_pool(workers).submit(self)

    # ---- background side (secure_agg.procpool.BackgroundPool) ---------------------
    def wants_background(self) -> bool:
        return self._bg_ok and not self.closed and self._pending > 0

    def claim_background(self):
        with self._cond:
            if not self.wants_background():
                return None
            i = self._state.index(_PENDING)
            self._state[i] = _RUNNING
            self._pending -= 1
            draws = self._draws[i]
        c = self.cipher
        head, body = obfuscate_request(c._spec(), draws, self.scheme,
                                       c._exp_bits(self.scheme),
                                       c._precompute_window(self.scheme))
        return i, head, body

    def deliver(self, i: int, payload: bytes) -> None:
        try:
            rhos = split_reply(payload, self.cipher.ciphertext_bytes, self._lens[i],
                               "obfuscation")
        except Exception as exc:  # noqa: BLE001 - the consumer recomputes the chunk
            self.release(i, exc)
            return
        with self._cond:
            if self._state[i] == _RUNNING and not self.closed:
                self._rhos[i] = rhos
                self._state[i] = _DONE
                self._draws[i] = None
                self.background_chunks += 1
            self._cond.notify_all()

    def release(self, i: int, exc: BaseException | None = None) -> None:
        with self._cond:
            if self._state[i] == _RUNNING:
                self._state[i] = _PENDING
                self._pending += 1
            self._bg_ok = False  # the consumer computes the rest itself
            self._cond.notify_all()

    # ---- consumer side ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Every obfuscator not yet consumed has been computed."""
        with self._cond:
            return all(st == _DONE for st in self._state)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :attr:`ready` (or ``timeout``); True when ready."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not all(st == _DONE for st in self._state):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def _chunk_range(self, start: int, end: int) -> range:
        return range(bisect.bisect_right(self._starts, start) - 1,
                     bisect.bisect_left(self._starts, end))

    def _ensure(self, chunks: range) -> None:
        since = time.monotonic()
        while True:
            with self._cond:
                if self.closed:
                    raise ObfuscatorsExhausted("obfuscator batch was closed")
                steal = [c for c in chunks if self._state[c] == _PENDING]
                pending = len(steal)
                if not steal:
                    busy = [c for c in chunks if self._state[c] != _DONE]
                    if not busy:
                        return
                    left = since + PRECOMPUTE_DUPLICATE_AFTER - time.monotonic()
                    if left > 0:
                        self._cond.wait(left)  # in flight in the background
                        continue
                    steal = busy  # the background is starved: compute them here too
                for c in steal[:pending]:
                    self._state[c] = _STOLEN
                self._pending -= pending
                self.stolen_chunks += pending
                self.duplicated_chunks += len(steal) - pending
                draws = [d for c in steal for d in self._draws[c]]
            try:
                rhos = self.cipher._obfuscate_parallel(draws, self.scheme)
            except BaseException:
                with self._cond:
                    for c in steal:
                        if self._state[c] == _STOLEN:
                            self._state[c] = _PENDING
                            self._pending += 1
                raise
            with self._cond:
                if self.closed:
                    raise ObfuscatorsExhausted("obfuscator batch was closed")
                pos = 0
                for c in steal:
                    k = self._lens[c]
                    if self._state[c] != _DONE:  # else the background was first
                        self._rhos[c] = rhos[pos:pos + k]
                        self._state[c] = _DONE
                        self._draws[c] = None
                    pos += k
                self._cond.notify_all()

    def take(self, k: int) -> list[mpz]:
        """The next ``k`` obfuscators (each handed out once)."""
        with self._cond:
            start = self._claim(k)
        if k == 0:
            return []
        end = start + k
        chunks = self._chunk_range(start, end)
        self._ensure(chunks)
        out: list = []
        with self._cond:
            for c in chunks:
                s = self._starts[c]
                rh = self._rhos[c]
                if rh is None:
                    raise ObfuscatorsExhausted("obfuscator batch was closed")
                e = s + len(rh)
                out.extend(rh[max(start, s) - s:min(end, e) - s])
                if end >= e:
                    self._rhos[c] = None  # fully consumed: dropped
        return out

    def close(self) -> None:
        """Discard every obfuscator not consumed yet and stop background work."""
        with self._cond:
            self.closed = True
            self._rhos = [None] * len(self._rhos)
            self._draws = [None] * len(self._draws)
            self._pending = 0
            self._cond.notify_all()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
