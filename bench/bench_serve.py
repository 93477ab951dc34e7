"""Load test of ``course serve``: dynamic batching against one request per model call.

Starts real servers on 127.0.0.1 (``course serve --task classify`` on the
bundled MiniLM with a 2-label head) and drives them with
:func:`course.serve.client.load_test` (httpx, asyncio, closed loop: each of
``concurrency`` clients waits for its answer before sending the next).  The
texts are the bundled test reviews, so lengths vary as in real traffic.

Measured in ONE run, so machine load hits every setting alike:

1. the headline: ``--max-batch 1`` vs ``--max-batch 32 --max-wait-ms 5`` at
   concurrency 32, trials alternating between the two servers (both stay up);
   printed: the ratio of the best trials and of the medians;
2. throughput and p50/p95/p99 against concurrency (1 to 64) for both;
3. throughput and p95 against max-batch / max-wait-ms at concurrency 32.

::

    python bench/bench_serve.py --out build/bench_serve       # ~4 min on 2 CPU cores
    python bench/bench_serve.py --quick                         # the headline only

Goal on 2 CPU cores: batching >= 2x the requests per second of --max-batch 1 at concurrency 32.
Writes ``OUT/bench_serve.json`` and ``OUT/bench_serve.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

GOAL = 2.0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/bench_serve", help="folder for the JSON and the plot")
    parser.add_argument("--model", default=None, help="classifier folder (default: MiniLM + a fresh head)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, default=32, help="clients for the headline ratio")
    parser.add_argument("--requests", type=int, default=96, help="requests per headline trial")
    parser.add_argument("--trials", type=int, default=3, help="headline trials per server, alternating")
    parser.add_argument("--sweep", default="1,4,16,32,64", help="concurrency levels for the curves")
    parser.add_argument("--settings", default="1:0,8:5,32:5,32:20", help="max-batch:max-wait-ms pairs to compare")
    parser.add_argument("--quick", action="store_true", help="headline ratio only")
    return parser.parse_args(argv)


def payloads() -> list[dict]:
    from course.assets import bundled_rows

    return [{"text": row["text"]} for row in bundled_rows()["test"]]


def server_args(model: str, device: str, max_batch: int, max_wait_ms: float) -> list[str]:
    return [
        "--task",
        "classify",
        "--model",
        model,
        "--device",
        device,
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(max_wait_ms),
        "--max-queue",
        "1024",
        "--timeout",
        "600",  # a load test measures slowness; it must not turn it into 504s
    ]


def run(args: argparse.Namespace) -> dict:
    from course.serve.client import BackgroundServer, load_test

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bodies = payloads()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model = args.model
        if model is None:
            from course.serve.tiny import save_fresh_classifier

            model = str(save_fresh_classifier(Path(tmp) / "classifier"))
        report: dict = {"load_before": os.getloadavg(), "concurrency": args.concurrency, "cpus": os.cpu_count()}

        # 1 + 2: both headline servers stay up; trials alternate between them.
        servers = {
            "max-batch 1": BackgroundServer(server_args(model, args.device, 1, 0)).start(),
            "max-batch 32, 5 ms": BackgroundServer(server_args(model, args.device, 32, 5)).start(),
        }
        try:
            for server in servers.values():  # warm-up: first calls pay one-off costs
                load_test(server.url + "/classify", bodies, concurrency=4, requests=16)
            trials: dict[str, list] = {name: [] for name in servers}
            for _ in range(args.trials):
                for name, server in servers.items():
                    result = load_test(
                        server.url + "/classify", bodies, concurrency=args.concurrency, requests=args.requests
                    )
                    result.label = name
                    trials[name].append(result)
                    print(
                        f"  {name:<20} c={args.concurrency:<3} {result.requests_per_s:7.1f} req/s  "
                        f"p95 {result.latency.get('p95_ms', float('nan')):8.1f} ms  errors {result.errors}",
                        flush=True,
                    )
            curves = []
            if not args.quick:
                for level in [int(c) for c in args.sweep.split(",")]:
                    for name, server in servers.items():
                        result = load_test(
                            server.url + "/classify", bodies, concurrency=level, requests=max(16, 2 * level)
                        )
                        result.label = name
                        curves.append(result)
                        print(
                            f"  {name:<20} c={level:<3} {result.requests_per_s:7.1f} req/s  "
                            f"p50 {result.latency['p50_ms']:7.1f}  p95 {result.latency['p95_ms']:7.1f}  "
                            f"p99 {result.latency['p99_ms']:7.1f} ms",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()

        # 3: max-batch / max-wait settings at the headline concurrency.
        settings = []
        if not args.quick:
            for pair in args.settings.split(","):
                batch, wait = pair.split(":")
                with BackgroundServer(server_args(model, args.device, int(batch), float(wait))) as server:
                    load_test(server.url + "/classify", bodies, concurrency=4, requests=8)
                    result = load_test(
                        server.url + "/classify", bodies, concurrency=args.concurrency, requests=args.requests
                    )
                result.label = f"max-batch {batch}, wait {wait} ms"
                settings.append(result)
                print(
                    f"  {result.label:<26} {result.requests_per_s:7.1f} req/s  p95 {result.latency['p95_ms']:8.1f} ms",
                    flush=True,
                )

    single, batched = (trials[name] for name in servers)
    best = max(r.requests_per_s for r in batched) / max(r.requests_per_s for r in single)
    median = statistics.median(r.requests_per_s for r in batched) / statistics.median(r.requests_per_s for r in single)
    report.update(
        ratio_best=best,
        ratio_median=median,
        load_after=os.getloadavg(),
        trials={name: [r.row() for r in rows] for name, rows in trials.items()},
        curves=[r.row() for r in curves],
        settings=[r.row() for r in settings],
    )
    (out / "bench_serve.json").write_text(json.dumps(report, indent=2))
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        from course.serve.client import plot_load

        plot_load(curves, "course serve /classify, MiniLM on CPU").savefig(out / "bench_serve.png", dpi=110)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = run(args)
    print(
        f"\nbatching / max-batch 1 at concurrency {args.concurrency}: best {report['ratio_best']:.2f}x, "
        f"median {report['ratio_median']:.2f}x (goal >= {GOAL}x); load average before "
        f"{report['load_before'][0]:.1f}, after {report['load_after'][0]:.1f}; {report['cpus']} CPUs"
    )
    print(f"wrote {Path(args.out) / 'bench_serve.json'}")
    return 0 if report["ratio_median"] >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
