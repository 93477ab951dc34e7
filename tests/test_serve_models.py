"""The batch functions behind each endpoint, on real (bundled or tiny) models, and the profiling helpers."""

import pytest

from course.errors import CourseError
from course.serve.models import (
    Classifier,
    Embedder,
    GenerateJob,
    Generator,
    Summarizer,
    SummaryJob,
    central_sentences,
    default_classifier,
    load_task_model,
    split_sentences,
)
from course.serve.tiny import save_fresh_classifier, save_tiny_causal_lm, save_tiny_seq2seq

TEXTS = ["A wonderful, moving film.", "The soup was cold and the waiter was rude.", "Fine."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    return {
        "classifier": save_fresh_classifier(root / "classifier"),
        "gpt": save_tiny_causal_lm(root / "gpt"),
        "bart": save_tiny_seq2seq(root / "bart"),
    }


def test_making_the_tiny_models_writes_nothing_outside_the_notebook(tmp_path, capfd):
    """Nothing may reach the process's own stdout/stderr (a Rust progress bar once printed blank lines there)."""
    save_tiny_causal_lm(tmp_path / "gpt")
    save_tiny_seq2seq(tmp_path / "bart")
    out, _ = capfd.readouterr()
    assert out == ""


def test_classifier_batch_matches_the_pipeline_on_the_saved_folder(folders):
    from course.train import reload_pipeline

    classifier = Classifier(str(folders["classifier"]), device="cpu")
    ours = classifier(TEXTS)
    pipe, _ = reload_pipeline(folders["classifier"], device="cpu")
    theirs = pipe(TEXTS)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(ours, theirs, strict=True))
    assert {r["label"] for r in ours} <= {"negative", "positive"}  # the folder's own id2label


def test_a_text_gets_the_same_label_alone_and_in_a_padded_batch(folders):
    classifier = Classifier(str(folders["classifier"]), device="cpu")
    batch = classifier(TEXTS)
    alone = [classifier([t])[0] for t in TEXTS]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(batch, alone, strict=True))


def test_embedder_returns_unit_vectors_equal_to_lesson_02s_encoder():
    import torch

    from course.pipelines import Encoder

    vectors = Embedder(device="cpu")(TEXTS)
    assert type(vectors) is list and len(vectors) == 3 and len(vectors[0]) == 384
    reference = Encoder(device="cpu").embed(TEXTS)
    assert torch.allclose(torch.tensor(vectors), reference, atol=1e-5)


def test_extractive_summary_keeps_the_central_sentences_in_their_order():
    import torch

    assert split_sentences("One. Two!  Three? Four") == ["One.", "Two!", "Three?", "Four"]
    vectors = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [1.0, 0.05]]), dim=-1)
    assert central_sentences(vectors, 2) == [2, 3]  # the two closest to the mean, in text order
    summarizer = Summarizer(device="cpu")
    text = (
        "The hotel room was clean and quiet. The staff at the front desk were friendly and helpful. "
        "Breakfast had fresh bread, fruit and good coffee. My cousin collects stamps from Peru."
    )
    summary, short = summarizer([SummaryJob(text, 2), SummaryJob("Just one sentence.", 3)])
    kept = split_sentences(summary)
    assert len(kept) == 2 and "stamps" not in summary  # the off-topic sentence is left out
    assert [text.index(s) for s in kept] == sorted(text.index(s) for s in kept)
    assert short == "Just one sentence."


def test_abstractive_summary_with_an_encoder_decoder_folder(folders):
    summarizer = Summarizer(str(folders["bart"]), device="cpu", max_new_tokens=6)
    assert summarizer.abstractive and "abstractive" in summarizer.description
    out = summarizer([SummaryJob("The soup was cold. The bread was stale.", 1), SummaryJob("Great film.", 2)])
    assert len(out) == 2 and all(type(s) is str for s in out)


