"""Train the lesson 05 decoder and save it: ``python -m course.generate [--out DIR] [--steps N] [--device D]``.

For lesson 06 (serving) without running notebook 05 first.  Bad settings
exit 2 with one line, like the ``course`` command.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from course.errors import CourseError
    from course.generate.model import DecoderConfig, default_decoder_dir

    parser = argparse.ArgumentParser(prog="python -m course.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"folder to save to (default: {default_decoder_dir()})")
    parser.add_argument("--steps", type=int, default=DecoderConfig.steps, help="optimizer steps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--force", action="store_true", help="replace a decoder with a lower validation perplexity")
    args = parser.parse_args(argv)
    try:
        from course.devices import choose_device
        from course.generate.model import save_decoder, train_decoder

        choice = choose_device(args.device)
        run = train_decoder(DecoderConfig(steps=args.steps), device=choice.device)
        folder, saved = save_decoder(run, args.out, keep_better=not args.force)
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scores = run.scores
    print(
        f"validation perplexity {scores['val_perplexity']:.1f} (unigram {scores['unigram_perplexity']:.1f}, "
        f"untrained {scores['untrained_perplexity']:.0f})"
    )
    print(f"saved to {folder}" if saved else f"kept the better decoder in {folder} (--force replaces it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
