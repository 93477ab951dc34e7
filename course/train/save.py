"""Save a fine-tuned model so that ``pipeline("text-classification", model=folder)`` loads it.

``save_pretrained`` writes the weights (``model.safetensors``) and the
config, which carries ``id2label``: that is how the reloaded pipeline says
"positive" instead of "LABEL_1".  The tokenizer goes into the same folder so
the folder alone is enough to use the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from course.devices import DeviceChoice


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Write model and tokenizer to ``folder`` (created if needed) and return it."""
    from course.train.loop import unwrap

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CourseError(f"cannot create {folder}: {error.strerror or error}") from None
    unwrap(model).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reload_pipeline(folder: str | Path, device: str | None = "auto") -> tuple[Any, DeviceChoice]:
    """A text-classification pipeline from a saved folder, on an explicitly chosen device."""
    from course.pipelines import make_pipeline

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CourseError(f"{folder} holds no saved model (config.json missing): call save_model first")
    return make_pipeline("text-classification", str(folder), device=device)
