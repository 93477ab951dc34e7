"""Lesson 05: text generation with a small GPT-2 trained here, offline, in minutes.

Read in this order:

* :mod:`course.generate.corpus`     Jane Austen's novels (bundled), packed into training blocks
* :mod:`course.generate.tokenizer`  a byte-level BPE trained on them with 🤗 ``tokenizers``
* :mod:`course.generate.model`      ``GPT2LMHeadModel`` from a ``GPT2Config``, trained with
  lesson 03's :func:`course.train.fit`; perplexity against a unigram baseline; save / load
* :mod:`course.generate.decoding`   greedy, temperature, top-k, top-p, repetition penalty and beam
  search written by hand, checked token for token against ``model.generate()``
* :mod:`course.generate.kvcache`    time per new token with and without the KV cache, and its memory

Typical use (notebook 05)::

    from course.generate import DecoderConfig, train_decoder, save_decoder, generate_text
    run = train_decoder(DecoderConfig(steps=300))
    print(run.scores)                    # val_perplexity, unigram_perplexity, untrained_perplexity
    folder, _ = save_decoder(run)        # default_decoder_dir(): what lesson 06 serves
    print(generate_text(run.model, run.tokenizer, "It is a truth", do_sample=True, top_p=0.9, seed=0))

Nothing here imports torch at module level: ``import course.generate`` is instant.
"""

from course.generate.corpus import block_loader, corpus_stats, load_corpus, pack_blocks, token_stream
from course.generate.decoding import (
    ContextWarning,
    beam_search,
    check_sampling,
    generate_text,
    generation_config,
    greedy_decode,
    sample_decode,
)
from course.generate.model import (
    DecoderConfig,
    DecoderRun,
    build_decoder,
    default_decoder_dir,
    load_decoder,
    perplexity,
    save_decoder,
    set_cpu_threads,
    train_decoder,
    unigram_perplexity,
)
from course.generate.tokenizer import train_tokenizer

__all__ = [
    "ContextWarning",
    "DecoderConfig",
    "DecoderRun",
    "beam_search",
    "block_loader",
    "build_decoder",
    "check_sampling",
    "corpus_stats",
    "default_decoder_dir",
    "generate_text",
    "generation_config",
    "greedy_decode",
    "load_corpus",
    "load_decoder",
    "pack_blocks",
    "perplexity",
    "sample_decode",
    "save_decoder",
    "set_cpu_threads",
    "token_stream",
    "train_decoder",
    "train_tokenizer",
    "unigram_perplexity",
]
