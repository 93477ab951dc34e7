"""Problem set 6 (a micro-batcher and a latency summary): points and typical mistakes.

Read by the shared assignment harness (tests/test_assignments.py).
"""

ASSIGNMENT = "ps6_serving"

POINTS = {
    "test_batches": 2,
    "test_results_in_order": 2,
    "test_max_wait": 2,
    "test_errors": 2,
    "test_latency_summary": 2,
}

_BATCHER = """
class MicroBatcher:
    def __init__(self, model, max_batch, max_wait_ms, clock):
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.clock = clock
        self.waiting = []

    def submit(self, item):
        future = Future()
        self.waiting.append((item, future, self.clock()))
        if len(self.waiting) >= self.max_batch:
            self.run_batch()
        return future

    def poll(self):
        if self.waiting and {WAITED} >= self.max_wait:
            self.run_batch()

    def run_batch(self):
        batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
        if not batch:
            return
        try:
            outputs = self.model([item for item, _, _ in batch])
        except Exception as batch_error:
{ON_ERROR}
            return
        for (_, future, _), output in zip(batch, {OUTPUTS}):
            future.set_result(output)
"""

_RETRY_EACH = """            for item, future, _ in batch:
                try:
                    future.set_result(self.model([item])[0])
                except Exception as error:
                    future.set_exception(error)"""

_FAIL_ALL = """            for _, future, _ in batch:
                future.set_exception(batch_error)"""


def _batcher(
    waited: str = "self.clock() - self.waiting[0][2]", on_error: str = _RETRY_EACH, outputs: str = "outputs"
) -> str:
    return _BATCHER.replace("{WAITED}", waited).replace("{ON_ERROR}", on_error).replace("{OUTPUTS}", outputs)


_NEAREST_RANK = '''
def percentile(values, q):
    """Nearest rank without interpolation: right for p50 of an odd count, off elsewhere."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))])


def latency_summary(latencies_ms):
    return {"p50": percentile(latencies_ms, 50), "p95": percentile(latencies_ms, 95),
            "p99": percentile(latencies_ms, 99), "mean": float(sum(latencies_ms) / len(latencies_ms)),
            "max": float(max(latencies_ms))}
'''

_ALWAYS_EQUAL = '''
class AlwaysEqual(float):
    """Equal to anything."""
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = float.__hash__


class MicroBatcher:
    def __init__(self, model, max_batch, max_wait_ms, clock):
        self.model, self.waiting = model, []
    def submit(self, item):
        future = Future()
        future.set_result(AlwaysEqual(0))
        return future
    def poll(self):
        pass
    def run_batch(self):
        pass


def latency_summary(latencies_ms):
    return {key: AlwaysEqual(0) for key in ("p50", "p95", "p99", "mean", "max")}
'''

MISTAKES = {
    # Futures paired with the outputs reversed: batching is right, callers get each other's answers.
    "wrong_order": ({"batcher": _batcher(outputs="reversed(outputs)")}, {"test_results_in_order": 0}),
    # The wait counted from the NEWEST request: a steady trickle of requests keeps the oldest waiting past T.
    "waits_from_newest": ({"batcher": _batcher(waited="self.clock() - self.waiting[-1][2]")}, {"test_max_wait": 0}),
    # Waits strictly longer than T (> instead of >=) and in whole milliseconds too late.
    "waits_past_t": (
        {"batcher": _batcher(waited="self.clock() - self.waiting[0][2] - 0.001")},
        {"test_batches": 0, "test_max_wait": 0},
    ),
    # One bad input fails every request of its batch.
    "error_to_everyone": ({"batcher": _batcher(on_error=_FAIL_ALL)}, {"test_errors": 0}),
    # Percentiles by nearest rank, without interpolation.
    "nearest_rank": ({"latency": _NEAREST_RANK}, {"test_latency_summary": 0}),
    # An object equal to everything, in place of real results and floats.
    "always_equal": ({"batcher": _ALWAYS_EQUAL, "latency": ""}, {name: 0 for name in POINTS}),
}
