"""One tiny decoder, built the same way everywhere it is needed.

Lesson 01 shows the causal mask on a decoder; the tests and
``bench/bench_explorer.py`` check that :mod:`course.attention` recomputes a
decoder exactly.  None of them can download GPT-2, so all of them build this
one: a GPT-2 *architecture* with random weights, two layers of four heads
over 64 features, reading the bundled MiniLM tokenizer's vocabulary.  Its
attention patterns mean nothing (nobody trained it), but its masking, its
fused ``c_attn`` projection and its shapes are exactly GPT-2's.

Keeping one factory means one place to change when transformers renames an
argument, and the lesson, the tests and the benchmark measure the same model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type hints only: `import course.tiny` must not import torch
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase


def tiny_gpt2(
    tokenizer: PreTrainedTokenizerBase,
    *,
    layers: int = 2,
    heads: int = 4,
    hidden: int = 64,
    positions: int = 128,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (``layers`` x ``heads``, ``hidden`` features) in eval mode, on the CPU.

    The vocabulary, and the begin/end-of-text and padding ids, come from
    ``tokenizer``: its own BOS/EOS when it has them (a GPT-2 style BPE), else
    ``[CLS]`` and ``[SEP]`` (the bundled MiniLM one), so texts tokenized for
    the encoder feed the decoder too.  ``seed`` makes the weights, and so every printed number, repeatable.
    ``positions`` is the longest input it reads.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=layers,
        n_head=heads,
        n_embd=hidden,
        n_positions=positions,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
        eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()
