"""The HTTP contract and its limits, against a real uvicorn server on 127.0.0.1 (fake models: fast).

Each test starts its own server on a free port and stops it at the end;
concurrent clients are real: asyncio + httpx, or threads.
"""

import asyncio
import json
import threading
import time

import httpx
import pytest
from serve_helpers import FakeClassifier, fake_models, running

from course.serve.app import Limits


def post_many(url: str, bodies: list, timeout: float = 60.0) -> list[httpx.Response]:
    """POST every body at once from its own connection; responses in the order of ``bodies``."""

    async def main():
        async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=len(bodies))) as client:
            return await asyncio.gather(*(client.post(url, json=body) for body in bodies))

    return asyncio.run(main())


def test_every_endpoint_answers_in_the_documented_shape():
    with running(fake_models()) as server:
        one = httpx.post(server.url + "/classify", json={"text": "a good film"})
        assert one.status_code == 200 and one.json() == {"label": "positive", "score": 0.011}
        many = httpx.post(server.url + "/classify", json={"texts": ["good", "bad one"]})
        assert many.json() == [{"label": "positive", "score": 0.004}, {"label": "negative", "score": 0.007}]
        assert httpx.post(server.url + "/embed", json={"text": "abc"}).json() == {"embedding": [3.0, 1.0, 0.0]}
        summary = httpx.post(server.url + "/summarize", json={"text": "One. Two. Three", "max_sentences": 2})
        assert summary.json() == {"summary": "One Two"}
        health = httpx.get(server.url + "/healthz").json()
        assert health["status"] == "ok" and set(health["tasks"]) == {"classify", "embed", "summarize"}
        assert health["tasks"]["classify"] == {"model": "fake", "device": "cpu"}
        assert httpx.post(server.url + "/generate", json={"prompt": "x"}).status_code == 404  # not served


def test_openapi_page_documents_the_request_and_response_models():
    with running(fake_models()) as server:
        spec = httpx.get(server.url + "/openapi.json").json()
        assert {"/classify", "/embed", "/summarize", "/healthz", "/metrics"} <= set(spec["paths"])
        schemas = spec["components"]["schemas"]
        assert {"ClassifyRequest", "ClassifyResult", "EmbedResponse", "SummarizeRequest"} <= set(schemas)
        assert schemas["SummarizeRequest"]["properties"]["max_sentences"]["minimum"] == 1
        page = httpx.get(server.url + "/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()


def test_concurrent_clients_are_batched_and_each_gets_its_own_answer():
    model = FakeClassifier(delay=0.05)
    with running({"classify": model}, Limits(max_batch=8, max_wait_ms=20)) as server:
        texts = [f"good text number {i:02d}" + "!" * i for i in range(24)]
        responses = post_many(server.url + "/classify", [{"text": t} for t in texts])
        assert [r.status_code for r in responses] == [200] * 24
        assert [r.json()["score"] for r in responses] == [len(t) / 1000 for t in texts]  # each its own
        metrics = httpx.get(server.url + "/metrics").text
    assert max(model.batches) > 1 and max(model.batches) <= 8, model.batches
    assert sum(model.batches) == 24
    assert 'course_requests_total{endpoint="/classify",status="200"} 24.0' in metrics
    assert 'course_batch_size_count{task="classify"}' in metrics
    assert 'course_request_seconds_bucket{endpoint="/classify",le="+Inf"} 24.0' in metrics
    assert "course_process_rss_bytes" in metrics and 'course_queue_depth{task="classify"} 0.0' in metrics


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"text": ""}, "text is empty"),
        ({"text": "   "}, "text is empty"),
        ({"text": 42}, "Input should be a valid string"),
        ({"texts": "not a list"}, "Input should be a valid list"),
        ({"txt": "typo"}, "Extra inputs are not permitted"),
        ({"text": "a", "texts": ["b"]}, "send either 'text'"),
        ({"texts": []}, "texts is an empty list"),
        ({"texts": ["fine", ""]}, "texts[1] is empty"),
    ],
)
def test_bad_classify_bodies_are_422_with_a_message_naming_the_problem(body, fragment):
    with running({"classify": FakeClassifier()}) as server:
        response = httpx.post(server.url + "/classify", json=body)
    assert response.status_code == 422
    assert fragment in json.dumps(response.json()["detail"]), response.json()


