"""Hand-written LoRA against 🤗 peft's: seconds per training step, same model, batch and settings.

Both wrap the bundled MiniLM (fresh 2-label head) with LoRA r=8, alpha=16
on ``query`` and ``value``, the pooler and classifier trained in full
(:data:`course.extend.compare.HEAD`), and train with the same fused AdamW on
the same batch (16 reviews padded to 64 tokens).  One step is forward,
backward, optimizer step, ``zero_grad``.  After warm-up steps, steps
alternate between the two models (hand, peft, hand, peft ...) so a change in
machine load hits both.  Printed, all from this one run: the median step
time of each, the ratio peft / hand of the medians and of the best steps
(other processes only ever slow a step down), and the load average::

    python bench/bench_lora.py                      # 40 timed steps each
    python bench/bench_lora.py --steps 80 --json build/bench_lora.json

Goal: hand LoRA step time >= 0.9x peft's speed, i.e. ratio peft / hand >= 0.9.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from course.assets import bundled_rows, load_tokenizer
    from course.devices import choose_device
    from course.extend.compare import HEAD, load_base, peft_model
    from course.extend.lora import apply_lora

    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device).device
    tokenizer = load_tokenizer()
    base = load_base(seed=0)
    rows = bundled_rows()["train"][: args.batch_size]
    batch = dict(
        tokenizer(
            [r["text"] for r in rows],
            padding="max_length",
            truncation=True,
            max_length=args.max_length,
            return_tensors="pt",
        )
    )
    batch["labels"] = torch.tensor([r["label"] for r in rows])
    batch = {key: value.to(device) for key, value in batch.items()}

    hand = copy.deepcopy(base)
    apply_lora(hand, ["query", "value"], r=args.rank, alpha=2 * args.rank, train=HEAD)
    peft = peft_model(copy.deepcopy(base), r=args.rank, alpha=2 * args.rank, head=HEAD)
    runs = {}
    for name, model in (("hand", hand), ("peft", peft)):
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        runs[name] = (model, torch.optim.AdamW(params, lr=1e-3, fused=True))

    def step(name: str) -> float:
        model, optimizer = runs[name]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for _ in range(args.warmup):
        step("hand"), step("peft")
    times: dict[str, list[float]] = {"hand": [], "peft": []}
    for index in range(args.steps):
        order = ("hand", "peft") if index % 2 == 0 else ("peft", "hand")  # neither always goes first
        for name in order:
            times[name].append(step(name))
        print(
            f"  step {index + 1}/{args.steps}: hand {times['hand'][-1]:.3f} s, peft {times['peft'][-1]:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    result = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "batch": f"{args.batch_size} x {args.max_length}",
        "rank": args.rank,
        "steps": args.steps,
        "median_step_s": medians,
        "best_step_s": best,
        "ratio_peft_over_hand_median": medians["peft"] / medians["hand"],
        "ratio_peft_over_hand_best": best["peft"] / best["hand"],
        "load_average": os.getloadavg(),
        "goal": "ratio >= 0.9",
    }
    print(f"device {device}, batch {result['batch']}, LoRA r={args.rank} on query/value, {args.steps} steps each")
    for name in ("hand", "peft"):
        print(f"  {name}: median {medians[name]:.4f} s/step, best {best[name]:.4f} s/step")
    print(
        f"  peft / hand: {result['ratio_peft_over_hand_median']:.3f} (medians), "
        f"{result['ratio_peft_over_hand_best']:.3f} (best steps); goal >= 0.9"
    )
    print(
        f"  load average {result['load_average'][0]:.1f} / {result['load_average'][1]:.1f} / "
        f"{result['load_average'][2]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["ratio_peft_over_hand_median"] >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
