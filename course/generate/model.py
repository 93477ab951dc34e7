"""A small GPT-2, built from a config, trained with lesson 03's loop, scored by perplexity.

The model is 🤗 ``GPT2LMHeadModel`` with random weights, made small enough to
learn something in a minute on a laptop CPU::

    tokens --> token embedding + position embedding          (vocab x 256) + (256 x 256)
           --> 4 x [ LayerNorm -> causal self-attention (4 heads)
                     LayerNorm -> MLP 256 -> 1024 -> 256 ]   each with a residual connection
           --> LayerNorm --> logits = hidden @ token_embedding^T   (the output layer is tied)

**Training** is next-token prediction on packed blocks of the corpus
(:mod:`course.generate.corpus`): the model's ``forward(input_ids, labels)``
shifts the labels by one and returns the mean cross-entropy, so lesson 03's
:func:`course.train.fit` trains it unchanged (AdamW, warm-up and decay,
gradient clipping, mixed precision where the device has it).

**Perplexity** = exp(mean cross-entropy per token): the number of equally
likely tokens the model is, on average, choosing between.  Two baselines
make it readable:

* the **untrained** model spreads its bets over the whole vocabulary:
  perplexity ~ vocab size;
* a **unigram** model knows only how often each token occurs (no context at
  all): what a decoder beats as soon as it uses the previous tokens.

:func:`save_decoder` writes the model, the tokenizer and a
``course_decoder.json`` (how it was trained, its scores) with
``save_pretrained``; :func:`load_decoder` reads it back, and so can any
``AutoModelForCausalLM.from_pretrained(folder)`` (lesson 06 serves it).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

    from course.train import TrainResult

#: The file next to the weights that says how the decoder was trained and how well it does.
SUMMARY_FILE = "course_decoder.json"


def default_decoder_dir() -> Path:
    """Where lesson 05 saves its trained decoder and lesson 06 looks for it.

    ``$COURSE_DECODER_DIR`` when set, else ``$XDG_CACHE_HOME/course/decoder-austen``
    (``~/.cache/course/decoder-austen``).
    """
    if os.environ.get("COURSE_DECODER_DIR"):
        return Path(os.environ["COURSE_DECODER_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "course" / "decoder-austen"


def set_cpu_threads(requested: int | str = "auto") -> str:
    """Set torch's CPU threads and say why: ``"auto"`` drops to 1 thread when the machine is busy.

    On a CPU shared with other jobs (load average above 1.5 per core) torch's
    OpenMP threads wait for each other at every operation while the other
    processes hold the cores: measured here, 64 cached generation steps took
    35 s with 2 threads and 0.6 s with 1.  On an idle machine more threads
    are faster, so ``"auto"`` keeps torch's default there.
    """
    import torch

    cores = os.cpu_count() or 1
    if requested == "auto":
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if load > 1.5 * cores:
            torch.set_num_threads(1)
            return f"1 thread: load average {load:.1f} on {cores} cores (busy machine; threads would fight for cores)"
        return f"{torch.get_num_threads()} threads (torch's default; load average {load:.1f} on {cores} cores)"
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise CourseError(f"threads must be 'auto' or a positive integer, got {requested!r}")
    torch.set_num_threads(requested)
    return f"{requested} thread(s), as requested"


@dataclass
class DecoderConfig:
    """The architecture (GPT-2's names) and the training run, with the smoke (2-core CPU) values as defaults."""

    vocab_size: int = 4096  # BPE vocabulary trained on the corpus
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256  # hidden size; each head gets n_embd / n_head = 64 dimensions
    n_positions: int = 256  # the context: the longest input the model can see
    dropout: float = 0.0  # a short run on 4 MB of text does not overfit; dropout would only slow it
    block_size: int = 256  # training sequence length: the whole context, so every position embedding is trained
    batch_size: int = 4  # x 256 tokens = 1024 tokens per step
    steps: int = 200  # 200 x 1024 tokens: a fifth of the training text, ~1 min on 2 idle cores
    lr: float = 2e-3  # small models train well with a high learning rate (nanoGPT's shakespeare-char: 1e-3)
    warmup_steps: int = 20
    precision: str = "auto"  # bf16/fp16 on a GPU, fp32 on a CPU (see course.train.precision)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> DecoderConfig:
        """One clear line for settings that cannot work."""
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "n_positions", "block_size", "batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CourseError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise CourseError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 2 <= self.block_size <= self.n_positions:
            raise CourseError(
                f"block_size {self.block_size} must be from 2 to the context n_positions={self.n_positions}"
            )
        if not 0 <= self.dropout < 1:
            raise CourseError(f"dropout must be in [0, 1), got {self.dropout!r}")
        return self


def build_decoder(tokenizer: PreTrainedTokenizerBase, config: DecoderConfig | None = None) -> GPT2LMHeadModel:
    """A randomly initialised ``GPT2LMHeadModel`` sized by ``config``, its vocabulary taken from ``tokenizer``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = (config or DecoderConfig()).check()
    eos = tokenizer.eos_token_id
    gpt2_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(gpt2_config)
    model.loss_type = "ForCausalLM"  # transformers guesses it from the class name and warns when it cannot
    return model


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameters in all, in the token/position embeddings, and in the transformer blocks."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for name, p in model.named_parameters() if name.endswith(("wte.weight", "wpe.weight")))
    return {"total": total, "embeddings": embeddings, "blocks": total - embeddings}


# ------------------------------------------------------------------- perplexity


def perplexity(
    model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 16, device: torch.device | str | None = None
) -> float:
    """exp(mean next-token cross-entropy) over every predicted position of ``blocks`` ``(n, block_size)``.

    Sums the per-token losses and divides once, so every token counts the same.
    The model's train/eval mode is restored afterwards.
    """
    import torch

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, blocks.shape[0], batch_size):
            batch = blocks[start : start + batch_size].to(device)  # (batch, block_size)
            mask = torch.ones_like(batch)  # every token is real text (end-of-text doubles as padding id)
            logits = model(input_ids=batch, attention_mask=mask).logits.float()  # (batch, block_size, vocab)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),  # (batch * (block_size - 1), vocab)
                batch[:, 1:].reshape(-1),  # (batch * (block_size - 1),)
                reduction="sum",
            )
            total += loss.item()
            count += batch[:, 1:].numel()
    model.train(was_training)
    if count == 0:
        raise CourseError("perplexity() needs at least one block of 2 or more tokens")
    return math.exp(total / count)


def unigram_perplexity(train_stream: torch.Tensor, blocks: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of a context-free model, p(token) = (count + 1) / (N + vocab), on the tokens ``perplexity`` scores.

    Counts come from the training stream; add-one smoothing gives unseen
    tokens a small probability instead of an infinite loss.
    """
    import torch

    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    log_p = (counts / counts.sum()).log()
    targets = blocks[:, 1:].reshape(-1)  # the same positions perplexity() predicts
    return math.exp(-log_p[targets].mean().item())


# --------------------------------------------------------------------- training


@dataclass
class DecoderRun:
    """A trained decoder with its tokenizer, the training history and the three perplexities."""

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerBase
    config: DecoderConfig
    result: TrainResult
    scores: dict[str, float]
    seconds: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """What :func:`save_decoder` writes to ``course_decoder.json``."""
        return {
            "config": asdict(self.config),
            "scores": self.scores,
            "seconds": self.seconds,
            "parameters": count_parameters(self.model),
            "precision": self.result.precision,
            "final_train_loss": self.result.final_loss,
        }


def train_decoder(
    config: DecoderConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    tokenizer: PreTrainedTokenizerBase | None = None,
    train_texts: list[str] | None = None,
    validation_texts: list[str] | None = None,
    validation_blocks: int = 64,
    progress: bool = True,
    plot: Any = None,
    max_seconds: float | None = None,
) -> DecoderRun:
    """Tokenizer (unless given), model, training with :func:`course.train.fit`, and the perplexities.

    The texts default to the bundled corpus.  ``validation_blocks`` caps how
    many validation blocks are scored (the first ones, always the same).
    ``max_seconds`` stops training after the step that passes this many
    seconds (a safety net for a busy shared machine; the learning-rate decay
    is then cut short): ``run.scores["steps_done"]`` says how many steps ran.
    """
    from course.generate.corpus import block_loader, load_corpus, pack_blocks, token_stream
    from course.generate.tokenizer import train_tokenizer
    from course.train import TrainConfig

    config = (config or DecoderConfig()).check()
    seconds: dict[str, float] = {}
    train_texts = train_texts if train_texts is not None else load_corpus("train")
    validation_texts = validation_texts if validation_texts is not None else load_corpus("validation")
    started = time.perf_counter()
    if tokenizer is None:
        tokenizer = train_tokenizer(train_texts, vocab_size=config.vocab_size)
    seconds["tokenizer"] = time.perf_counter() - started
    started = time.perf_counter()
    train_stream = token_stream(train_texts, tokenizer)
    train_blocks = pack_blocks(train_stream, config.block_size)  # (blocks, block_size)
    val_blocks = pack_blocks(token_stream(validation_texts, tokenizer), config.block_size)[:validation_blocks]
    seconds["tokenize"] = time.perf_counter() - started

    model = build_decoder(tokenizer, config)
    untrained = perplexity(model, val_blocks)
    train_config = TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        max_length=config.block_size,
        lr=config.lr,
        weight_decay=0.1,
        warmup_steps=config.warmup_steps,
        precision=config.precision,
        seed=config.seed,
    )
    loader = block_loader(train_blocks, config.batch_size, seed=config.seed)
    cpu_started = time.process_time()
    result = _fit_within(model, loader, train_config, device, progress, plot, max_seconds)
    seconds["train"] = result.seconds  # wall clock of the optimizer steps
    seconds["train_cpu"] = time.process_time() - cpu_started  # CPU time of all threads: shows a busy machine
    scores = {
        "val_perplexity": perplexity(model, val_blocks),
        "unigram_perplexity": unigram_perplexity(train_stream, val_blocks, len(tokenizer)),
        "untrained_perplexity": untrained,
        "steps_done": float(len(result.history)),
        "train_tokens_seen": float(len(result.history) * config.batch_size * config.block_size),
        "train_tokens": float(train_stream.numel()),
    }
    return DecoderRun(model.eval(), tokenizer, config, result, scores, seconds)


