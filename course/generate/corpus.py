"""The generation corpus: Jane Austen's six novels, shipped with the package.

A decoder learns by predicting the next token of running text, so it needs
*prose*, and a lot more of it than a classifier needs labelled examples:
about 4 million characters here (see ``course/data/austen/DATA_CARD.md``:
Project Gutenberg texts, public domain, taken from Debian's
``r-cran-janeaustenr`` package).  Each row is one paragraph::

    {"book": "Emma", "chapter": 10, "text": "Though now the middle of December, ..."}

The split is fixed and by whole chapters (every twentieth chapter of each
novel is validation), so no validation paragraph has its neighbours in the
training text.

For training, paragraphs are *packed*: tokenized, joined with an
end-of-text token between them, and cut into equal blocks of
``block_size`` tokens.  Every position of every block is then a training
example (predict token ``t+1`` from tokens ``<= t``) and no compute is
spent on padding::

    para 1 tokens <eot> para 2 tokens <eot> para 3 ...   ->   [block 0][block 1][block 2] ...
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: The bundled corpus: course/data/austen/{train,validation}.jsonl and its data card.
CORPUS_DIR = Path(__file__).parents[1] / "data" / "austen"
SPLITS = ("train", "validation")
BOOKS = ("Emma", "Mansfield Park", "Northanger Abbey", "Persuasion", "Pride and Prejudice", "Sense and Sensibility")


@cache
def _rows(split: str) -> tuple[dict[str, Any], ...]:
    """Every row of one split, read once per process."""
    path = CORPUS_DIR / f"{split}.jsonl"
    if not path.is_file():
        raise CourseError(f"the bundled corpus lacks {path}: reinstall the course package")
    with open(path, encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


def load_corpus(split: str = "train", max_chars: int | None = None) -> list[str]:
    """The paragraphs of one split, in book order; ``max_chars`` keeps only the first ones up to that size.

    ``max_chars`` is for quick runs and tests: the smoke profile trains on all
    of it anyway, since a run sees only part of the text.
    """
    if split not in SPLITS:
        raise CourseError(f"unknown corpus split '{split}': use {' or '.join(SPLITS)}")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise CourseError(f"max_chars must be a positive number of characters, got {max_chars!r}")
    texts, size = [], 0
    for row in _rows(split):
        if max_chars is not None and size >= max_chars:
            break
        texts.append(row["text"])
        size += len(row["text"])
    return texts


def corpus_rows(split: str = "train") -> list[dict[str, Any]]:
    """The rows of one split with their ``book`` and ``chapter`` (copies: safe to modify)."""
    if split not in SPLITS:
        raise CourseError(f"unknown corpus split '{split}': use {' or '.join(SPLITS)}")
    return [dict(row) for row in _rows(split)]


def corpus_stats() -> dict[str, dict[str, int]]:
    """Paragraphs, characters and words per split: what the data card reports."""
    stats = {}
    for split in SPLITS:
        texts = [row["text"] for row in _rows(split)]
        stats[split] = {
            "paragraphs": len(texts),
            "characters": sum(len(t) for t in texts),
            "words": sum(len(t.split()) for t in texts),
        }
    return stats


def token_stream(texts: list[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """All ``texts`` as one long 1-D tensor of token ids, an end-of-text token after each."""
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise CourseError("the tokenizer has no end-of-text token (eos_token): train it with train_tokenizer()")
    if not texts:
        raise CourseError("no texts to tokenize: the corpus split is empty")
    ids: list[int] = []
    for encoded in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def pack_blocks(stream: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``(blocks, block_size)`` rows; the ragged tail is dropped."""
    if not isinstance(block_size, int) or block_size < 2:
        raise CourseError(f"block_size must be an integer >= 2 (a block predicts its next tokens), got {block_size!r}")
    blocks = stream.numel() // block_size
    if blocks == 0:
        raise CourseError(
            f"the text has {stream.numel()} tokens, fewer than one block of {block_size}: "
            "use more text or a smaller block"
        )
    return stream[: blocks * block_size].view(blocks, block_size)  # (blocks, block_size)


class BlockDataset:
    """Packed blocks as a map-style dataset of ``{"input_ids", "attention_mask", "labels"}`` for a causal LM.

    ``labels`` equal ``input_ids``: Hugging Face's causal-LM models shift them
    by one position inside ``forward`` (token ``t``'s logits are scored against
    token ``t+1``), so the data needs no shifting of its own.  The attention
    mask is all ones: packed blocks hold no padding (the end-of-text token,
    which GPT-2 also uses as its padding id, is real text here).
    """

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import torch

        row = self.blocks[index]
        return {"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row}


def block_loader(
    blocks: torch.Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0
) -> torch.utils.data.DataLoader:
    """A DataLoader over packed blocks, reshuffled each epoch from ``seed`` (what ``course.train.fit`` eats)."""
    import torch

    from course.train.data import check_batch_size

    check_batch_size(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        BlockDataset(blocks), batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=shuffle
    )
