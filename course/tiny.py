"""One tiny decoder (and a few tiny models of other families), built the same way everywhere they are needed.

Lesson 01 shows the causal mask on a decoder; the tests and
``bench/bench_explorer.py`` check that :mod:`course.attention` recomputes a
decoder exactly.  None of them can download GPT-2, so all of them build this
one: a GPT-2 *architecture* with random weights, two layers of four heads
over 64 features, reading the bundled MiniLM tokenizer's vocabulary.  Its
attention patterns mean nothing (nobody trained it), but its masking, its
fused ``c_attn`` projection and its shapes are exactly GPT-2's.

The tests and the benchmark also check :mod:`course.attention` on other
families: :func:`tiny_model` builds each of :data:`TINY_FAMILIES` from a small
config with random weights (2-3 layers, 4 heads, 64 features).

Keeping one factory means one place to change when transformers renames an
argument, and the lesson, the tests and the benchmark measure the same model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type hints only: `import course.tiny` must not import torch
    from transformers import GPT2LMHeadModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

#: family -> (transformers config class, model class, sizes), small enough to run in milliseconds.
#: Classes are named, not imported, so that `import course.tiny` stays free of transformers.
_SMALL_CONFIGS: dict[str, tuple[str, str, dict[str, int]]] = {
    "opt": (  # a second decoder family, with q_proj/k_proj/v_proj
        "OPTConfig",
        "OPTForCausalLM",
        dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, ffn_dim=128, word_embed_proj_dim=64),
    ),
    "roberta": (
        "RobertaConfig",
        "RobertaModel",
        dict(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=64,
            intermediate_size=128,
            max_position_embeddings=130,
        ),
    ),
    "distilbert": ("DistilBertConfig", "DistilBertModel", dict(n_layers=2, n_heads=4, dim=64, hidden_dim=128)),
    "electra": (
        "ElectraConfig",
        "ElectraModel",
        dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, embedding_size=32, intermediate_size=128),
    ),
    "albert": (  # one set of layer weights shared by 3 layers
        "AlbertConfig",
        "AlbertModel",
        dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=64, embedding_size=32, intermediate_size=128),
    ),
    "bart": (  # encoder-decoder: course.attention reads its encoder's self-attention
        "BartConfig",
        "BartModel",
        dict(
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            d_model=64,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
        ),
    ),
}

#: The families :func:`tiny_model` builds: GPT-2 (:func:`tiny_gpt2`, the decoder lesson 01 shows) and the small configs.
TINY_FAMILIES: tuple[str, ...] = ("gpt2", *_SMALL_CONFIGS)


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


def tiny_random(
    config_class: type[PretrainedConfig],
    model_class: type[PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int = 0,
    **sizes,
) -> PreTrainedModel:
    """``model_class(config_class(**sizes))`` with random weights (``seed``), in eval mode, on ``tokenizer``'s vocab."""
    import torch

    torch.manual_seed(seed)
    return model_class(config_class(vocab_size=tokenizer.vocab_size, **sizes)).eval()


def tiny_model(family: str, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> PreTrainedModel:
    """The tiny random model of ``family`` (one of :data:`TINY_FAMILIES`), reading ``tokenizer``'s vocabulary.

    ``"gpt2"`` is :func:`tiny_gpt2`; the others take their padding id from ``tokenizer``.
    """
    if family not in TINY_FAMILIES:
        from course.errors import CourseError

        raise CourseError(f"no tiny model of {family!r}: the families are {', '.join(TINY_FAMILIES)}")
    if family == "gpt2":
        return tiny_gpt2(tokenizer, seed=seed)
    import transformers

    config_name, model_name, sizes = _SMALL_CONFIGS[family]
    config_class, model_class = getattr(transformers, config_name), getattr(transformers, model_name)
    return tiny_random(config_class, model_class, tokenizer, seed=seed, pad_token_id=tokenizer.pad_token_id, **sizes)
