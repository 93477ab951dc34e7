"""``course serve`` as a user runs it: bad settings fail in one line; a real server serves and stops cleanly."""

import asyncio
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from course.serve.client import BackgroundServer, latency_summary, load_test, percentile
from course.serve.server import parse_models
from course.serve.tiny import save_fresh_classifier, save_tiny_causal_lm


def course(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "course", *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("course serve: error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--task", "translate"], "unknown task 'translate': choose from classify, embed, summarize, generate"),
        (["--task", "classify", "--model", "./missing/classifier"], "folder ./missing/classifier does not exist"),
        (["--task", "classify", "embed", "--model", "somewhere"], "with several tasks write TASK=MODEL"),
        (["--task", "generate"], "--task generate needs a causal LM"),
        (["--task", "embed", "--max-batch", "0"], "max_batch must be an integer >= 1"),
        (["--task", "embed", "--port", "70000"], "port 70000 is not a TCP port"),
        (["--task", "summarize", "--model", "sshleifer/distilbart-cnn-12-6"], "cannot load"),
    ],
)
def test_bad_settings_fail_in_one_line_with_exit_2(args, fragment):
    assert_one_line_error(
        course("serve", *args, "--port", "0") if "--port" not in args else course("serve", *args), fragment
    )


def test_a_port_in_use_is_one_line_and_nothing_is_loaded():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        result = course("serve", "--task", "embed", "--port", str(port))
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use")
    assert time.perf_counter() - started < 60  # failed before loading any model


def test_model_flags_map_to_tasks():
    assert parse_models(["classify"], ["runs/clf"]) == {"classify": "runs/clf"}
    assert parse_models(["classify", "generate"], ["classify=a", "generate=b"]) == {"classify": "a", "generate": "b"}


def test_help_lists_serve_and_stays_free_of_torch():
    code = "import sys; from course.cli import main\ntry: main(['serve', '--help'])\nexcept SystemExit: pass\n"
    code += "print('TORCH' if 'torch' in sys.modules or 'fastapi' in sys.modules else 'LIGHT')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--max-wait-ms" in result.stdout and result.stdout.strip().endswith("LIGHT")


def test_percentiles_interpolate_like_numpy():
    import numpy as np

    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 50, 95, 99, 100):
        assert abs(percentile(values, q) - float(np.percentile(values, q))) < 1e-12
    summary = latency_summary([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0) and summary["max_ms"] == pytest.approx(3.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-cli")
    return {"classifier": save_fresh_classifier(root / "classifier"), "gpt": save_tiny_causal_lm(root / "gpt")}


@pytest.mark.slow
def test_real_server_serves_every_endpoint_streams_and_shuts_down_without_losing_requests(folders):
    args = [
        "--task",
        "classify",
        "embed",
        "summarize",
        "generate",
        "--max-batch",
        "8",
        "--max-wait-ms",
        "20",
        "--model",
        f"classify={folders['classifier']}",
        "--model",
        f"generate={folders['gpt']}",
        "--device",
        "cpu",
    ]
    server = BackgroundServer(args).start()
    try:
        url = server.url
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        label = httpx.post(url + "/classify", json={"text": "A wonderful film."}, timeout=60).json()
        assert label["label"] in {"negative", "positive"} and 0.5 <= label["score"] <= 1
        assert len(httpx.post(url + "/embed", json={"text": "hello"}, timeout=60).json()["embedding"]) == 384
        summary = httpx.post(url + "/summarize", json={"text": "One. Two. Three.", "max_sentences": 1}, timeout=60)
        assert summary.json()["summary"] in {"One.", "Two.", "Three."}
        body = {"prompt": "The film was", "max_new_tokens": 6, "temperature": 0}
        plain = httpx.post(url + "/generate", json=body, timeout=60).json()["text"]
        with httpx.stream("POST", url + "/generate", json={**body, "stream": True}, timeout=60) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
        import json

        events = [json.loads(e) for e in events]
        assert events[-1]["done"] is True and events[-1]["text"] == plain
        assert "".join(e["token"] for e in events[:-1]) == plain

        # Graceful shutdown: 32 requests in flight, then SIGTERM; every one is answered.
        results = []

        async def many():
            async with httpx.AsyncClient(timeout=120) as client:
                texts = [f"review number {i}: " + "quite good, and long enough to take a while " * 8 for i in range(32)]
                return await asyncio.gather(*(client.post(url + "/classify", json={"text": t}) for t in texts))

        client = threading.Thread(target=lambda: results.extend(asyncio.run(many())))
        client.start()
        time.sleep(0.3)  # the requests are out; the first batches are running
        assert client.is_alive(), "the requests finished before the shutdown: make them slower"
        code = server.stop()
        client.join(120)
        assert code == 0, server.output[-5:]
        assert [r.status_code for r in results] == [200] * 32
        assert any("course serve: stopped" in line for line in server.output)
    finally:
        server.stop()


@pytest.mark.slow
def test_load_test_reports_throughput_and_percentiles_against_a_real_server(folders):
    with BackgroundServer(["--task", "classify", "--model", str(folders["classifier"]), "--device", "cpu"]) as server:
        result = load_test(
            server.url + "/classify", [{"text": "good"}, {"text": "bad film"}], concurrency=4, requests=16
        )
        bad = load_test(server.url + "/classify", [{"text": ""}], concurrency=2, requests=4)
    assert result.ok == 16 and result.errors == {} and result.requests_per_s > 0
    assert result.latency["p50_ms"] <= result.latency["p95_ms"] <= result.latency["p99_ms"] <= result.latency["max_ms"]
    assert bad.ok == 0 and bad.errors == {"422": 4}
