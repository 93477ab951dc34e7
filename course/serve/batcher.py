"""Dynamic micro-batching: many callers, one model call per batch.

A model runs a batch of 32 texts in far less than 32 times the time of one
(lesson 02's throughput curve).  A web server receives texts one request at a
time, so it *waits a little* to collect them::

    request 1 ──┐
    request 2 ──┤  queue   ┌─────────────────────────────┐   results, each to its caller
    request 3 ──┼────────► │ take up to max_batch items,  │ ──► future 1, future 2, ...
       ...      │          │ or what came in max_wait_ms  │
    request n ──┘          └──────────────┬──────────────┘
                                          │ one call, in a worker thread
                                          ▼
                                 run_batch([item 1, ..., item k]) -> [result 1, ..., result k]

* The event loop only moves items around; the model runs in ONE worker
  thread (``loop.run_in_executor``), so the server keeps accepting requests
  while a batch computes, and batches never fight over the CPU cores.
* The queue is bounded: when it is full, :meth:`MicroBatcher.submit` raises
  :class:`QueueFull` at once (the server answers 503) instead of letting
  latency grow without limit.
* Errors stay with their request: when a batch fails, each item is retried
  alone, so one malformed input fails only its own caller.  An out-of-memory
  error halves the batch instead (:mod:`course.serve.oom`).
* :meth:`MicroBatcher.close` stops new submissions and finishes everything
  already queued: a graceful shutdown loses no request.

Nothing here imports torch: the batcher works with any ``run_batch``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from course.errors import CourseError

#: ``run_batch(items) -> results``: the same number of results, in the same order.
BatchFn = Callable[[list[Any]], Sequence[Any]]


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` items already: come back later (HTTP 503)."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work (HTTP 503)."""


@dataclass
class _Pending:
    """One queued request: its input, the future its caller awaits, when it arrived."""

    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


def check_batching(max_batch: int, max_wait_ms: float, max_queue: int) -> None:
    """One clear error for batching settings that cannot work."""
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise CourseError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    if not isinstance(max_wait_ms, (int, float)) or isinstance(max_wait_ms, bool) or max_wait_ms < 0:
        raise CourseError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
    if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
        raise CourseError(f"max_queue must be an integer >= 1, got {max_queue!r}")


class MicroBatcher:
    """Collect requests into batches of up to ``max_batch``, waiting at most ``max_wait_ms``.

    ``run_batch`` is called in a worker thread with a list of items and must
    return one result per item, in order.  ``on_batch(size, seconds)`` is an
    optional hook (the server's metrics use it), as is ``on_oom(size)``, called
    when a batch of ``size`` ran out of memory and is split.  Use it from async code::

        batcher = MicroBatcher(model_fn, max_batch=32, max_wait_ms=5)
        await batcher.start()
        result = await batcher.submit(text)   # many coroutines at once
        await batcher.close()                 # finishes what is queued
    """

    def __init__(
        self,
        run_batch: BatchFn,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        name: str = "model",
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        on_oom: Callable[[int], None] | None = None,
    ) -> None:
        check_batching(max_batch, max_wait_ms, max_queue)
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.name = name
        self.on_batch = on_batch
        self.on_oom = on_oom
        self._executor = executor
        self._own_executor = executor is None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batches = 0  # batches run so far (the notebook prints it)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the queue and the collecting task on the running event loop."""
        if self._task is not None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{self.name}")
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.create_task(self._collect_forever(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Refuse new work, finish every queued request, then stop."""
        self._closing = True
        if self._task is None:
            return
        await self._queue.join()  # every queued item has its result
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def queued(self) -> int:
        """Requests waiting for a batch right now."""
        return self._queue.qsize() if self._queue is not None else 0

    # ------------------------------------------------------------------ callers

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its own result (or its own exception)."""
        if self._closing:
            raise BatcherClosed(f"the {self.name} batcher is shutting down")
        if self._task is None:
            raise RuntimeError("call await batcher.start() first")
        pending = _Pending(item, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests already wait for the {self.name} model") from None
        return await pending.future

    # ------------------------------------------------------------------ the loop

    async def _collect_forever(self) -> None:
        """Forever: wait for a first item, gather a batch around it, run it."""
        while True:
            batch = await self._gather()
            try:
                await self._run(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _gather(self) -> list[_Pending]:
        """The next batch: the first item, then more until ``max_batch`` or the deadline.

        The deadline counts from the *first* item's arrival, so no request
        waits longer than ``max_wait_ms`` for company.
        """
        first = await self._queue.get()
        batch = [first]
        deadline = first.arrived + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        while len(batch) < self.max_batch and not self._queue.empty():  # take what is already there
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        """Run one batch in the worker thread and hand each caller its own outcome."""
        live = [p for p in batch if not p.future.done()]  # a caller that timed out is skipped
        if not live:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        items = [p.item for p in live]
        outcomes = await loop.run_in_executor(self._executor, run_isolated, self.run_batch, items, self.on_oom)
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(live), time.perf_counter() - started)
        for pending, outcome in zip(live, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, _Failure):
                pending.future.set_exception(outcome.error)
            else:
                pending.future.set_result(outcome)


@dataclass
class _Failure:
    """An item's exception, carried in place of its result."""

    error: BaseException


def run_isolated(run_batch: BatchFn, items: list[Any], on_oom: Callable[[int], None] | None = None) -> list[Any]:
    """``run_batch(items)``; if it fails, run each item alone so an error stays with its item.

    Returns one outcome per item: its result or a :class:`_Failure`.  An
    out-of-memory error is handled first by :func:`course.serve.oom.run_with_backoff`
    (retry in halves), so only real per-item errors reach the one-by-one retry.
    """
    from course.serve.oom import run_with_backoff

    try:
        results = list(run_with_backoff(run_batch, items, on_retry=on_oom))
    except Exception as error:  # noqa: BLE001 - any model error: find whose it is
        if len(items) == 1:
            return [_Failure(error)]
        return [run_isolated(run_batch, [item], on_oom)[0] for item in items]
    if len(results) != len(items):
        error = RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
        return [_Failure(error) for _ in items]
    return results
