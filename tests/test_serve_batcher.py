"""The micro-batcher and the out-of-memory back-off, without a server or a model (fast)."""

import asyncio
import time

import pytest

from course.errors import CourseError
from course.serve.batcher import BatcherClosed, MicroBatcher, QueueFull, run_isolated
from course.serve.oom import cap_gpu_memory, run_with_backoff


class Recorder:
    """A fake model: doubles numbers, remembers each batch, fails on negatives, optionally slow."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay = delay

    def __call__(self, items):
        self.batches.append(list(items))
        time.sleep(self.delay)
        if any(item < 0 for item in items):
            raise ValueError(f"negative input {min(items)}")
        return [2 * item for item in items]


async def _run(batcher, coroutine):
    await batcher.start()
    try:
        return await coroutine
    finally:
        await batcher.close()


def test_concurrent_callers_share_batches_and_each_gets_its_own_result():
    model = Recorder(delay=0.02)
    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=50)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    results = asyncio.run(_run(batcher, main()))
    assert results == [2 * i for i in range(20)]
    assert max(len(b) for b in model.batches) == 8, model.batches  # never more than max_batch
    assert len(model.batches) <= 4, model.batches  # 20 items in batches of up to 8: batching happened
    assert sorted(i for b in model.batches for i in b) == list(range(20))  # each item ran exactly once


def test_a_lone_request_waits_at_most_max_wait():
    model = Recorder()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=30)

    async def main():
        started = time.perf_counter()
        result = await batcher.submit(5)
        return result, time.perf_counter() - started

    result, seconds = asyncio.run(_run(batcher, main()))
    assert result == 10 and model.batches == [[5]]
    assert 0.025 <= seconds < 2.0  # it waited for company (30 ms), then ran alone


def test_max_batch_one_runs_every_request_alone():
    model = Recorder()
    batcher = MicroBatcher(model, max_batch=1, max_wait_ms=50)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    assert asyncio.run(_run(batcher, main())) == [0, 2, 4, 6, 8]
    assert all(len(b) == 1 for b in model.batches)


def test_one_bad_request_fails_only_its_own_caller():
    model = Recorder()
    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=50)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True)

    results = asyncio.run(_run(batcher, main()))
    assert results[:2] == [2, 4] and results[3] == 8
    assert isinstance(results[2], ValueError) and "negative input -3" in str(results[2])


def test_a_full_queue_refuses_at_once_and_close_finishes_what_was_queued():
    model = Recorder(delay=0.05)
    batcher = MicroBatcher(model, max_batch=1, max_wait_ms=0, max_queue=2)

    async def main():
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
        await asyncio.sleep(0)  # let every submit run up to its queue put
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(1)
        return outcomes

    outcomes = asyncio.run(main())
    refused = [o for o in outcomes if isinstance(o, QueueFull)]
    served = [o for o in outcomes if isinstance(o, int)]
    assert len(refused) >= 3 and len(served) + len(refused) == 6, outcomes
    assert "2 requests already wait" in str(refused[0])


def test_close_drains_everything_queued():
    model = Recorder(delay=0.01)
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=5)

    async def main():
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(13)]
        await asyncio.sleep(0)
        await batcher.close()  # called while most items still wait
        return [t.result() for t in tasks]  # all done, none lost

    assert asyncio.run(main()) == [2 * i for i in range(13)]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_batch": 0}, "max_batch must be an integer >= 1"),
        ({"max_batch": 2.5}, "max_batch must be an integer >= 1"),
        ({"max_wait_ms": -1}, "max_wait_ms must be a number >= 0"),
        ({"max_queue": 0}, "max_queue must be an integer >= 1"),
    ],
)
def test_bad_batching_settings_are_one_clear_error(settings, message):
    with pytest.raises(CourseError, match=message):
        MicroBatcher(Recorder(), **settings)


# ----------------------------------------------------------------- out of memory


def fits_up_to(limit: int, calls: list[int]):
    """A batch function that raises torch.OutOfMemoryError above ``limit`` items (a GPU, simulated)."""
    import torch

    def run(items):
        calls.append(len(items))
        if len(items) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(items)} GiB")
        return [item * 10 for item in items]

    return run


def test_out_of_memory_halves_the_batch_and_keeps_the_order():
    calls, retried = [], []
    results = run_with_backoff(fits_up_to(3, calls), list(range(8)), on_retry=retried.append)
    assert results == [i * 10 for i in range(8)]
    assert calls == [8, 4, 2, 2, 4, 2, 2], calls  # 8 fails, each 4 fails, the 2s fit
    assert retried == [8, 4, 4]


def test_cpu_allocator_errors_count_as_out_of_memory_too():
    calls = []

    def run(items):
        calls.append(len(items))
        if len(items) > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")
        return items

    assert run_with_backoff(run, [1, 2, 3]) == [1, 2, 3]


def test_a_single_item_that_does_not_fit_fails_alone_and_others_are_served():
    import torch

    def run(items):
        if 99 in items:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return items

    outcomes = run_isolated(run, [1, 99, 3])
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1].error, torch.OutOfMemoryError)


def test_other_errors_are_not_retried_as_out_of_memory():
    calls = []

    def run(items):
        calls.append(len(items))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_backoff(run, [1, 2, 3, 4])
    assert calls == [4]


def test_memory_cap_checks_the_fraction_and_says_what_it_did():
    with pytest.raises(CourseError, match=r"memory fraction must be in \(0, 1\]"):
        cap_gpu_memory(1.5)
    import torch

    sentence = cap_gpu_memory(0.5)
    assert ("nothing to cap" in sentence) if not torch.cuda.is_available() else ("capped at 50%" in sentence)
