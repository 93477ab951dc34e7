"""A byte-level BPE tokenizer trained on the corpus, in seconds, with 🤗 ``tokenizers``.

Why train one rather than reuse the bundled MiniLM's WordPiece?

* WordPiece from an *uncased* BERT lowercases everything and strips accents:
  a decoder trained on it could never write "Emma" or "Mr. Darcy", and
  decoding its ``##`` pieces back to text does not give the original
  spacing.  A generator must be able to write back exactly what it read.
* **Byte-level** BPE starts from the 256 byte values, so *every* string is
  encodable (no unknown token, ever) and ``decode(encode(text)) == text``.
  It then merges the most frequent adjacent pairs, again and again, until the
  vocabulary has ``vocab_size`` entries: frequent words become one token
  (``" Elizabeth"``), rare ones a few pieces.  GPT-2 uses exactly this scheme
  with 50 257 tokens; a 4-8 k vocabulary suits 4 MB of text and keeps the
  embedding table (vocab x hidden) small next to the transformer layers.
* Trained on *this* corpus, the tokens fit Austen's English: fewer tokens per
  sentence means more text per 256-token context and per training second.

The leading space is part of a token (``" the"`` vs ``"the"``); the
byte-level scheme shows it as ``Ġ`` in raw token strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from course.errors import CourseError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

#: GPT-2's end-of-text token: separates paragraphs in training and ends a generation.
EOS = "<|endoftext|>"
VOCAB_RANGE = (300, 50_000)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers tokenizer.

    The result behaves like GPT-2's tokenizer: ``<|endoftext|>`` is its
    bos/eos/pad token, no special tokens are added around a text, and
    ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or not (VOCAB_RANGE[0] <= vocab_size <= VOCAB_RANGE[1])
    ):
        raise CourseError(
            f"vocab_size must be an integer from {VOCAB_RANGE[0]} to {VOCAB_RANGE[1]}, got {vocab_size!r}"
        )
    texts = list(texts)
    if not texts:
        raise CourseError("no texts to train the tokenizer on")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split + bytes
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None, model_max_length=1024
    )


def tokens_per_word(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> float:
    """Average tokens per whitespace-separated word: the tokenizer's fit to the text (lower is better)."""
    texts = list(texts)
    words = sum(len(text.split()) for text in texts)
    if words == 0:
        raise CourseError("tokens_per_word() needs at least one word")
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    return tokens / words
