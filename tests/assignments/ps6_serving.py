"""Problem set 6 (a micro-batcher and a latency summary): points and typical mistakes.

Read by the shared assignment harness (tests/test_assignments.py).
"""

from nbgrader_harness import mistake

ASSIGNMENT = "ps6_serving"

POINTS = {
    "test_batches": 2,
    "test_results_in_order": 2,
    "test_max_wait": 2,
    "test_errors": 2,
    "test_latency_summary": 2,
}

# Each wrong MicroBatcher / latency summary is the instructor's with one thing changed (see
# nbgrader_harness.mistake): the condition poll() checks, the error path, the pairing of futures and outputs.
_WAITED = "self.clock() - self.waiting[0][2] >= self.max_wait"

#: On a failing batch, fail every request of it instead of retrying each input alone.
_FAIL_ALL = (
    """        except Exception:
            for item, future, _ in batch:
                try:
                    future.set_result(self.model([item])[0])
                except Exception as error:
                    future.set_exception(error)
""",
    """        except Exception as batch_error:
            for _, future, _ in batch:
                future.set_exception(batch_error)
""",
)

#: Nearest rank without interpolation: right for p50 of an odd count, off elsewhere.
_NEAREST_RANK = mistake(
    ASSIGNMENT,
    "latency",
    (
        """    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
""",
        "    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))])\n",
    ),
)

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
    "wrong_order": (
        {"batcher": mistake(ASSIGNMENT, "batcher", ("zip(batch, outputs)", "zip(batch, reversed(outputs))"))},
        {"test_results_in_order": 0},
    ),
    # The wait counted from the NEWEST request: a steady trickle of requests keeps the oldest waiting past T.
    "waits_from_newest": (
        {"batcher": mistake(ASSIGNMENT, "batcher", (_WAITED, _WAITED.replace("waiting[0]", "waiting[-1]")))},
        {"test_max_wait": 0},
    ),
    # Waits strictly longer than T (> instead of >=) and in whole milliseconds too late.
    "waits_past_t": (
        {"batcher": mistake(ASSIGNMENT, "batcher", (_WAITED, _WAITED.replace("[0][2]", "[0][2] - 0.001")))},
        {"test_batches": 0, "test_max_wait": 0},
    ),
    # One bad input fails every request of its batch.
    "error_to_everyone": ({"batcher": mistake(ASSIGNMENT, "batcher", _FAIL_ALL)}, {"test_errors": 0}),
    # Percentiles by nearest rank, without interpolation.
    "nearest_rank": ({"latency": _NEAREST_RANK}, {"test_latency_summary": 0}),
    # An object equal to everything, in place of real results and floats.
    "always_equal": ({"batcher": _ALWAYS_EQUAL, "latency": ""}, {name: 0 for name in POINTS}),
}
