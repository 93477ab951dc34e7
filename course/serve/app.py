"""The FastAPI app: routes, limits, batchers, metrics and a graceful shutdown.

One request's path through the server::

    client ──HTTP──► uvicorn ──► BodyLimit (413 if too big) ──► Timing (metrics)
        ──► FastAPI: pydantic validation (422) ──► route ──► batcher.submit (503 if the queue is full)
        ──► waits (504 after request_timeout_s) ◄── one batch in the worker thread ◄── the model

The event loop never runs a model: routes only ``await`` their batcher, so
the server keeps accepting (and rejecting) requests while a batch computes.

Shutdown (SIGTERM from Kubernetes, Ctrl+C): uvicorn stops accepting
connections and waits for the requests in flight; then the lifespan's exit
closes each batcher, which finishes everything still queued.  /healthz says
"draining" meanwhile, so a load balancer stops sending traffic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response, StreamingResponse

from course.serve.batcher import BatcherClosed, MicroBatcher, QueueFull
from course.serve.metrics import ServeMetrics
from course.serve.models import GenerateJob, SummaryJob
from course.serve.schemas import (
    ClassifyRequest,
    ClassifyResult,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    SummarizeRequest,
    SummarizeResponse,
)


@dataclass
class Limits:
    """How much the server accepts, and how long a request may take."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 30.0


def create_app(
    models: Mapping[str, Callable[[list[Any]], list[Any]]],
    limits: Limits | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``models`` (task name -> batch function), e.g. ``{"classify": Classifier()}``.

    Only the tasks given get routes.  The models are ready before the app is
    built, so /healthz answers "ok" exactly when every route can serve.
    ``on_ready()`` is called once the batchers run (``course serve`` prints its ready line).
    """
    limits = limits or Limits()
    state: dict[str, Any] = {"draining": False}
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")  # one model call at a time
    batchers: dict[str, MicroBatcher] = {}
    metrics = ServeMetrics(lambda: {task: b.queued for task, b in batchers.items()})
    for task, model in models.items():
        batch = 1 if task == "generate" else limits.max_batch  # per-request sampling settings: one at a time
        batchers[task] = MicroBatcher(
            model,
            max_batch=batch,
            max_wait_ms=limits.max_wait_ms,
            max_queue=limits.max_queue,
            name=task,
            executor=executor,
            on_batch=metrics.batch_hook(task),
            on_oom=metrics.oom_hook(task),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for batcher in batchers.values():
            await batcher.start()
        if on_ready is not None:
            on_ready()
        yield
        state["draining"] = True
        for batcher in batchers.values():
            await batcher.close()  # finishes what is queued
        executor.shutdown(wait=True)

    app = FastAPI(
        title="course serve",
        description="Lesson 06: transformer models behind HTTP, with dynamic micro-batching.",
        lifespan=lifespan,
    )
    app.state.batchers, app.state.metrics, app.state.limits = batchers, metrics, limits

    async def run(task: str, item: Any) -> Any:
        """Submit one item to its batcher; map overload, shutdown, timeouts and model errors to HTTP."""
        try:
            return await asyncio.wait_for(batchers[task].submit(item), limits.request_timeout_s)
        except QueueFull as error:
            raise HTTPException(503, f"overloaded: {error}; retry later", headers={"Retry-After": "1"}) from None
        except BatcherClosed as error:
            raise HTTPException(503, f"{error}; retry on another replica", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(504, f"no answer within {limits.request_timeout_s:g} s (request time limit)") from None
        except Exception as error:  # noqa: BLE001 - this request's own model error, reported to it alone
            raise HTTPException(500, f"model error: {type(error).__name__}: {str(error)[:200]}") from None

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness and readiness: 200 while serving, 503 while draining at shutdown."""
        body = {
            "status": "draining" if state["draining"] else "ok",
            "tasks": {task: getattr(model, "info", dict)() for task, model in models.items()},
            "queued": {task: b.queued for task, b in batchers.items()},
        }
        return JSONResponse(body, status_code=503 if state["draining"] else 200)

    @app.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        """Prometheus text format: requests, latency and batch-size histograms, memory."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    if "classify" in models:

        @app.post("/classify", response_model=ClassifyResult | list[ClassifyResult], tags=["models"])
        async def classify(request: ClassifyRequest) -> Any:
            """The label of one text, or of each text of a list (each text is batched on its own)."""
            if request.text is not None:
                return await run("classify", request.text)
            return list(await asyncio.gather(*(run("classify", text) for text in request.texts)))

    if "embed" in models:

        @app.post("/embed", response_model=EmbedResponse, tags=["models"])
        async def embed(request: EmbedRequest) -> Any:
            """A normalised sentence embedding."""
            return {"embedding": await run("embed", request.text)}

    if "summarize" in models:

        @app.post("/summarize", response_model=SummarizeResponse, tags=["models"])
        async def summarize(request: SummarizeRequest) -> Any:
            """An extractive summary (or abstractive, with an encoder-decoder model)."""
            return {"summary": await run("summarize", SummaryJob(request.text, request.max_sentences))}

    if "generate" in models:

        @app.post(
            "/generate",
            response_model=GenerateResponse,
            tags=["models"],
            responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or events with stream"}},
        )
        async def generate(request: GenerateRequest) -> Any:
            """Generated text; with ``"stream": true`` server-sent events, one per piece of text."""
            job = GenerateJob(request.prompt, request.max_new_tokens, request.temperature, request.top_p)
            if not request.stream:
                return {"text": await run("generate", job)}
            return StreamingResponse(_events(models["generate"], job), media_type="text/event-stream")

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(Timing, metrics=metrics)  # added last = outermost: it also counts the 413s
    return app


def sse(data: Mapping[str, Any]) -> str:
    """One server-sent event: a ``data:`` line with JSON, then a blank line."""
    return f"data: {json.dumps(data)}\n\n"


async def _events(generator: Any, job: GenerateJob) -> AsyncIterator[str]:
    """Pieces of text as events, then ``{"done": true, "text": everything}``.

    The blocking iterator is advanced in a worker thread, one piece per call,
    so streaming never blocks the event loop.
    """
    loop = asyncio.get_running_loop()
    pieces = generator.stream(job)  # a generator: nothing runs until the first next()
    text = []
    while (piece := await loop.run_in_executor(None, next, pieces, None)) is not None:
        text.append(piece)
        yield sse({"token": piece})
    yield sse({"done": True, "text": "".join(text)})


# ------------------------------------------------------------------ ASGI middleware

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class _TooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI answers 413 if it sees it first."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes: send a shorter text")


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """Answer 413 to a body over ``limit`` bytes, by its Content-Length or while it streams in.

    It sits in front of everything, so an oversized body is never parsed.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = {"detail": f"request body larger than {self.limit} bytes: send a shorter text"}
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_json(send, 413, detail)
        received, started = 0, False

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, detail)


class Timing:
    """Count every response by endpoint and status, and time it, for /metrics."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") == "/metrics":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def watched(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.metrics.observe_request(scope.get("path", "?"), status, time.perf_counter() - started)