def test_malformed_json_and_wrong_types_on_other_endpoints_are_422():
    with running(fake_models()) as server:
        broken = httpx.post(
            server.url + "/embed", content=b'{"text": "unterminated', headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422 and "JSON decode error" in broken.text
        assert httpx.post(server.url + "/summarize", json={"text": "x", "max_sentences": 0}).status_code == 422
        wrong = httpx.post(server.url + "/summarize", json={"text": "x", "max_sentences": "three"})
        assert wrong.status_code == 422 and "max_sentences" in wrong.text
        assert httpx.post(server.url + "/embed", json=["a list"]).status_code == 422


def test_oversized_bodies_are_413_whether_announced_or_streamed():
    with running(fake_models(), Limits(max_body_bytes=2000)) as server:
        big = {"text": "x" * 5000}
        announced = httpx.post(server.url + "/classify", json=big)
        assert announced.status_code == 413 and "larger than 2000 bytes" in announced.json()["detail"]

        def chunks():  # no Content-Length: the limit must be counted while the body arrives
            for _ in range(10):
                yield b"x" * 500

        streamed = httpx.post(server.url + "/classify", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert httpx.post(server.url + "/classify", json={"text": "small and good"}).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
    assert 'course_requests_total{endpoint="/classify",status="413"} 2.0' in metrics


def test_overload_is_503_with_retry_after_and_the_admitted_requests_are_served():
    with running({"classify": FakeClassifier(delay=0.2)}, Limits(max_batch=1, max_wait_ms=0, max_queue=2)) as server:
        responses = post_many(server.url + "/classify", [{"text": f"good {i}"} for i in range(12)])
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(503) >= 5 and codes.count(200) >= 2, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "overloaded" in refused.json()["detail"]


def test_a_slow_model_is_cut_off_by_the_request_time_limit():
    with running({"classify": FakeClassifier(delay=1.5)}, Limits(request_timeout_s=0.3)) as server:
        started = time.perf_counter()
        response = httpx.post(server.url + "/classify", json={"text": "good"}, timeout=30)
        seconds = time.perf_counter() - started
    assert response.status_code == 504 and "request time limit" in response.json()["detail"]
    assert seconds < 1.4


def test_one_failing_input_fails_only_its_own_request():
    with running({"classify": FakeClassifier(delay=0.05)}, Limits(max_batch=8, max_wait_ms=50)) as server:
        responses = post_many(server.url + "/classify", [{"text": t} for t in ("good a", "boom", "good b", "bad c")])
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert "cannot read 'boom'" in responses[1].json()["detail"]


def test_graceful_shutdown_answers_every_request_in_flight():
    model = FakeClassifier(delay=0.3)
    bodies = [{"text": f"good {i}"} for i in range(10)]
    with running({"classify": model}, Limits(max_batch=2, max_wait_ms=0)) as server:
        results: list = []
        client = threading.Thread(target=lambda: results.extend(post_many(server.url + "/classify", bodies)))
        client.start()
        while sum(model.batches) < 2:  # requests are in flight: the first batch is running
            time.sleep(0.01)
        server.stop()  # uvicorn's shutdown: stop accepting, finish the requests in flight
        client.join(60)
        with pytest.raises(httpx.ConnectError):
            httpx.post(server.url + "/classify", json={"text": "too late"})
    assert [r.status_code for r in results] == [200] * 10  # none lost
    assert sum(model.batches) == 10


class SmallGpu(FakeClassifier):
    """Runs out of memory (torch.OutOfMemoryError, as on a GPU) on batches of more than 2 texts."""

    def __call__(self, texts):
        import torch

        if len(texts) > 2:
            self.batches.append(-len(texts))  # a failed attempt
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated, batch of {len(texts)})")
        return super().__call__(texts)


def test_out_of_memory_in_the_server_splits_batches_and_every_request_is_answered():
    model = SmallGpu(delay=0.05)
    with running({"classify": model}, Limits(max_batch=8, max_wait_ms=50)) as server:
        texts = [f"good {'!' * i}" for i in range(8)]
        responses = post_many(server.url + "/classify", [{"text": t} for t in texts])
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["score"] for r in responses] == [len(t) / 1000 for t in texts]
    assert any(size < 0 for size in model.batches) and max(model.batches) <= 2, model.batches
    retries = next(
        line for line in metrics.splitlines() if line.startswith('course_oom_retries_total{task="classify"}')
    )
    assert float(retries.split()[-1]) >= 1