def test_an_uncached_hub_summarizer_offline_is_one_clear_error():
    with pytest.raises(CourseError, match="cannot load") as error:
        Summarizer("sshleifer/distilbart-cnn-12-6", device="cpu")
    assert "\n" not in str(error.value)


def test_generator_greedy_equals_generate_and_the_stream_adds_up_to_the_text(folders):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    generator = Generator(str(folders["gpt"]), device="cpu")
    job = GenerateJob("The film was", 8, 0.0, 1.0)
    text = generator([job])[0]
    tokenizer = AutoTokenizer.from_pretrained(folders["gpt"])
    model = AutoModelForCausalLM.from_pretrained(folders["gpt"]).eval()
    encoded = tokenizer("The film was", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert text == tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    pieces = list(generator.stream(job))
    assert len(pieces) >= 2 and "".join(pieces) == text
    sampled = generator([GenerateJob("The film was", 5, 1.2, 0.9)])[0]
    assert type(sampled) is str


@pytest.mark.parametrize(
    "task, model, message",
    [
        ("classify", "./no/such/folder", "classifier folder ./no/such/folder does not exist"),
        ("generate", None, "/generate needs a causal language model"),
        ("translate", None, "unknown task 'translate'"),
    ],
)
def test_model_problems_are_one_line(task, model, message):
    with pytest.raises(CourseError, match=message):
        load_task_model(task, model, "cpu")


@pytest.mark.slow
def test_default_classifier_learns_sentiment_and_is_cached(tmp_path):
    from course.assets import bundled_rows

    folder = default_classifier(tmp_path)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert default_classifier(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # loaded, not retrained
    test = bundled_rows()["test"]
    answers = Classifier(str(folder), device="cpu")([row["text"] for row in test])
    names = ["negative", "positive"]
    accuracy = sum(a["label"] == names[row["label"]] for a, row in zip(answers, test, strict=True)) / len(test)
    assert accuracy >= 0.65, f"the linear probe should beat chance clearly on held-out reviews, got {accuracy:.2f}"


def test_profiling_helpers_time_profile_and_snapshot(tmp_path):
    import torch

    from course.serve.profiling import machine_snapshot, naive_timings, profile_call, timer_measurement

    x = torch.randn(64, 64)
    fn = lambda: x @ x  # noqa: E731
    assert len(naive_timings(fn, runs=3)) == 3
    measurement = timer_measurement(fn, min_run_time=0.05)
    assert measurement.median > 0
    table, rows = profile_call(fn, tmp_path / "trace.json", top=5)
    assert "aten::mm" in table and rows[0]["calls"] >= 1
    assert (tmp_path / "trace.json").stat().st_size > 100
    facts = machine_snapshot()
    assert facts["cpu_count"] >= 1 and facts["memory_total_gb"] > 0
    assert facts["gpu_source"] in {"none", "nvml", "nvidia-smi"}


def test_generate_serves_lesson_05s_saved_decoder(tmp_path):
    """The folder lesson 05 saves (course.generate.save_decoder) is what /generate loads and samples from."""
    from course.generate.model import DecoderConfig, save_decoder, train_decoder
    from course.serve.models import GenerateJob, Generator

    texts = ["It is a truth universally acknowledged, that a single man in possession of a good fortune."] * 40
    config = DecoderConfig(vocab_size=300, n_layer=1, n_head=2, n_embd=32, n_positions=64, block_size=32,
                           batch_size=2, steps=3, warmup_steps=1)  # fmt: skip
    run = train_decoder(config, train_texts=texts, validation_texts=texts[:4], validation_blocks=2, progress=False)
    folder, _ = save_decoder(run, tmp_path / "decoder", keep_better=False)
    generator = Generator(str(folder), device="cpu")
    [text] = generator([GenerateJob(prompt="It is a truth", max_new_tokens=5, temperature=0.0, top_p=1.0)])
    assert isinstance(text, str) and text
