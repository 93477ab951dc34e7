"""From a labelled dataset to batches a model can eat: check, tokenize, pad.

Three ideas live here:

* **check early**: a dataset without a ``text`` column, a label the model has
  no output for, a ``max_length`` longer than the model's position table or a
  batch size of 0 each fail much later with a deep traceback (an
  ``IndexError`` inside an embedding, a CUDA "device-side assert").  The
  ``check_*`` functions catch them first and raise one
  :class:`~course.errors.CourseError` line that says what to change.
* **tokenize once**: every text becomes token ids *without* padding, cut at
  ``max_length`` (truncation).
* **pad per batch** (dynamic padding): :class:`~transformers.DataCollatorWithPadding`
  pads each batch only to its own longest sentence.  Padding everything to
  ``max_length`` instead (``padding="max_length"``) wastes compute on pad
  tokens; notebook 03 measures how much.

The loaders use a :class:`~torch.utils.data.distributed.DistributedSampler`
even in a single process, so one process with batch 16 sees exactly the
samples that two processes with batch 8 see together: that is what lets a
test compare a 2-process run with a 1-process run step by step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from course.errors import CourseError
from course.validate import check_batch_size, check_max_length
from course.validate import max_positions as max_positions  # re-exported: it lived here before

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: ``padding`` choices: pad per batch, or every sequence to ``max_length``.
PADDINGS = ("dynamic", "max_length")


# ----------------------------------------------------------------------- checks


def rows_of(dataset: Any) -> list[dict[str, Any]] | Any:
    """Accept a ``datasets.Dataset`` or a list of dicts; return something indexable by column.

    ``datasets.Dataset`` supports ``dataset["text"]``; a list of dicts is
    returned as is and read row by row.
    """
    if isinstance(dataset, Mapping):
        raise CourseError(
            f"expected one split (a Dataset or a list of dicts), got a dict with keys {sorted(dataset)[:5]}: "
            "pick a split, e.g. data['train']"
        )
    return dataset


def column(dataset: Any, name: str) -> list[Any]:
    """One column of a ``datasets.Dataset`` or of a list of dict rows."""
    if hasattr(dataset, "column_names"):
        return list(dataset[name])
    return [row[name] for row in dataset]


def column_names(dataset: Any) -> list[str]:
    """Column names of a ``datasets.Dataset`` or of the first dict in a list."""
    if hasattr(dataset, "column_names"):
        return list(dataset.column_names)
    if isinstance(dataset, Sequence) and dataset and isinstance(dataset[0], Mapping):
        return list(dataset[0])
    if isinstance(dataset, Sequence) and not dataset:
        raise CourseError("the dataset is empty: it needs at least one labelled row")
    raise CourseError(f"expected a datasets.Dataset or a list of dicts, got {type(dataset).__name__}")


def check_columns(dataset: Any, text_column: str = "text", label_column: str = "label") -> None:
    """Raise a one-line CourseError unless the dataset has the text and label columns."""
    dataset = rows_of(dataset)
    names = column_names(dataset)
    if len(dataset) == 0:
        raise CourseError("the dataset is empty: it needs at least one labelled row")
    missing = [name for name in (text_column, label_column) if name not in names]
    if missing:
        hint = ""
        others = [name for name in names if name not in (text_column, label_column)]
        if len(missing) == 1 and others:
            hint = f"; rename one, e.g. dataset.rename_column('{others[0]}', '{missing[0]}')"
        raise CourseError(
            f"the dataset has no {' or '.join(repr(m) for m in missing)} column "
            f"(it has: {', '.join(names) or 'none'}){hint}"
        )
    if not hasattr(dataset, "column_names"):  # a list of dicts: every row must have both keys
        for index, row in enumerate(dataset):
            if text_column not in row or label_column not in row:
                raise CourseError(f"row {index} lacks '{text_column}' or '{label_column}': {str(row)[:80]}")


def check_labels(labels: Sequence[Any], num_labels: int) -> None:
    """Labels must be integers in ``0 .. num_labels-1``: the rows of the classifier's output.

    A label of 2 for a 2-label model would otherwise end in an ``IndexError``
    inside the loss on the CPU, or an unreadable "device-side assert" on a GPU.
    """
    for index, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int):
            if hasattr(label, "item") and getattr(label, "ndim", 1) == 0:  # numpy / torch scalar
                label = label.item()
            if isinstance(label, bool) or not isinstance(label, int):
                raise CourseError(
                    f"label {label!r} in row {index} is not an integer class id: map names to ids first "
                    f"(0..{num_labels - 1})"
                )
        if not 0 <= label < num_labels:
            raise CourseError(
                f"label {label} in row {index} is out of range: the model has {num_labels} labels "
                f"(0..{num_labels - 1}); fix the data or load the model with num_labels set to the number of classes"
            )


def check_padding(padding: str) -> str:
    """``padding`` is one of :data:`PADDINGS`."""
    if padding not in PADDINGS:
        raise CourseError(f"unknown padding '{padding}': use {' or '.join(PADDINGS)}")
    return padding


# ------------------------------------------------------------------- tokenizing


class TokenizedDataset:
    """Token ids and labels, one dict per example: what a DataLoader and the Trainer both accept.

    Each item is ``{"input_ids": [...], "attention_mask": [...], "labels": int}``
    (plus ``token_type_ids`` for BERT), not yet padded.
    """

    def __init__(self, encodings: Mapping[str, list[list[int]]], labels: Sequence[int]) -> None:
        self.encodings = dict(encodings)
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.labels[index]
        return item


def tokenize(
    dataset: Any,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    padding: str = "dynamic",
    num_labels: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> TokenizedDataset:
    """Check a labelled split and turn its texts into token ids, truncated at ``max_length``.

    ``padding="dynamic"`` leaves sequences unpadded (the collator pads each
    batch); ``"max_length"`` pads every one to ``max_length`` now.
    """
    check_columns(dataset, text_column, label_column)
    check_padding(padding)
    check_max_length(max_length)
    labels = column(dataset, label_column)
    if num_labels is not None:
        check_labels(labels, num_labels)
    texts = column(dataset, text_column)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise CourseError(f"row {bad}: '{text_column}' must be a string, got {type(texts[bad]).__name__}")
    encodings = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding="max_length" if padding == "max_length" else False,
    )
    return TokenizedDataset(encodings, [int(label) for label in labels])


def collator(tokenizer: PreTrainedTokenizerBase) -> Any:
    """Pads each batch to its longest sequence and turns lists into tensors."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


