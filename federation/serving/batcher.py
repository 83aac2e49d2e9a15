"""Micro-batching with a bounded queue, for the bank's HTTP service.

Requests wait in one queue (at most ``limits.serve_queue_rows`` applicants; a request
that does not fit is refused at once: HTTP 503). A dispatcher takes up to
``limits.serve_max_batch_rows`` applicants per lookup and keeps at most ``inflight``
lookups running (in threads: the channel client blocks). When a lookup is already
running the first request of the next batch waits ``serving.batch_wait_ms`` for
others; when none is, it goes at once, so a lone request pays no batching delay and a
loaded service sends large batches.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import numpy as np


class QueueFull(Exception):
    pass


class Batcher:
    def __init__(self, fn: Callable[[list[str], np.ndarray], list[dict]], *, max_rows: int,
                 queue_rows: int, wait_s: float, inflight: int = 4):
        self.fn, self.max_rows, self.queue_rows = fn, max_rows, queue_rows
        self.wait_s, self.inflight = wait_s, inflight
        self._queue: deque = deque()
        self._waiting = 0
        self._running = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.inflight)
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:
            *_, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(QueueFull("the service is stopping"))

    async def submit(self, ids: list[str], X: np.ndarray) -> list[dict]:
        n = len(ids)
        if self._waiting + n > self.queue_rows:
            raise QueueFull(f"{self._waiting} applicants are waiting (limits.serve_queue_rows "
                            f"= {self.queue_rows})")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((ids, X, fut))
        self._waiting += n
        self._wake.set()
        return await fut

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._slots.acquire()
                if self._running and self.wait_s > 0 and self._waiting < self.max_rows:
                    await asyncio.sleep(self.wait_s)
                batch, rows = [], 0
                while self._queue and rows + len(self._queue[0][0]) <= self.max_rows:
                    item = self._queue.popleft()
                    batch.append(item)
                    rows += len(item[0])
                if not batch:          # one request larger than a batch: cannot happen
                    batch.append(self._queue.popleft())   # (requests are <= max_rows)
                    rows = len(batch[0][0])
                self._waiting -= rows
                self._running += 1
                self.batches += 1
                loop.create_task(self._run(batch))

    async def _run(self, batch: list) -> None:
        loop = asyncio.get_running_loop()
        ids = [i for b in batch for i in b[0]]
        X = np.concatenate([b[1] for b in batch]) if len(batch) > 1 else batch[0][1]
        try:
            results = await loop.run_in_executor(None, self.fn, ids, X)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets it
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            k = 0
            for b_ids, _, fut in batch:
                if not fut.done():
                    fut.set_result(results[k:k + len(b_ids)])
                k += len(b_ids)
        finally:
            self._running -= 1
            self._slots.release()
