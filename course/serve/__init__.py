"""Lesson 06: serving a model over HTTP, and watching it work.

* :mod:`course.serve.batcher`   dynamic micro-batching (the idea of the lesson; torch-free)
* :mod:`course.serve.oom`       out-of-memory recovery: free the cache, halve the batch; GPU memory caps
* :mod:`course.serve.models`    one batch function per endpoint (classify, embed, summarize, generate)
* :mod:`course.serve.schemas`   the HTTP contract as pydantic models
* :mod:`course.serve.app`       the FastAPI app: routes, limits, metrics, graceful shutdown
* :mod:`course.serve.metrics`   Prometheus metrics (prometheus-client)
* :mod:`course.serve.server`    ``course serve``: checks, port, models, uvicorn
* :mod:`course.serve.client`    a background server for notebooks and tests; the load test
* :mod:`course.serve.profiling` Timer vs a naive loop, the profiler, NVML/psutil snapshots

Nothing is imported here: ``import course.serve`` stays instant, and FastAPI
and torch load only where a module needs them.
"""
