"""Test scaffolding for the serving tests: fake models and a real uvicorn server in a thread.

The server binds 127.0.0.1 on a free port and always stops at the end of the
``with`` block (uvicorn's own graceful shutdown), so no test leaves it running.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx

from course.serve.app import Limits, create_app
from course.serve.server import bind


class FakeClassifier:
    """Echoes its input: label from the words, score from the length; "boom" raises; optionally slow."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.batches: list[int] = []

    def __call__(self, texts):
        self.batches.append(len(texts))
        time.sleep(self.delay)
        if "boom" in texts:
            raise ValueError("the model cannot read 'boom'")
        return [{"label": "positive" if "good" in t else "negative", "score": len(t) / 1000} for t in texts]

    def info(self):
        return {"model": "fake", "device": "cpu"}


class FakeEmbedder:
    def __call__(self, texts):
        return [[float(len(t)), 1.0, 0.0] for t in texts]


class FakeSummarizer:
    def __call__(self, jobs):
        return [" ".join(job.text.split(". ")[: job.max_sentences]) for job in jobs]


def fake_models(delay: float = 0.0):
    return {"classify": FakeClassifier(delay), "embed": FakeEmbedder(), "summarize": FakeSummarizer()}


class Running:
    """A started server: its URL, its app, and a way to ask it to stop."""

    def __init__(self, server, thread, url, app):
        self.server, self.thread, self.url, self.app = server, thread, url, app

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not stop"


@contextmanager
def running(models, limits: Limits | None = None, graceful_s: float = 30.0):
    """Serve ``models`` with uvicorn on 127.0.0.1:<free port> in a thread; stop it afterwards."""
    import uvicorn

    app = create_app(models, limits)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_s)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="test-server")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # up to 60 s on a loaded machine
        if server.started:
            break
        time.sleep(0.1)
    handle = Running(server, thread, url, app)
    try:
        assert server.started, "the test server did not start"
        assert httpx.get(url + "/healthz").status_code == 200
        yield handle
    finally:
        handle.stop()
        sock.close()
