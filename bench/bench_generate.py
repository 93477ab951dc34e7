"""Lesson 05's two performance goals, each against a baseline measured in the same run.

1. **Training** (smoke settings, ``DecoderConfig()`` defaults): validation
   perplexity of the trained decoder / a unigram baseline on the same tokens,
   goal <= 0.5, with <= 90 s of training on 2 cores.  Printed: wall-clock
   seconds of the optimizer steps and their CPU seconds (all threads); on a
   machine shared with other jobs the wall clock grows while the CPU time
   does not, so ``CPU s / threads`` is what the training would take on 2 idle
   cores.  The load average is printed next to it.
2. **KV cache**: greedy generation of 256 new tokens after a 1-token prompt,
   with and without the cache, same model (the lesson's architecture with a
   512-position table so 257 tokens fit; timing does not depend on the weights,
   so they are random), alternating trials.  Goal: speed-up >= 3x on a CPU.
   Also printed: the cache's size, measured and by formula.

    python bench/bench_generate.py                       # both
    python bench/bench_generate.py --skip-training --trials 3 --json build/bench_generate.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: DecoderConfig().steps)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--trials", type=int, default=2, help="KV-cache timing repeats (median per step)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="auto", help="torch CPU threads: auto (1 on a busy machine) or a number")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def bench_training(args: argparse.Namespace) -> dict:
    import torch

    from course.generate import DecoderConfig, train_decoder

    config = DecoderConfig() if args.steps is None else DecoderConfig(steps=args.steps)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    run = train_decoder(config, device=args.device, progress=False)
    threads = torch.get_num_threads()
    scores = run.scores
    row = {
        "steps": config.steps,
        "val_perplexity": scores["val_perplexity"],
        "unigram_perplexity": scores["unigram_perplexity"],
        "untrained_perplexity": scores["untrained_perplexity"],
        "ratio_to_unigram": scores["val_perplexity"] / scores["unigram_perplexity"],
        "train_wall_s": run.seconds["train"],
        "train_cpu_s": run.seconds["train_cpu"],
        "train_cpu_s_per_thread": run.seconds["train_cpu"] / threads,
        "threads": threads,
        "total_s": time.perf_counter() - started,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    print(
        f"training {config.steps} steps ({config.batch_size} x {config.block_size} tokens): "
        f"val perplexity {row['val_perplexity']:.1f}, unigram {row['unigram_perplexity']:.1f}, "
        f"untrained {row['untrained_perplexity']:.0f}"
    )
    print(f"  ratio to unigram {row['ratio_to_unigram']:.3f} (goal <= 0.5)")
    print(
        f"  training: {row['train_wall_s']:.1f} s wall, {row['train_cpu_s']:.1f} s CPU over {threads} threads "
        f"= {row['train_cpu_s_per_thread']:.1f} s on idle cores (goal <= 90 s); "
        f"load average {load_before:.1f} -> {row['load_average'][1]:.1f}"
    )
    return row


def bench_kv_cache(args: argparse.Namespace) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from course.generate import DecoderConfig
    from course.generate.kvcache import time_generation

    shape = DecoderConfig()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=shape.vocab_size,
        n_positions=max(512, args.new_tokens + 1),
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
    )
    model = GPT2LMHeadModel(config).to(args.device).eval()
    load_before = os.getloadavg()[0]
    timing = time_generation(model, new_tokens=args.new_tokens, repeats=args.trials)
    no_cache, cache = timing["per_step_no_cache_s"], timing["per_step_cache_s"]
    quarter = len(cache) // 4
    row = {
        "new_tokens": args.new_tokens,
        "total_no_cache_s": timing["total_no_cache_s"],
        "total_cache_s": timing["total_cache_s"],
        "speedup": timing["speedup"],
        "ms_per_token_first_quarter": [
            statistics.median(no_cache[:quarter]) * 1e3,
            statistics.median(cache[:quarter]) * 1e3,
        ],
        "ms_per_token_last_quarter": [
            statistics.median(no_cache[-quarter:]) * 1e3,
            statistics.median(cache[-quarter:]) * 1e3,
        ],
        "cache_mib": timing["cache_bytes"] / 2**20,
        "cache_mib_formula": timing["cache_bytes_formula"] / 2**20,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    print(
        f"KV cache, {args.new_tokens} new tokens, {args.trials} trial(s), {torch.get_num_threads()} threads: "
        f"{row['total_no_cache_s']:.2f} s without, {row['total_cache_s']:.2f} s with: "
        f"speed-up {row['speedup']:.1f}x (goal >= 3)"
    )
    print(
        "  ms per token, first / last quarter: no cache {:.1f} / {:.1f}, cache {:.1f} / {:.1f}".format(
            row["ms_per_token_first_quarter"][0],
            row["ms_per_token_last_quarter"][0],
            row["ms_per_token_first_quarter"][1],
            row["ms_per_token_last_quarter"][1],
        )
    )
    print(
        f"  cache at {args.new_tokens + 1} tokens: {row['cache_mib']:.2f} MiB "
        f"(formula {row['cache_mib_formula']:.2f} MiB); load average {load_before:.1f} -> {row['load_average'][1]:.1f}"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from course.generate import set_cpu_threads

    print("CPU threads:", set_cpu_threads(args.threads if args.threads == "auto" else int(args.threads)))
    results = {"kv_cache": bench_kv_cache(args)}
    if not args.skip_training:
        results["training"] = bench_training(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
