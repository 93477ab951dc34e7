"""One model per endpoint, each a plain function of a *batch*: ``model(items) -> results``.

The server never calls a model with one request: :class:`~course.serve.batcher.MicroBatcher`
hands it lists.  Each class below loads its model once, puts it on the chosen
device in eval mode, and answers a whole batch with ONE forward pass::

    Classifier     ["great film", "awful"]        -> [{"label": "positive", "score": 0.97}, ...]
    Embedder       ["great film", "awful"]        -> [[0.01, -0.07, ...], ...]   (384 floats each)
    Summarizer     [("doc ...", 2), ...]          -> ["the two most central sentences", ...]
    Generator      [GenerateRequest, ...]         -> ["generated text", ...]   (one by one: see below)

* /classify loads lesson 03's saved folder (``save_model``) or any
  sequence-classification model.  Without ``--model`` it fits a head on the
  frozen bundled MiniLM once (:func:`default_classifier`, a linear probe) and caches it.
* /summarize is *extractive* offline: the sentences closest to the text's mean
  MiniLM embedding, in their original order.  Given an encoder-decoder model
  (e.g. ``sshleifer/distilbart-cnn-12-6`` in the GPU image's cache) it is
  abstractive: ``model.generate``.
* /generate takes a causal LM folder (lesson 05's GPT-2, ``save_pretrained``).
  Requests carry their own temperature and top_p, so they run one after the
  other inside a batch; streaming goes token by token through
  ``transformers.TextIteratorStreamer``.

Everything runs under ``torch.inference_mode()``: no autograd bookkeeping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from threading import Thread
from typing import TYPE_CHECKING, Any

from course.devices import choose_device
from course.errors import CourseError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

#: Tasks the server knows, in the order they appear on the OpenAPI page.
TASKS = ("classify", "embed", "summarize", "generate")


def quiet_transformers() -> None:
    """Keep loading bars and the "newly initialized" LOAD REPORT out of a server's log and a lesson's output.

    A fresh classifier head is *meant* to be new (it is trained right after),
    so that report says nothing a student must act on; real errors still raise.
    """
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _load(loader: Any, source: str, what: str) -> Any:
    """``loader.from_pretrained(source)`` for a folder or a registry/hub name, with one-line errors."""
    from course.assets import _from_pretrained

    try:
        return _from_pretrained(loader, source)
    except CourseError:
        raise
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise CourseError(f"cannot load {what} from {source}: {first}") from None


def _looks_like_folder(model: str) -> bool:
    """``./x``, ``/x``, ``~/x``, ``a/b/c``, or ``a/b`` where ``a/`` exists: a folder, not a hub id."""
    path = Path(model).expanduser()
    return (
        model.startswith((".", "/", "~"))
        or model.count("/") >= 2
        or (path.parent != Path(".") and path.parent.is_dir())
    )


def _check_folder(model: str | None, what: str) -> None:
    """A folder-looking ``--model`` must exist (else the hub would be asked for a path)."""
    if model and _looks_like_folder(model) and not Path(model).expanduser().is_dir():
        raise CourseError(f"{what} folder {model} does not exist: give a folder written by save_pretrained")


class _Base:
    """Device choice and the ``inference_mode`` call shared by every task."""

    task = ""

    def __init__(self, device: str | None) -> None:
        self.choice = choose_device(device)
        self.device = self.choice.device
        self.description = ""

    def info(self) -> dict[str, str]:
        """What /healthz reports for this task."""
        return {"model": self.description, "device": str(self.device)}


# ---------------------------------------------------------------------- classify


class Classifier(_Base):
    """Sequence classification: texts -> ``{"label", "score"}`` with the model's own label names."""

    task = "classify"

    def __init__(self, model: str | None = None, device: str | None = "auto", max_length: int = 256) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        super().__init__(device)
        _check_folder(model, "classifier")
        source = str(Path(model).expanduser()) if model else str(default_classifier())
        self.model = _load(AutoModelForSequenceClassification, source, "a classifier").to(self.device).eval()
        self.tokenizer = _load(AutoTokenizer, source, "a tokenizer")
        self.max_length = max_length
        self.description = source

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        """One padded forward pass for the whole batch; softmax; best label per text."""
        import torch

        from course.pipelines import postprocess_classification

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**encoded.to(self.device)).logits  # (batch, num_labels)
        return postprocess_classification(logits.cpu(), self.model.config.id2label)


