"""Pipelines, taken apart: device choice, the three steps by hand, throughput, embeddings.

A transformers ``pipeline`` is three steps glued together:

1. **tokenizer**: text -> token ids (+ attention mask, padding, truncation);
2. **model**: token ids -> numbers (hidden states, or logits with a head);
3. **post-processing**: numbers -> an answer (softmax + label name, or
   token vectors as Python lists).

:func:`dissect` runs the three steps by hand on a pipeline's own tokenizer
and model, and :func:`max_difference` checks that the result equals what the
pipeline returns.  The bundled MiniLM has no classifier head, so the offline
lesson uses ``"feature-extraction"`` (whose mean-pooled output *is* the
sentence embedding) and a ``"text-classification"`` pipeline on a model with
a fresh (or fine-tuned) head.

Device choice is explicit: in transformers 5 ``pipeline(..., device=0)`` on a
machine without a GPU silently runs on the CPU.  :func:`make_pipeline` asks
:func:`course.devices.choose_device` and returns its reason with the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course.devices import DeviceChoice, choose_device
from course.errors import CourseError
from course.memory import fits_in_memory
from course.validate import check_batch_size, check_max_length

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase

#: Pipeline tasks this module knows how to reproduce by hand, and the model head each needs.
TASKS = {"feature-extraction": "base", "text-classification": "sequence-classification"}

#: Label descriptions for zero-shot sentiment: a text gets the label whose descriptions it is closest to.
SENTIMENT_DESCRIPTIONS = {
    "negative": [
        "This is a negative review.",
        "I did not like it at all, it was bad and disappointing.",
    ],
    "positive": [
        "This is a positive review.",
        "I really liked it, it was good and I enjoyed it.",
    ],
}


# ------------------------------------------------------------------ device + pipeline


def _texts(texts: str | Sequence[str]) -> list[str]:
    """A list of strings from one string or a sequence of them (one clear error otherwise)."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not texts:
        raise CourseError("no texts given: pass a string or a non-empty list of strings")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise CourseError(f"texts must be strings, got {type(bad).__name__}: {str(bad)[:40]!r}")
    return texts


def make_pipeline(
    task: str = "feature-extraction",
    model: str | PreTrainedModel | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | None = "auto",
    strict: bool = False,
    **kwargs: Any,
) -> tuple[Pipeline, DeviceChoice]:
    """Build a pipeline on an explicitly chosen device; return it with the choice.

    ``model`` is a course name (default: the bundled MiniLM), a hub id, a
    folder written by ``save_pretrained``, or a loaded model.  For
    ``"text-classification"`` a model without a head gets a fresh, untrained
    2-label head (its answers are random until fine-tuned, notebook 03).
    """
    from transformers import pipeline

    from course.assets import load_model, load_tokenizer

    if task not in TASKS:
        raise CourseError(f"unknown task '{task}': this lesson covers {', '.join(TASKS)}")
    choice = choose_device(device, strict=strict)
    if isinstance(model, str) and Path(model).is_dir():  # a saved model: keep its own labels
        model, tokenizer = _load_saved(model, task), tokenizer or load_tokenizer(model)
    elif model is None or isinstance(model, str):
        name = model
        model = load_model(name, task=TASKS[task])
        tokenizer = tokenizer or load_tokenizer(name)
    elif tokenizer is None:
        tokenizer = load_tokenizer()
    pipe = pipeline(task, model=model, tokenizer=tokenizer, device=choice.device, **kwargs)
    return pipe, choice


