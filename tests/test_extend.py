"""Lesson 04's library (course.extend): surgery, custom attention, adapter, LoRA, peft parity, comparison.

Most tests use a tiny random BERT (2 layers, hidden 32) so they take
milliseconds; the parity with peft and the saved-adapter pipeline use the
bundled MiniLM, where "the same numbers" actually matters.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from course.errors import CourseError
from course.extend import count_parameters, find_modules, freeze, replace_module, unfreeze
from course.extend.adapter import BottleneckAdapter, add_adapters
from course.extend.lora import (
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    save_adapter,
    unmerge_lora,
    unwrap_lora,
)
from course.extend.temperature import TemperatureSelfAttention, add_temperature, allowed, temperatures

VOCAB = 100


def tiny_bert(seed: int = 0, dropout: float = 0.0, **overrides):
    """A 2-layer BERT classifier with random weights (hidden 32, 4 heads)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    settings.update(overrides)
    return BertForSequenceClassification(BertConfig(**settings)).eval()


def batch(seed: int = 1, rows: int = 3, length: int = 9) -> dict[str, torch.Tensor]:
    """Random token ids with some padding at the end of the rows after the first."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    for row in range(1, rows):
        mask[row, length - 2 * row :] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1][:rows])}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


# ------------------------------------------------------------------------------ surgery


def test_find_modules_by_suffix_glob_and_regex():
    model = tiny_bert()
    assert sorted(find_modules(model, "query")) == [f"bert.encoder.layer.{i}.attention.self.query" for i in (0, 1)]
    assert list(find_modules(model, "bert.encoder.layer.1.*.value")) == ["bert.encoder.layer.1.attention.self.value"]
    ffn = find_modules(model, r"re:.*layer\.\d+\.output\.dense")
    assert sorted(ffn) == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]
    assert len(find_modules(model, "dense", kind=torch.nn.Linear)) == 7  # per layer: attention out, ffn in, out; pooler


def test_unknown_target_lists_candidates_in_one_line():
    with pytest.raises(CourseError) as error:
        find_modules(tiny_bert(), ["query", "querry"], kind=torch.nn.Linear)
    message = str(error.value)
    assert "\n" not in message and "'querry'" in message
    assert "candidates: query, key, value, dense" in message
    with pytest.raises(CourseError, match="targets must be module names"):
        find_modules(tiny_bert(), [])
    with pytest.raises(CourseError, match="not a valid regular expression"):
        find_modules(tiny_bert(), "re:(")


def test_replace_freeze_unfreeze_and_count():
    model = tiny_bert()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model).trainable == total and count_parameters(model).fraction == 1.0
    trainable = freeze(model, except_="classifier")
    assert trainable == ["classifier.weight", "classifier.bias"]
    assert count_parameters(model).trainable == 32 * 2 + 2
    unfreeze(model, "pooler")
    assert count_parameters(model).trainable == 32 * 2 + 2 + 32 * 32 + 32
    old = replace_module(model, "bert.pooler.dense", torch.nn.Identity())
    assert isinstance(old, torch.nn.Linear) and isinstance(model.bert.pooler.dense, torch.nn.Identity)
    with pytest.raises(CourseError, match="has no submodule 'bert.nope'"):
        replace_module(model, "bert.nope.dense", torch.nn.Identity())
    assert "0.29%" not in str(count_parameters(model))  # the text form carries the share
    assert str(count_parameters(model)).endswith("%)")


def test_count_counts_tied_weights_once():
    shared = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(shared, shared)
    assert count_parameters(model).total == 20


# ------------------------------------------------------------------------------- LoRA


def test_lora_linear_starts_as_the_base_layer_and_adds_the_low_rank_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, r=2, alpha=6)
    x = torch.randn(3, 4, 6)
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (5, 2) and layer.scaling == 3.0
    assert torch.equal(layer(x), base(x))  # B = 0: exactly the base layer
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = base(x) + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)
    assert not base.weight.requires_grad and layer.lora_A.requires_grad and layer.lora_B.requires_grad


def test_lora_gradients_reach_only_a_and_b():
    model = tiny_bert()
    apply_lora(model, ["query", "value"], r=4, alpha=8, train=())
    model.train()
    model(**batch()).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(name.endswith(("lora_A", "lora_B")) for name in with_grad)
    assert len(with_grad) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)


def test_apply_lora_counts_like_the_formula_and_keeps_the_head():
    model = tiny_bert()
    names = apply_lora(model, ["query", "value"], r=4, alpha=8)
    assert names == [f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")]
    lora = 4 * 4 * (32 + 32)  # 4 layers x r x (in + out)
    assert count_parameters(model).trainable == lora + 32 * 2 + 2
    assert apply_lora(model, ["query"], r=4, alpha=8) == []  # already wrapped: nothing wrapped twice


@pytest.mark.parametrize(
    ("r", "alpha", "message"),
    [
        (0, 8, "rank r must be a positive integer"),
        (-2, 8, "rank r"),
        (2.5, 8, "rank r"),
        (4, 0, "alpha must be a positive number"),
        (4, -1.0, "alpha must be"),
    ],
)
def test_bad_rank_or_alpha_is_one_line(r, alpha, message):
    with pytest.raises(CourseError, match=message) as error:
        apply_lora(tiny_bert(), ["query"], r=r, alpha=alpha)
    assert "\n" not in str(error.value)


def test_lora_on_an_unknown_target_names_the_candidates():
    with pytest.raises(CourseError, match="no Linear module matches 'q_proj'.*candidates: query, key, value"):
        apply_lora(tiny_bert(), ["q_proj", "v_proj"])


def test_merge_and_unmerge_by_name():
    model = tiny_bert()
    apply_lora(model, ["query", "value"], r=4, alpha=8)
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B, std=0.5)
    inputs = batch()
    before = logits(model, inputs)
    weight = model.bert.encoder.layer[0].attention.self.query.base.weight.clone()
    merged = merge_lora(model, ["bert.encoder.layer.0.attention.self.query"])
    assert merged == ["bert.encoder.layer.0.attention.self.query"]
    assert not torch.equal(weight, model.bert.encoder.layer[0].attention.self.query.base.weight)
    assert not lora_layers(model)["bert.encoder.layer.1.attention.self.query"].merged
    torch.testing.assert_close(logits(model, inputs), before, rtol=0, atol=1e-5)
    merge_lora(model)
    merge_lora(model)  # merging twice adds nothing
    torch.testing.assert_close(logits(model, inputs), before, rtol=0, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.base.weight, weight, atol=1e-6, rtol=0)
    with pytest.raises(CourseError, match="no LoRA layer named 'bert.pooler.dense'"):
        merge_lora(model, ["bert.pooler.dense"])
    unwrap_lora(model)
    assert not lora_layers(model) and isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)
    torch.testing.assert_close(logits(model, inputs), before, rtol=0, atol=1e-5)


def test_save_and_load_adapter_only(tmp_path):
    model = tiny_bert()
    apply_lora(model, ["query", "value"], r=4, alpha=8)
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B)
    torch.nn.init.normal_(model.classifier.weight)
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    fresh = tiny_bert()  # same base weights (same seed), fresh LoRA and head
    apply_lora(fresh, ["query", "value"], r=4, alpha=8)
    assert sorted(load_adapter(fresh, path)) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    torch.testing.assert_close(logits(fresh, batch()), logits(model, batch()), rtol=0, atol=0)


def test_loading_an_adapter_into_other_shapes_is_one_line_and_changes_nothing(tmp_path):
    model = tiny_bert()
    apply_lora(model, ["query", "value"], r=4, alpha=8)
    path = save_adapter(model, tmp_path / "r4.safetensors")
    other = tiny_bert()
    apply_lora(other, ["query", "value"], r=2, alpha=8)
    snapshot = {name: p.clone() for name, p in other.state_dict().items()}
    with pytest.raises(CourseError, match=r"shape \(4, 32\) but the model's is \(2, 32\): .*another rank"):
        load_adapter(other, path)
    assert all(torch.equal(snapshot[name], p) for name, p in other.state_dict().items())  # nothing half-loaded
    wider = tiny_bert(hidden_size=64)
    apply_lora(wider, ["query", "value"], r=4, alpha=8)
    with pytest.raises(CourseError, match="another rank or model size"):
        load_adapter(wider, path)
    plain = tiny_bert()
    with pytest.raises(CourseError, match="has no place in this model: apply_lora"):
        load_adapter(plain, path)
    with pytest.raises(CourseError, match="no adapter file"):
        load_adapter(plain, tmp_path / "missing.safetensors")
    freeze(plain)
    with pytest.raises(CourseError, match="no trainable parameters"):
        save_adapter(plain, tmp_path / "x.safetensors")


# ---------------------------------------------------------------- adapter, temperature


def test_zero_initialised_adapter_leaves_the_model_unchanged_then_learns():
    model = tiny_bert()
    inputs = batch()
    before = logits(model, inputs)
    names = add_adapters(model, bottleneck=4)
    assert names == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]
    assert isinstance(model.bert.encoder.layer[0].output.dense, BottleneckAdapter)
    assert isinstance(model.bert.encoder.layer[0].attention.output.dense, torch.nn.Linear)  # not the attention's
    assert torch.equal(logits(model, inputs), before)
    assert count_parameters(model).trainable == 2 * (32 * 4 + 4 + 4 * 32 + 32) + 32 * 2 + 2
    model.train()
    model(**inputs).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("adapter_" in n or "classifier" in n for n in grads)
    with pytest.raises(CourseError, match="bottleneck must be a positive integer"):
        BottleneckAdapter(torch.nn.Linear(4, 4), 0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_temperature_attention_is_the_identity_at_initialisation(implementation):
    model = tiny_bert()
    model.set_attn_implementation(implementation)
    inputs = batch(rows=3, length=9)
    before = logits(model, inputs)
    names = add_temperature(model)
    assert len(names) == 2 and isinstance(model.bert.encoder.layer[1].attention.self, TemperatureSelfAttention)
    assert (logits(model, inputs) - before).abs().max().item() <= 1e-6
    assert torch.equal(temperatures(model), torch.ones(2, 4))
    assert count_parameters(model).trainable == 2 * 4 + 32 * 2 + 2


def test_temperature_changes_attention_and_learns():
    model = tiny_bert()
    add_temperature(model)
    inputs = batch()
    with torch.no_grad():
        hidden = model.bert(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        model.bert.encoder.layer[0].attention.self.log_temperature.fill_(-3.0)  # 20x sharper heads
        sharper = model.bert(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    assert (sharper - hidden).abs().max().item() > 1e-3
    model.train()
    model(**inputs).loss.backward()
    for layer in model.bert.encoder.layer:  # the loss reaches every head's temperature
        assert layer.attention.self.log_temperature.grad is not None
        assert layer.attention.self.log_temperature.grad.abs().min() > 0


def test_allowed_reads_both_mask_formats():
    additive = torch.tensor([[0.0, torch.finfo(torch.float32).min]])
    assert allowed(additive).tolist() == [[True, False]]
    assert allowed(None) is None
    booleans = torch.tensor([[True, False]])
    assert allowed(booleans) is booleans


def test_temperature_refuses_what_is_not_bert_attention():
    with pytest.raises(CourseError, match="is not a BERT-style self-attention"):
        TemperatureSelfAttention(torch.nn.Linear(4, 4))
    with pytest.raises(CourseError, match="no TemperatureSelfAttention layers"):
        temperatures(tiny_bert())


# ------------------------------------------------------------------------------- package


def test_import_course_extend_loads_no_torch():
    code = "import sys, course.extend; print(any(m in sys.modules for m in ('torch', 'transformers', 'peft')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_lazy_names_resolve():
    import course.extend

    assert course.extend.LoRALinear is LoRALinear
    assert course.extend.add_adapters is add_adapters
    with pytest.raises(AttributeError):
        course.extend.nothing_here  # noqa: B018


# ----------------------------------------------------------------- MiniLM: parity with peft


@pytest.fixture(scope="module")
def minilm():
    """The bundled MiniLM with a fresh head, and a tokenised batch of real reviews."""
    from course.assets import bundled_rows, load_tokenizer
    from course.extend.compare import load_base

    tokenizer = load_tokenizer()
    texts = [row["text"] for row in bundled_rows()["test"][:6]]
    return load_base(seed=0), tokenizer, dict(tokenizer(texts, padding=True, return_tensors="pt"))


def trained_looking(model, seed: int = 0) -> None:
    """Give every trainable tensor random values, as if training had moved it away from zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def test_hand_lora_matches_peft_on_minilm(minilm):
    from course.extend.compare import HEAD, peft_model
    from course.extend.parity import copy_into_peft, max_abs_diff

    base, _, inputs = minilm
    ours = copy.deepcopy(base)
    apply_lora(ours, ["query", "value"], r=8, alpha=16, train=HEAD)
    trained_looking(ours)
    theirs = peft_model(copy.deepcopy(base), r=8, alpha=16, targets=["query", "value"], head=HEAD)
    assert count_parameters(ours).trainable == theirs.get_nb_trainable_parameters()[0] == 222_338
    assert count_parameters(ours).fraction <= 0.02
    assert max_abs_diff(ours, theirs, inputs) > 1e-3  # before copying they differ ...
    assert copy_into_peft(ours, theirs) == 2 * 2 * 6 + 4  # A and B of 12 layers' query/value, pooler, classifier
    assert max_abs_diff(ours, theirs, inputs) <= 1e-6  # ... after, they agree to float32 rounding
    unmerged = logits(ours, inputs)
    merge_lora(ours)
    assert (logits(ours, inputs) - unmerged).abs().max().item() <= 1e-5