def default_classifier(folder: str | Path | None = None, steps: int = 300) -> Path:
    """A sentiment classifier for the offline lesson: MiniLM + a trained head, made once and cached.

    The bundled MiniLM has no classifier head.  Fine-tuning the whole model
    (lesson 03) takes minutes on two CPU cores; a **linear probe** takes
    seconds: run the frozen encoder ONCE over the bundled training reviews,
    then fit only the head (a 384 x 2 linear layer) on those fixed features,
    ``steps`` full-batch AdamW steps.  The result is a real
    ``BertForSequenceClassification`` saved with ``save_model``, served like
    lesson 03's folder (which you can pass instead with ``--model``).

    Default folder: ``$COURSE_CACHE/serve-classifier`` (``COURSE_CACHE``
    defaults to ``~/.cache/course``); later calls load it.
    """
    import os

    folder = Path(folder) if folder else Path(os.environ.get("COURSE_CACHE", "~/.cache/course")).expanduser()
    folder = folder / "serve-classifier" if folder.name != "serve-classifier" else folder
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    import torch

    from course.assets import bundled_rows, load_model, load_tokenizer
    from course.train import save_model

    quiet_transformers()
    tokenizer = load_tokenizer()
    model = load_model(task="sequence-classification").eval()
    rows = bundled_rows()["train"]
    features = _pooled_features(model, tokenizer, [row["text"] for row in rows])  # (texts, hidden)
    labels = torch.tensor([row["label"] for row in rows])
    head = model.classifier  # nn.Linear(hidden, 2): the only trained weights
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    save_model(model, tokenizer, partial)
    try:
        partial.replace(folder)  # atomic: a reader never sees a half-written folder
    except OSError:  # another process finished first: keep its folder
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _pooled_features(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """What the classifier head sees: the encoder's pooled output, ``(len(texts), hidden)``, no gradients."""
    import torch

    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt"
            )
            chunks.append(model.base_model(**encoded).pooler_output)  # (batch, hidden)
    return torch.cat(chunks).clone()  # a normal tensor: inference tensors cannot enter autograd


# ------------------------------------------------------------------------- embed


@cache
def shared_encoder(model: str | None, device: str) -> Any:
    """One ``Encoder`` per (model, device) in this process: /embed and /summarize share MiniLM's weights."""
    from course.pipelines import Encoder

    return Encoder(model, device=device)


class Embedder(_Base):
    """Sentence embeddings: mean-pooled, normalised MiniLM vectors (lesson 02's ``Encoder``)."""

    task = "embed"

    def __init__(self, model: str | None = None, device: str | None = "auto") -> None:
        super().__init__(device)
        _check_folder(model, "encoder")
        self.encoder = shared_encoder(model, str(self.device))
        self.description = model or "minilm (bundled)"

    def __call__(self, texts: list[str]) -> list[list[float]]:
        """One vector (a list of floats) per text."""
        return self.encoder.embed(texts, batch_size=max(1, len(texts))).tolist()