class _OutOfTime(Exception):
    """Raised from fit()'s on_step callback to stop at the time budget."""


def _fit_within(
    model: Any, loader: Any, train_config: Any, device: Any, progress: bool, plot: Any, max_seconds: float | None
) -> TrainResult:
    """``course.train.fit``, stopped after the step that passes ``max_seconds`` (None: run every step)."""
    from dataclasses import asdict as as_dict

    from course.train import TrainResult, fit
    from course.train.loop import make_optimizer, optimizer_name
    from course.train.precision import choose_precision

    if max_seconds is not None and (isinstance(max_seconds, bool) or not max_seconds > 0):
        raise CourseError(f"max_seconds must be a positive number of seconds (or None), got {max_seconds!r}")
    rows: list[dict[str, float]] = []

    def on_step(row: dict[str, float]) -> None:
        rows.append(row)
        if max_seconds is not None and sum(r["seconds"] for r in rows) > max_seconds:
            raise _OutOfTime

    try:
        return fit(model, loader, train_config, device=device, progress=progress, plot=plot, on_step=on_step)
    except _OutOfTime:
        if plot is not None:
            plot.close()
        precision = choose_precision(train_config.precision, device)
        result = TrainResult(
            as_dict(train_config), str(precision), optimizer_name(make_optimizer(model, train_config)), 1
        )
        result.history = rows
        result.seconds = sum(r["seconds"] for r in rows)
        result.samples = len(rows) * train_config.samples_per_step
        print(f"time budget of {max_seconds:.0f} s reached: stopped after {len(rows)} of {train_config.steps} steps")
        return result


