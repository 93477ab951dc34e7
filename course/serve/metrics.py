"""What the server tells Prometheus at ``GET /metrics``.

Four questions an operator asks of a model server, and the metric that answers each:

* *How much traffic, how many errors?*  ``course_requests_total{endpoint, status}`` (a counter).
* *How slow, for most users and for the unlucky ones?*  ``course_request_seconds{endpoint}``,
  a histogram: Prometheus computes p50/p95/p99 from its buckets
  (``histogram_quantile(0.95, rate(course_request_seconds_bucket[5m]))``).
* *Is batching working?*  ``course_batch_size{task}``: a histogram of the sizes the
  batcher ran; all ones under load means requests never met.  ``course_queue_depth{task}``
  is how many wait right now.
* *Is the machine full?*  Process CPU and resident memory (psutil) and, where a GPU
  is present, ``course_gpu_memory_bytes{device, kind}`` (allocated / reserved by torch).

Each app gets its own ``CollectorRegistry``, so tests (and a notebook) can run
several servers in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: Latency buckets in seconds: 5 ms to 30 s (CPU batches of MiniLM take 50 ms to 2 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Batch-size buckets: powers of two up to 128.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "course_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "course_request_seconds",
            "Time from request to response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "course_batch_size",
            "Requests per model call, by task",
            ["task"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "course_batch_seconds",
            "Time of one model call, by task",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.oom_retries = Counter(
            "course_oom_retries",
            "Batches split in two after an out-of-memory error",
            ["task"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(queue_depths or dict))

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def batch_hook(self, task: str) -> Callable[[int, float], None]:
        """``on_batch(size, seconds)`` for the batcher of ``task``."""

        def hook(size: int, seconds: float) -> None:
            self.batch_size.labels(task).observe(size)
            self.batch_seconds.labels(task).observe(seconds)

        return hook

    def oom_hook(self, task: str) -> Callable[[int], None]:
        """``on_oom(size)`` for the batcher of ``task``: count each split batch."""
        return lambda size: self.oom_retries.labels(task).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LiveCollector:
    """Values read when Prometheus scrapes: queue depth, CPU, memory, GPU memory."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]]) -> None:
        self.queue_depths = queue_depths

    def describe(self) -> Iterable[Any]:
        return []  # unchecked collector: its metrics are only known when collected

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        queue = GaugeMetricFamily("course_queue_depth", "Requests waiting for a batch", labels=["task"])
        for task, depth in self.queue_depths().items():
            queue.add_metric([task], depth)
        yield queue
        facts = system_facts()
        yield GaugeMetricFamily("course_process_rss_bytes", "Resident memory of the server", value=facts["rss_bytes"])
        yield GaugeMetricFamily(
            "course_process_cpu_percent", "CPU use of the server since the last scrape", value=facts["cpu_percent"]
        )
        gpu = GaugeMetricFamily("course_gpu_memory_bytes", "GPU memory held by torch", labels=["device", "kind"])
        for row in facts["gpus"]:
            gpu.add_metric([row["device"], "allocated"], row["allocated_bytes"])
            gpu.add_metric([row["device"], "reserved"], row["reserved_bytes"])
        yield gpu


def system_facts() -> dict[str, Any]:
    """CPU and memory of this process (psutil) and torch's GPU memory, if a GPU is present.

    torch is only asked when it is already imported (a model server always has
    it), so this stays cheap to call from anywhere.
    """
    import sys

    from course.memory import _this_process

    process = _this_process()
    facts: dict[str, Any] = {
        "rss_bytes": process.memory_info().rss,
        "cpu_percent": process.cpu_percent(interval=None),
        "gpus": [],
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            facts["gpus"].append(
                {
                    "device": f"cuda:{index}",
                    "allocated_bytes": torch.cuda.memory_allocated(index),
                    "reserved_bytes": torch.cuda.memory_reserved(index),
                }
            )
    return facts