# --------------------------------------------------------------------- summarize

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: split after ``.``, ``!`` or ``?`` followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def central_sentences(vectors: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` rows closest to their normalised mean, in their original order.

    ``vectors`` is ``(sentences, dim)``, normalised.  The mean direction is
    what the text is mostly about; the closest sentences summarise it.
    """
    import torch

    centroid = torch.nn.functional.normalize(vectors.mean(dim=0), dim=0)  # (dim,)
    scores = vectors @ centroid  # (sentences,)
    best = scores.topk(min(k, len(scores))).indices
    return sorted(int(i) for i in best)


@dataclass(frozen=True)
class SummaryJob:
    """One /summarize request as the batcher sees it."""

    text: str
    max_sentences: int


class Summarizer(_Base):
    """Extractive (an encoder: MiniLM by default) or abstractive (an encoder-decoder model)."""

    task = "summarize"

    def __init__(self, model: str | None = None, device: str | None = "auto", max_new_tokens: int = 80) -> None:
        from transformers import AutoConfig

        super().__init__(device)
        _check_folder(model, "summarizer")
        self.abstractive = False
        self.max_new_tokens = max_new_tokens
        if model:
            config = _load(
                AutoConfig,
                str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model,
                "a model config",
            )
            self.abstractive = bool(getattr(config, "is_encoder_decoder", False))
        if self.abstractive:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
            self.model = _load(AutoModelForSeq2SeqLM, source, "a summarizer").to(self.device).eval()
            self.tokenizer = _load(AutoTokenizer, source, "a tokenizer")
            self.description = f"{model} (abstractive)"
        else:
            self.encoder = shared_encoder(model, str(self.device))
            self.description = f"{model or 'minilm (bundled)'} (extractive)"

    def __call__(self, jobs: list[SummaryJob]) -> list[str]:
        """Summaries of every job; extractive ones embed all sentences of the batch in one pass."""
        if self.abstractive:
            return self._abstractive(jobs)
        sentences = [split_sentences(job.text) for job in jobs]
        flat = [s for group in sentences for s in group]
        vectors = self.encoder.embed(flat, batch_size=max(1, len(flat)))  # (all sentences, dim)
        summaries, start = [], 0
        for job, group in zip(jobs, sentences, strict=True):
            mine = vectors[start : start + len(group)]
            start += len(group)
            summaries.append(" ".join(group[i] for i in central_sentences(mine, job.max_sentences)))
        return summaries

    def _abstractive(self, jobs: list[SummaryJob]) -> list[str]:
        """``generate`` on the padded batch; ``max_sentences`` scales the length budget."""
        import torch

        budget = self.max_new_tokens * max(job.max_sentences for job in jobs) // 3 or self.max_new_tokens
        encoded = self.tokenizer(
            [job.text for job in jobs], padding=True, truncation=True, max_length=512, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**encoded, max_new_tokens=budget, num_beams=1, do_sample=False)
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


# ---------------------------------------------------------------------- generate


@dataclass(frozen=True)
class GenerateJob:
    """One /generate request as the batcher sees it."""

    prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float


class Generator(_Base):
    """A causal language model (lesson 05's GPT-2 folder): text, or a stream of text pieces."""

    task = "generate"

    def __init__(self, model: str | None = None, device: str | None = "auto") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(device)
        if not model:
            raise CourseError("/generate needs a causal language model: --model generate=DIR (lesson 05's folder)")
        _check_folder(model, "generator")
        source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
        self.model = _load(AutoModelForCausalLM, source, "a causal language model").to(self.device).eval()
        self.tokenizer = _load(AutoTokenizer, source, "a tokenizer")
        self.description = source

    def _kwargs(self, job: GenerateJob) -> dict[str, Any]:
        """``generate`` arguments: greedy at temperature 0, else sampling with top-p."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": job.max_new_tokens, "pad_token_id": pad}
        if job.temperature > 0:
            kwargs.update(do_sample=True, temperature=job.temperature, top_p=job.top_p)
        else:
            kwargs.update(do_sample=False)
        return kwargs

    def __call__(self, jobs: list[GenerateJob]) -> list[str]:
        """Each job in turn (their sampling settings differ); the text after the prompt."""
        import torch

        texts = []
        for job in jobs:
            encoded = self.tokenizer(job.prompt, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**encoded, **self._kwargs(job))  # (1, prompt + new)
            new = out[0, encoded["input_ids"].shape[1] :]
            texts.append(self.tokenizer.decode(new, skip_special_tokens=True))
        return texts

    def stream(self, job: GenerateJob) -> Iterator[str]:
        """Text pieces as they are generated (``generate`` runs in its own thread)."""
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
        encoded = self.tokenizer(job.prompt, return_tensors="pt").to(self.device)

        def work() -> None:
            with torch.inference_mode():
                self.model.generate(**encoded, **self._kwargs(job), streamer=streamer)

        thread = Thread(target=work, daemon=True, name="generate-stream")
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()


#: Task name -> the class that serves it.
MODELS = {"classify": Classifier, "embed": Embedder, "summarize": Summarizer, "generate": Generator}


def load_task_model(task: str, model: str | None, device: str | None) -> _Base:
    """The model object for one task; unknown tasks are one clear error."""
    if task not in MODELS:
        raise CourseError(f"unknown task '{task}': choose from {', '.join(TASKS)}")
    quiet_transformers()
    return MODELS[task](model, device=device)