# ------------------------------------------------------------------ save / load


def read_summary(folder: str | Path) -> dict[str, Any] | None:
    """The ``course_decoder.json`` of a saved decoder, or None when the folder holds none."""
    path = Path(folder).expanduser() / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_decoder(run: DecoderRun, folder: str | Path | None = None, *, keep_better: bool = True) -> tuple[Path, bool]:
    """Save model + tokenizer + summary to ``folder`` (default: :func:`default_decoder_dir`); return (folder, saved).

    With ``keep_better`` a decoder already in the folder whose validation
    perplexity is *lower* (a longer GPU run, say) is kept and nothing is
    written: a quick smoke run never overwrites a better model.  Files are
    written to a temporary sibling folder first and moved into place, so an
    interrupted save never leaves half a model behind.
    """
    import shutil
    import tempfile

    folder = Path(folder).expanduser() if folder is not None else default_decoder_dir()
    existing = read_summary(folder)
    new_ppl = run.scores["val_perplexity"]
    if keep_better and existing and existing.get("scores", {}).get("val_perplexity", math.inf) < new_ppl:
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        run.model.save_pretrained(staging)
        run.tokenizer.save_pretrained(staging)
        (staging / SUMMARY_FILE).write_text(json.dumps(run.summary(), indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder, True


def load_decoder(
    folder: str | Path | None = None, device: torch.device | str = "cpu"
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) from a folder written by :func:`save_decoder` (or any saved causal LM), in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder).expanduser() if folder is not None else default_decoder_dir()
    if not (folder / "config.json").is_file():
        raise CourseError(
            f"no trained decoder in {folder}: run notebook 05 or `python -m course.generate --out {folder}` first"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    except (OSError, ValueError) as error:
        raise CourseError(f"cannot load the decoder in {folder}: {str(error).splitlines()[0]}") from None
    model.loss_type = "ForCausalLM"
    return model.to(device).eval(), tokenizer
