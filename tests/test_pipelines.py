"""course.pipelines: explicit device choice, the pipeline reproduced by hand, throughput, embeddings."""

from __future__ import annotations

import pytest
import torch

from course.errors import CourseError
from course.pipelines import (
    Encoder,
    cosine_similarity,
    dissect,
    make_pipeline,
    max_difference,
    mean_pool,
    padding_fraction,
    plot_throughput,
    semantic_search,
    throughput_sweep,
    zero_shot,
)

TEXTS = [
    "The soup was cold and the waiter ignored us.",
    "A wonderful, moving film.",
    "I expected more from a hotel at this price, honestly.",
]

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")


@pytest.fixture(scope="module")
def features():
    """A feature-extraction pipeline on the bundled MiniLM, on the CPU."""
    pipe, _ = make_pipeline("feature-extraction", device="cpu")
    return pipe


@pytest.fixture(scope="module")
def encoder():
    return Encoder(device="cpu")


# -------------------------------------------------------------------------- device


@needs_no_gpu
def test_asking_for_a_missing_gpu_falls_back_and_says_so(features):
    pipe, choice = make_pipeline("feature-extraction", features.model, tokenizer=features.tokenizer, device="cuda")
    assert pipe.device.type == "cpu" == choice.device.type
    assert "falling back to cpu" in choice.reason and "no CUDA GPU" in choice.reason


@needs_no_gpu
def test_strict_device_and_unknown_devices_are_errors(features):
    with pytest.raises(CourseError, match="device 'cuda:0' is not usable"):
        make_pipeline("feature-extraction", features.model, tokenizer=features.tokenizer, device="cuda:0", strict=True)
    with pytest.raises(CourseError, match="unknown device 'gpu0'"):
        make_pipeline("feature-extraction", features.model, tokenizer=features.tokenizer, device="gpu0")


def test_unknown_task_is_one_line():
    with pytest.raises(CourseError, match="unknown task 'summarization'"):
        make_pipeline("summarization")


# ------------------------------------------------------------------------- anatomy


def test_feature_extraction_by_hand_equals_the_pipeline(features):
    anatomy = dissect(features, TEXTS)
    assert anatomy.tokens[1][0] == "[CLS]" and anatomy.tokens[1][-1] == "[SEP]"
    assert anatomy.input_ids.shape[0] == 3 and anatomy.model_output.shape[-1] == 384
    assert [len(r) for r in anatomy.result] == [len(t) for t in anatomy.tokens]  # padding dropped
    assert max_difference(features(TEXTS), anatomy) < 1e-5
    assert "1. tokenizer" in anatomy.describe() and "3. post-processing" in anatomy.describe()


def test_batched_feature_extraction_returns_padding_positions(features):
    """The trap the lesson shows: with batch_size > 1 the pipeline keeps pad vectors."""
    anatomy = dissect(features, TEXTS)
    batched = features(TEXTS, batch_size=3)
    assert len(batched[1][0]) == anatomy.input_ids.shape[1] > len(anatomy.tokens[1])
    assert max_difference(batched, anatomy) == float("inf")


def test_text_classification_by_hand_equals_the_pipeline(features):
    torch.manual_seed(0)
    pipe, _ = make_pipeline("text-classification", device="cpu")
    anatomy = dissect(pipe, TEXTS)
    assert anatomy.model_output.shape == (3, 2)
    assert {r["label"] for r in anatomy.result} <= {"negative", "positive"}
    assert max_difference(pipe(TEXTS), anatomy) < 1e-5


