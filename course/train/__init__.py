"""Fine-tuning a sequence classifier, written to be read.

Start with :mod:`course.train.loop`: a plain PyTorch loop with mixed
precision, gradient accumulation, activation checkpointing, fused AdamW,
evaluation, a progress bar and a live plot.  Around it:

* :mod:`course.train.data`      checks, tokenization, dynamic padding, loaders
* :mod:`course.train.precision` fp32 / bf16 / fp16 and the autocast idiom
* :mod:`course.memory`          peak memory (CUDA max allocated, or RSS on CPU; shared with lesson 02)
* :mod:`course.train.live`      the live loss / accuracy plot
* :mod:`course.train.save`      save, and reload as ``pipeline("text-classification")``
* :mod:`course.train.trainer`   the same run through 🤗 ``Trainer``
* :mod:`course.train.script`    ``python -m course.train``, also under ``torchrun``
  and ``accelerate launch``
* :mod:`course.train.profile`   peak memory and step time per setting (notebook 03's table)

Typical use (notebook 03)::

    from course.train import TrainConfig, fit, evaluate, make_loaders
    loaders = make_loaders(data, tokenizer, model, batch_size=16, max_length=64)
    result = fit(model, loaders["train"], TrainConfig(steps=60), device=device)
    evaluate(model, loaders["test"])

Nothing here imports torch at module level: ``import course.train`` is instant.
"""

from course.memory import PeakMemory
from course.train.data import TokenizedDataset, make_loader, make_loaders, tokenize
from course.train.live import LivePlot
from course.train.loop import TrainConfig, TrainResult, evaluate, fit, train_step
from course.train.precision import autocast_context, choose_precision, grad_scaler
from course.train.save import reload_pipeline, save_model

__all__ = [
    "LivePlot",
    "PeakMemory",
    "TokenizedDataset",
    "TrainConfig",
    "TrainResult",
    "autocast_context",
    "choose_precision",
    "evaluate",
    "fit",
    "grad_scaler",
    "make_loader",
    "make_loaders",
    "reload_pipeline",
    "save_model",
    "tokenize",
    "train_step",
]
