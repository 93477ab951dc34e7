"""course.train's loop against transformers.Trainer: samples per second, same model, data and settings.

Both recipes fine-tune the bundled MiniLM with a fresh 2-label head on the
bundled sentiment train split: batch 16, max length 64 with dynamic padding,
fp32, fused AdamW, gradient clipping at 1.0, a linear schedule.  Each trial
starts from the same initial weights (a copy made once, so loading the model
is not timed) and times the whole training call (``fit()`` /
``trainer.train()``), optimizer creation included: that is
:func:`course.train.trainer.compare_recipes`, which notebook 03 runs too.  Trials alternate between
the recipes so that a change in machine load hits both.  Printed, all from
this one run: the ratio of the best trials (other processes only ever slow a
trial down, so the best is the least disturbed), of the medians, and the
median of the per-pair ratios::

    python bench/bench_train.py                # 30 steps, 3 trials each
    python bench/bench_train.py --steps 60 --trials 5 --json build/bench_train.json

Goal: loop / Trainer >= 1.0 on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--trials", type=int, default=3, help="timed runs per recipe, alternating")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from course.assets import load_dataset, load_model, load_tokenizer
    from course.devices import choose_device
    from course.quiet import expected_load_report
    from course.train.data import tokenize
    from course.train.loop import TrainConfig
    from course.train.trainer import compare_recipes

    choice = choose_device(args.device)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, precision=args.precision, fused=True
    )
    torch.manual_seed(0)
    tokenizer = load_tokenizer()
    with expected_load_report():  # the fresh head's MISSING report: expected
        initial = load_model(task="sequence-classification")
    train = tokenize(load_dataset()["train"], tokenizer, config.max_length, num_labels=2)

    print(
        f"device {choice}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(f"{args.steps} steps x batch {args.batch_size}, max length {args.max_length}, {args.precision}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        # warm-up: first-call costs (allocator, kernels, imports) out of the timings
        compare_recipes(initial, tokenizer, train, config, output_dir=folder, device=choice.device, repeats=1)
        # the same steps for both, alternated, each from a fresh copy of the same initial model
        rows = compare_recipes(
            initial, tokenizer, train, config, output_dir=folder, device=choice.device, repeats=args.trials
        )
    results: dict[str, list[float]] = {"loop": [], "trainer": []}
    for row in rows:
        name = "loop" if row["recipe"] == "loop" else "trainer"
        results[name].append(row["samples_per_s"])
        print(f"trial {row['repeat']} {name:<8} {row['samples_per_s']:7.1f} samples/s", flush=True)
    print(f"load average after the trials {os.getloadavg()[0]:.1f}")
    best = {name: max(values) for name, values in results.items()}
    median = {name: statistics.median(values) for name, values in results.items()}
    paired = statistics.median(a / b for a, b in zip(results["loop"], results["trainer"], strict=True))
    ratio = best["loop"] / best["trainer"]
    print(
        f"median: course.train {median['loop']:.1f}, Trainer {median['trainer']:.1f} samples/s "
        f"-> {median['loop'] / median['trainer']:.2f}x; median of paired trials {paired:.2f}x"
    )
    print(
        f"best:   course.train {best['loop']:.1f}, Trainer {best['trainer']:.1f} samples/s -> ratio {ratio:.2f}x "
        f"(goal >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'}; best-of is the estimate least hurt by other load)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "config": vars(args),
            "samples_per_s": results,
            "ratio_best": ratio,
            "ratio_paired": paired,
            "device": str(choice.device),
        }
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