def test_mean_pool_ignores_padding():
    hidden = torch.randn(1, 4, 8)
    padded = torch.cat([hidden, torch.full((1, 3, 8), 100.0)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(mean_pool(padded, mask), hidden.mean(dim=1))


def test_empty_or_non_string_texts_are_errors(features):
    with pytest.raises(CourseError, match="no texts given"):
        dissect(features, [])
    with pytest.raises(CourseError, match="texts must be strings, got int"):
        dissect(features, ["fine", 3])


# ---------------------------------------------------------------------- throughput


def test_throughput_sweep_repeats_each_point_and_keeps_the_spread(features):
    texts = TEXTS * 4
    rows = throughput_sweep(features, texts, batch_sizes=[1, 4], repeats=3)
    assert [row["batch_size"] for row in rows] == [1, 4]
    for row in rows:
        assert len(row["times"]) == 3
        assert row["seconds"] == sorted(row["times"])[1]  # the median of three
        assert row["sentences_per_s"] == pytest.approx(len(texts) / row["seconds"])
        assert row["worst_per_s"] <= row["sentences_per_s"] <= row["best_per_s"]
    assert rows[0]["padding"] == 0.0 < rows[1]["padding"]  # one text per batch never pads
    fig = plot_throughput(rows)
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 4]


def test_padding_fraction_counts_what_each_batch_pads(features):
    tokenizer = features.tokenizer
    short, long = "ok.", "this one is a good deal longer than the other text."
    n_short, n_long = (len(tokenizer(t)["input_ids"]) for t in (short, long))
    assert padding_fraction(tokenizer, [short, long], 1) == 0.0
    assert padding_fraction(tokenizer, [short, long], 2) == pytest.approx(1 - (n_short + n_long) / (2 * n_long))
    with pytest.raises(CourseError, match="batch_size must be a positive integer"):
        padding_fraction(tokenizer, [short], 0)


@pytest.mark.parametrize("sizes, message", [([0], "batch_size must be a positive integer"), ([], "is empty")])
def test_throughput_sweep_rejects_bad_batch_sizes(features, sizes, message):
    with pytest.raises(CourseError, match=message):
        throughput_sweep(features, TEXTS, batch_sizes=sizes)


# ---------------------------------------------------------------------- embeddings


def test_embeddings_match_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers")
    from course.assets import model_dir

    reference = st.SentenceTransformer(str(model_dir()), device="cpu").encode(TEXTS, convert_to_tensor=True)
    ours = encoder.embed(TEXTS, batch_size=2)
    assert ours.shape == (3, 384)
    torch.testing.assert_close(ours, reference.cpu(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))


def test_semantic_search_finds_the_closest_meaning(encoder):
    corpus = [
        "The train was late again.",
        "Our dinner arrived lukewarm and the staff were rude.",
        "The new phone's battery lasts two days.",
    ]
    hits = semantic_search(encoder.embed(["bad food and unfriendly service"]), encoder.embed(corpus), top_k=5)
    assert len(hits) == 1 and len(hits[0]) == 3  # top_k clipped to the corpus size
    assert hits[0][0][0] == 1
    scores = [score for _, score in hits[0]]
    assert scores == sorted(scores, reverse=True)


def test_cosine_similarity_checks_sizes():
    torch.testing.assert_close(
        cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0]])), torch.tensor([[1.0]])
    )
    with pytest.raises(CourseError, match="different sizes: 3 vs 2"):
        cosine_similarity(torch.ones(3), torch.ones(2))


def test_encoder_rejects_a_max_length_beyond_the_model(encoder):
    with pytest.raises(CourseError, match="max_length 1024 does not fit this model: it has 512"):
        encoder.embed(TEXTS, max_length=1024)


def test_zero_shot_sentiment_beats_chance_on_the_bundled_test_split(encoder):
    from course.assets import bundled_rows

    test = bundled_rows()["test"]
    answers = zero_shot(encoder, [row["text"] for row in test])
    assert set(answers[0]["scores"]) == {"negative", "positive"}
    accuracy = sum(a["label"] == ["negative", "positive"][row["label"]] for a, row in zip(answers, test, strict=True))
    assert accuracy / len(test) >= 0.65


# ------------------------------------------------------------- expected messages


def _report(rows: str) -> str:
    return f"BertForSequenceClassification LOAD REPORT from: /x\nKey | Status |\n---+---\n{rows}\nNotes: ..."


def test_the_fresh_head_load_report_is_kept_out_and_named(capfd):
    from course.assets import load_model
    from course.quiet import expected_load_report

    with expected_load_report() as fresh:
        load_model(task="sequence-classification")
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "Loading weights" not in err
    assert fresh.missing == ["classifier.bias", "classifier.weight"]
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # switched back on afterwards


def test_any_other_load_report_still_reaches_the_output():
    import logging

    from course.quiet import LoadNotes, _ExpectedReportFilter

    notes = LoadNotes()
    keep = _ExpectedReportFilter(notes, ("classifier.",))

    def passes(message: str) -> bool:
        return keep.filter(logging.LogRecord("transformers", logging.WARNING, "", 0, message, None, None))

    assert not passes(_report("classifier.weight | MISSING |\nclassifier.bias   | MISSING |"))
    assert passes(_report("classifier.weight | MISSING |\nbert.pooler.dense.weight | UNEXPECTED |"))
    assert passes(_report("encoder.layer.0.weight | MISSING |"))
    assert passes("some other warning")
    assert notes.missing == ["classifier.bias", "classifier.weight"]