def test_copy_into_peft_refuses_other_ranks(minilm):
    from course.extend.compare import peft_model
    from course.extend.parity import copy_into_peft

    base, _, _ = minilm
    ours = copy.deepcopy(base)
    apply_lora(ours, ["query", "value"], r=8, alpha=16)
    with pytest.raises(CourseError, match=r"our shape \(8, 384\) vs peft's \(4, 384\)"):
        copy_into_peft(ours, peft_model(copy.deepcopy(base), r=4, alpha=8))
    with pytest.raises(CourseError, match="peft model has no"):
        copy_into_peft(ours, peft_model(copy.deepcopy(base), r=8, alpha=16, targets=["key"]))


def test_saved_adapter_is_kilobytes_and_loads_into_a_pipeline(minilm, tmp_path):
    from course.extend.compare import HEAD, load_base
    from course.pipelines import make_pipeline

    base, tokenizer, inputs = minilm
    ours = copy.deepcopy(base)
    apply_lora(ours, ["query", "value"], r=8, alpha=16, train=HEAD)
    trained_looking(ours, seed=1)
    path = save_adapter(ours, tmp_path / "adapter.safetensors")
    model_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    assert path.stat().st_size < 1_000_000 < model_bytes / 50  # under 1 MB against ~87 MB
    restored = load_base(seed=5)  # another fresh head: the file must bring the trained one
    apply_lora(restored, ["query", "value"], r=8, alpha=16, train=HEAD)
    load_adapter(restored, path)
    unwrap_lora(restored)
    expected = logits(ours, inputs)
    torch.testing.assert_close(logits(restored, inputs), expected, rtol=0, atol=1e-5)
    classifier, _ = make_pipeline("text-classification", restored, tokenizer=tokenizer, device="cpu")
    texts = tokenizer.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    labels = [answer["label"] for answer in classifier(texts)]
    assert labels == [restored.config.id2label[i] for i in expected.argmax(-1).tolist()]


def test_full_profile_model_fails_offline_in_one_line(monkeypatch):
    """The full profile's bert-base comes from the hub cache; offline without it: one clear line."""
    from course.extend.compare import load_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CourseError) as error:
        load_base("google-bert/bert-base-uncased")
    message = str(error.value)
    assert "\n" not in message and "cannot load 'google-bert/bert-base-uncased'" in message
    assert "course assets prefetch google-bert/bert-base-uncased" in message


def test_full_profile_settings_are_valid_parameters():
    import tomllib
    from pathlib import Path

    import nbformat

    repo = Path(__file__).parents[1]
    profile = tomllib.loads((repo / "course" / "profiles.toml").read_text())["full"]["notebooks"]["04_extending"]
    nb = nbformat.read(repo / "notebooks" / "04_extending.ipynb", as_version=4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    defined = {line.split("=")[0].strip() for line in parameters.source.splitlines() if "=" in line}
    assert set(profile) <= defined, f"profile sets unknown parameters: {set(profile) - defined}"