def _load_saved(folder: str, task: str) -> PreTrainedModel:
    """A model from a ``save_pretrained`` folder, with the labels stored in its config."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = AutoModelForSequenceClassification if task == "text-classification" else AutoModel
    try:
        return loader.from_pretrained(folder).eval()
    except (OSError, ValueError) as error:
        raise CourseError(f"cannot load a model from {folder}: {str(error).splitlines()[0][:160]}") from None


# ----------------------------------------------------------------------- anatomy


@dataclass
class Anatomy:
    """The intermediate values of a pipeline call, reproduced step by step."""

    task: str
    texts: list[str]
    tokens: list[list[str]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    model_output: torch.Tensor
    result: list[Any]

    def describe(self) -> str:
        """One line per step (plus the first text's tokens), with the shapes that flow between them.

        Lines stay under about 100 characters, so a notebook does not wrap them mid-word.
        """
        post = (
            "mean over real tokens (mask) -> one vector per text\n"
            "   (the feature-extraction pipeline itself returns the token vectors)"
            if self.task == "feature-extraction"
            else "softmax over logits -> highest probability -> label name from config.id2label"
        )
        name = "last_hidden_state" if self.task == "feature-extraction" else "logits"
        return "\n".join(
            [
                f"1. tokenizer: {len(self.texts)} texts -> input_ids {tuple(self.input_ids.shape)}"
                " + attention_mask (0 = padding)",
                f"   first text: {' '.join(self.tokens[0])}",
                f"2. model: -> {name} {tuple(self.model_output.shape)}",
                f"3. post-processing: {post}",
            ]
        )


def tokenize_step(tokenizer: PreTrainedTokenizerBase, texts: str | Sequence[str], max_length: int | None = None) -> Any:
    """Step 1: pad to the longest text, cut at ``max_length``, return PyTorch tensors."""
    texts = _texts(texts)
    if max_length is not None:
        check_max_length(max_length)
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def tokens_of(tokenizer: PreTrainedTokenizerBase, encoded: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """The token strings of each text, padding removed (``[CLS] ... [SEP]``)."""
    tokens = []
    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True):
        tokens.append(tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist()))
    return tokens


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of each text, ignoring padding: ``(batch, seq, dim) -> (batch, dim)``.

    The mask is 1 for real tokens and 0 for padding; multiplying zeroes the
    padding vectors and dividing by the mask's sum counts only real tokens.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def postprocess_classification(logits: torch.Tensor, id2label: Mapping[int, str]) -> list[dict[str, Any]]:
    """Step 3 of text-classification: probabilities -> best label and its score per text."""
    probabilities = logits.float().softmax(dim=-1)
    scores, ids = probabilities.max(dim=-1)
    return [{"label": id2label[int(i)], "score": float(s)} for i, s in zip(ids, scores, strict=True)]


def dissect(pipe: Pipeline, texts: str | Sequence[str]) -> Anatomy:
    """Run a pipeline's tokenizer, model and post-processing by hand on ``texts``.

    ``result`` has the pipeline's own output format: per text, its token
    vectors (feature-extraction) or ``{"label", "score"}`` (text-classification).
    """
    import torch

    task = getattr(pipe, "task", "")
    if task not in TASKS:
        raise CourseError(f"cannot dissect a '{task}' pipeline: use one of {', '.join(TASKS)}")
    texts = _texts(texts)
    encoded = tokenize_step(pipe.tokenizer, texts)
    with torch.no_grad():
        output = pipe.model(**encoded.to(pipe.device))
    if task == "feature-extraction":
        hidden = output.last_hidden_state.cpu()
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        result = [hidden[i, : int(n)] for i, n in enumerate(lengths)]  # drop padding, as the pipeline does
        model_output = hidden
    else:
        model_output = output.logits.cpu()
        result = postprocess_classification(model_output, pipe.model.config.id2label)
    return Anatomy(
        task,
        texts,
        tokens_of(pipe.tokenizer, encoded),
        encoded["input_ids"].cpu(),
        encoded["attention_mask"].cpu(),
        model_output,
        result,
    )


def max_difference(pipeline_output: list[Any], anatomy: Anatomy) -> float:
    """Largest absolute difference between a pipeline's output and the by-hand result.

    For text-classification the labels must also agree (else ``inf``).
    """
    import torch

    if len(pipeline_output) != len(anatomy.result):
        raise CourseError(f"{len(pipeline_output)} pipeline outputs vs {len(anatomy.result)} by-hand results")
    worst = 0.0
    for theirs, ours in zip(pipeline_output, anatomy.result, strict=True):
        if anatomy.task == "feature-extraction":
            theirs = torch.as_tensor(theirs, dtype=torch.float32, device=ours.device).reshape(-1, ours.shape[-1])
            if theirs.shape != ours.shape:
                return float("inf")
            worst = max(worst, (theirs - ours.float()).abs().max().item())
        else:
            if theirs["label"] != ours["label"]:
                return float("inf")
            worst = max(worst, abs(theirs["score"] - ours["score"]))
    return worst


# -------------------------------------------------------------------- throughput


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures the work and not its launch."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput_sweep(
    pipe: Pipeline, texts: Sequence[str], batch_sizes: Iterable[int] = (1, 2, 4, 8, 16, 32), repeats: int = 3
) -> list[dict[str, Any]]:
    """Sentences per second of ``pipe(texts, batch_size=b)`` for each ``b``, measured ``repeats`` times.

    Each size gets one warm-up call on a few texts first, then ``repeats``
    timed calls over all ``texts``.  A row holds the median time
    (``seconds``, ``sentences_per_s``), the fastest and slowest repeat
    (``best_per_s``, ``worst_per_s``: the spread shows how much one number
    can be trusted on a shared machine), every time (``times``), and the
    share of padding tokens the batches carried (``padding``).
    """
    import statistics

    texts = _texts(texts)
    sizes = [check_batch_size(b) for b in batch_sizes]
    if not sizes:
        raise CourseError("batch_sizes is empty: give at least one batch size, e.g. [1, 8, 32]")
    check_batch_size(repeats, "repeats")
    extra = {"return_tensors": True} if pipe.task == "feature-extraction" else {}
    rows = []
    for size in sizes:
        with fits_in_memory(f"batch size {size}", pipe.device):
            pipe(texts[: min(size, len(texts))], batch_size=size, **extra)  # warm-up
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                pipe(texts, batch_size=size, **extra)
                _synchronize(pipe.device)
                times.append(time.perf_counter() - started)
        median = statistics.median(times)
        rows.append(
            {
                "batch_size": size,
                "seconds": median,
                "sentences_per_s": len(texts) / median,
                "best_per_s": len(texts) / min(times),
                "worst_per_s": len(texts) / max(times),
                "times": times,
                "padding": padding_fraction(pipe.tokenizer, texts, size),
            }
        )
    return rows


def padding_fraction(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int) -> float:
    """Share of the tokens computed that are padding, when ``texts`` go through in batches of ``batch_size``.

    A pipeline keeps the texts in order and pads every batch to its longest
    text, so a batch of 32 is as long as the longest of 32 texts: the bigger
    the batch, the more of the work is spent on padding.
    """
    texts = _texts(texts)
    check_batch_size(batch_size)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    computed = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start : start + batch_size]
        computed += len(chunk) * max(chunk)
    return 1 - sum(lengths) / computed


def plot_throughput(rows: list[dict[str, Any]], title: str = "Pipeline throughput") -> Figure:
    """Sentences per second against batch size (log-scaled x): the median, with bars from slowest to fastest."""
    import matplotlib.pyplot as plt

    sizes = [r["batch_size"] for r in rows]
    medians = [r["sentences_per_s"] for r in rows]
    low = [m - r.get("worst_per_s", m) for m, r in zip(medians, rows, strict=True)]
    high = [r.get("best_per_s", m) - m for m, r in zip(medians, rows, strict=True)]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.errorbar(sizes, medians, yerr=[low, high], marker="o", capsize=4, label="median (bars: slowest..fastest)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("sentences / s")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------- embeddings


class Encoder:
    """Sentence embeddings from a base model: tokenize, run, mean-pool, normalise.

    For all-MiniLM-L6-v2 this reproduces sentence-transformers' embedding.
    Normalised vectors make cosine similarity a plain dot product.
    """

    def __init__(
        self,
        model: PreTrainedModel | str | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | None = "auto",
    ) -> None:
        from course.assets import load_model, load_tokenizer

        self.choice = choose_device(device)
        self.model = load_model(model) if model is None or isinstance(model, str) else model
        self.tokenizer = tokenizer or load_tokenizer(model if isinstance(model, str) else None)
        self.model.to(self.choice.device).eval()

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.choice.device

    def embed(
        self, texts: str | Sequence[str], batch_size: int = 32, max_length: int = 256, normalize: bool = True
    ) -> torch.Tensor:
        """One vector per text, shape ``(len(texts), hidden)``, on the CPU."""
        import torch

        texts = _texts(texts)
        check_batch_size(batch_size)
        check_max_length(max_length, self.model)
        chunks = []
        for start in range(0, len(texts), batch_size):
            encoded = tokenize_step(self.tokenizer, texts[start : start + batch_size], max_length).to(self.device)
            with torch.no_grad(), fits_in_memory(f"batch size {batch_size}", self.device):
                hidden = self.model(**encoded).last_hidden_state
            chunks.append(mean_pool(hidden, encoded["attention_mask"]).float().cpu())
        vectors = torch.cat(chunks)
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All pairwise cosine similarities: ``(n, d) x (m, d) -> (n, m)``."""
    import torch

    if a.ndim == 1:
        a = a.unsqueeze(0)
    if b.ndim == 1:
        b = b.unsqueeze(0)
    if a.shape[-1] != b.shape[-1]:
        raise CourseError(f"vectors of different sizes: {a.shape[-1]} vs {b.shape[-1]}")
    return torch.nn.functional.normalize(a.float(), dim=-1) @ torch.nn.functional.normalize(b.float(), dim=-1).T


def semantic_search(
    query_embeddings: torch.Tensor, corpus_embeddings: torch.Tensor, top_k: int = 3
) -> list[list[tuple[int, float]]]:
    """For each query, the ``top_k`` closest corpus entries as ``(index, cosine)`` pairs, best first."""
    check_batch_size(top_k, "top_k")
    scores = cosine_similarity(query_embeddings, corpus_embeddings)
    best = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return [
        [(int(i), float(s)) for i, s in zip(ids, values, strict=True)]
        for ids, values in zip(best.indices, best.values, strict=True)
    ]


def zero_shot(
    encoder: Encoder,
    texts: str | Sequence[str],
    descriptions: Mapping[str, str | Sequence[str]] = SENTIMENT_DESCRIPTIONS,
) -> list[dict[str, Any]]:
    """Label texts by similarity to label descriptions, without any training.

    Each label is the normalised mean of its descriptions' embeddings; a text
    gets the label with the highest cosine similarity.  Returns, per text,
    ``{"label": best, "scores": {label: cosine}}``.
    """
    import torch

    if not descriptions:
        raise CourseError("descriptions is empty: give at least two labels with a description each")
    labels = list(descriptions)
    prototypes = []
    for label in labels:
        phrases = _texts(descriptions[label])
        prototypes.append(encoder.embed(phrases).mean(dim=0))
    prototypes = torch.nn.functional.normalize(torch.stack(prototypes), dim=-1)
    scores = cosine_similarity(encoder.embed(texts), prototypes)
    return [
        {"label": labels[int(row.argmax())], "scores": dict(zip(labels, row.tolist(), strict=True))} for row in scores
    ]
