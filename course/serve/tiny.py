"""Tiny, randomly initialised models saved like real ones: for the smoke lesson and the tests.

Serving is plumbing: tokenizer in, tensors through, text out.  The plumbing
does not care whether the weights are trained, so the offline lesson and the
tests use a 2-layer GPT-2 (and a 2-layer BART) written with
``save_pretrained``, exactly the folder layout lesson 05's trained GPT-2 has.
Their output is gibberish; swap in a trained folder with ``--model generate=DIR``.

The tokenizer is a real byte-level BPE (GPT-2's scheme) trained in a second
on the bundled reviews with the 🤗 ``tokenizers`` library.
"""

from __future__ import annotations

from pathlib import Path

from course.errors import CourseError

#: Special tokens of the tiny tokenizer.
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def _tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained on the bundled reviews, as a transformers fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from course.assets import bundled_rows

    texts = [row["text"] for split in bundled_rows().values() for row in split]
    bpe = ByteLevelBPETokenizer()
    # No progress bar: the Rust trainer draws it on the process's own stdout, outside the notebook.
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[PAD, BOS, EOS], show_progress=False
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def _writable(folder: str | Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CourseError(f"cannot create {folder}: {error.strerror or error}") from None
    return folder


def save_tiny_causal_lm(folder: str | Path, *, vocab_size: int = 512, layers: int = 2, seed: int = 0) -> Path:
    """A random 2-layer GPT2LMHeadModel (:func:`course.tiny.tiny_gpt2`) + its tokenizer in ``folder``."""
    from course.tiny import tiny_gpt2

    folder = _writable(folder)
    tokenizer = _tokenizer(vocab_size)
    tiny_gpt2(tokenizer, layers=layers, heads=2, hidden=64, positions=256, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_seq2seq(folder: str | Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """A random 2-layer BartForConditionalGeneration + its tokenizer: the abstractive /summarize path."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    folder = _writable(folder)
    tokenizer = _tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    BartForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_fresh_classifier(folder: str | Path) -> Path:
    """The bundled MiniLM with a fresh, untrained 2-label head, saved like lesson 03's output (tests)."""
    from course.assets import load_model, load_tokenizer
    from course.train import save_model

    return save_model(load_model(task="sequence-classification"), load_tokenizer(), _writable(folder))