def make_loader(
    tokenized: TokenizedDataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> torch.utils.data.DataLoader:
    """A DataLoader of padded batches; with ``world_size > 1`` each rank gets its share.

    The :class:`DistributedSampler` shuffles with ``seed`` (and the epoch,
    see ``sampler.set_epoch``), then hands rank ``r`` every
    ``world_size``-th index starting at ``r``.
    """
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    check_batch_size(batch_size)
    sampler = DistributedSampler(tokenized, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    return DataLoader(
        tokenized,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator(tokenizer),
        pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
    )


def make_loaders(
    data: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    *,
    batch_size: int,
    max_length: int,
    eval_batch_size: int = 64,
    padding: str = "dynamic",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, torch.utils.data.DataLoader]:
    """Check and tokenize every split of ``data``; shuffle only ``train``.

    ``data`` is a ``DatasetDict`` (or a dict of lists of rows) such as
    :func:`course.assets.load_dataset` returns.  Checks run against ``model``:
    its number of labels and its number of positions.
    """
    if not isinstance(data, Mapping) or "train" not in data:
        raise CourseError("expected a dataset with a 'train' split, e.g. course.assets.load_dataset()")
    check_batch_size(batch_size)
    check_batch_size(eval_batch_size, "eval_batch_size")
    check_max_length(max_length, model)
    num_labels = getattr(model.config, "num_labels", None)
    loaders = {}
    for split, rows in data.items():
        tokenized = tokenize(rows, tokenizer, max_length, padding=padding, num_labels=num_labels)
        is_train = split == "train"
        loaders[split] = make_loader(
            tokenized,
            tokenizer,
            batch_size if is_train else eval_batch_size,
            shuffle=is_train,
            seed=seed,
            rank=rank if is_train else 0,
            world_size=world_size if is_train else 1,
        )
    return loaders
