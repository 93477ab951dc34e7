"""Lesson 05's corpus, tokenizer, decoder training, save/load and KV-cache timing (tiny sizes: seconds)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from course.errors import CourseError
from course.generate import corpus, kvcache
from course.generate.model import (
    SUMMARY_FILE,
    DecoderConfig,
    build_decoder,
    default_decoder_dir,
    load_decoder,
    perplexity,
    save_decoder,
    train_decoder,
    unigram_perplexity,
)
from course.generate.tokenizer import EOS, tokens_per_word, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_corpus_is_over_1_mb_with_a_fixed_chapter_split():
    stats = corpus.corpus_stats()
    assert stats["train"]["characters"] + stats["validation"]["characters"] > 1_000_000
    assert 0.03 < stats["validation"]["characters"] / stats["train"]["characters"] < 0.1
    train = {(row["book"], row["chapter"]) for row in corpus.corpus_rows("train")}
    validation = {(row["book"], row["chapter"]) for row in corpus.corpus_rows("validation")}
    assert not train & validation  # whole chapters, never shared
    assert {book for book, _ in validation} == set(corpus.BOOKS)
    assert all(chapter % 20 == 10 for _, chapter in validation)
    assert (corpus.CORPUS_DIR / "DATA_CARD.md").is_file()


def test_corpus_bad_input():
    with pytest.raises(CourseError, match="unknown corpus split 'test'"):
        corpus.load_corpus("test")
    with pytest.raises(CourseError, match="max_chars must be a positive"):
        corpus.load_corpus("train", max_chars=0)
    assert sum(map(len, corpus.load_corpus("train", max_chars=2000))) < 2000 + 8000


@pytest.fixture(scope="module")
def small_texts():
    return corpus.load_corpus("train", max_chars=60_000), corpus.load_corpus("validation", max_chars=15_000)


@pytest.fixture(scope="module")
def tokenizer(small_texts):
    return train_tokenizer(small_texts[0], vocab_size=600)


def test_byte_level_bpe_round_trips_any_text(tokenizer):
    assert len(tokenizer) == 600 and tokenizer.eos_token == EOS == tokenizer.pad_token
    for text in ["It is a truth universally acknowledged.", "naïve café — 東京 🙂", "  two  spaces\nand a line"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    assert tokenizer(EOS, add_special_tokens=False)["input_ids"] == [tokenizer.eos_token_id]


def test_tokenizer_fits_its_corpus_better_than_a_tiny_vocabulary(small_texts, tokenizer):
    tiny = train_tokenizer(small_texts[0], vocab_size=300)
    assert tokens_per_word(tokenizer, small_texts[1]) < tokens_per_word(tiny, small_texts[1])
    with pytest.raises(CourseError, match="vocab_size must be an integer from 300"):
        train_tokenizer(small_texts[0], vocab_size=10)


def test_packing_into_blocks(tokenizer):
    stream = corpus.token_stream(["one two", "three"], tokenizer)
    assert stream[-1].item() == tokenizer.eos_token_id
    assert (stream == tokenizer.eos_token_id).sum().item() == 2
    blocks = corpus.pack_blocks(torch.arange(10), 4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(CourseError, match="fewer than one block of 64"):
        corpus.pack_blocks(torch.arange(10), 64)
    with pytest.raises(CourseError, match="block_size must be an integer >= 2"):
        corpus.pack_blocks(torch.arange(10), 1)


def test_unigram_perplexity_by_hand():
    train = torch.tensor([0, 0, 0, 1])  # counts + 1: [4, 2, 1] / 7
    blocks = torch.tensor([[2, 0, 1]])  # scored positions: tokens 0 and 1
    expected = math.exp(-(math.log(4 / 7) + math.log(2 / 7)) / 2)
    assert unigram_perplexity(train, blocks, 3) == pytest.approx(expected)


def test_untrained_decoder_is_about_as_perplexed_as_the_vocabulary(tokenizer):
    model = build_decoder(
        tokenizer, DecoderConfig(vocab_size=600, n_layer=1, n_embd=32, n_head=2, n_positions=32, block_size=32)
    )
    blocks = torch.randint(0, 600, (4, 32))
    assert 300 < perplexity(model, blocks) < 1200


def test_decoder_config_bad_input():
    with pytest.raises(CourseError, match="divisible by n_head"):
        DecoderConfig(n_embd=100, n_head=3).check()
    with pytest.raises(CourseError, match="block_size 512 must be from 2 to the context"):
        DecoderConfig(block_size=512).check()
    with pytest.raises(CourseError, match="steps must be a positive integer"):
        DecoderConfig(steps=0).check()


@pytest.fixture(scope="module")
def trained(small_texts, tokenizer):
    # lr 3e-3 with blocks of 64: higher rates leave this tiny model on the unigram plateau for 100+ steps
    config = DecoderConfig(
        vocab_size=600,
        n_layer=2,
        n_head=2,
        n_embd=64,
        n_positions=64,
        block_size=64,
        batch_size=8,
        steps=150,
        lr=3e-3,
        warmup_steps=15,
    )
    return train_decoder(
        config, tokenizer=tokenizer, train_texts=small_texts[0], validation_texts=small_texts[1], progress=False
    )


def test_training_beats_the_untrained_model_and_the_unigram_baseline(trained):
    scores = trained.scores
    assert scores["val_perplexity"] < scores["unigram_perplexity"] < scores["untrained_perplexity"]
    assert trained.result.history[-1]["loss"] < trained.result.history[0]["loss"] - 1.0
    assert trained.seconds["train"] > 0 and trained.seconds["train_cpu"] > 0


def test_save_and_load_round_trip_and_keep_the_better_model(trained, tmp_path):
    folder, saved = save_decoder(trained, tmp_path / "decoder")
    assert saved and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    assert summary["scores"]["val_perplexity"] == pytest.approx(trained.scores["val_perplexity"])
    model, tokenizer = load_decoder(folder)
    ids = tokenizer("Emma was", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, trained.model(ids).logits, atol=1e-5)
    assert tokenizer.decode(ids[0]) == "Emma was"

    worse = type(trained)(
        trained.model,
        trained.tokenizer,
        trained.config,
        trained.result,
        {**trained.scores, "val_perplexity": trained.scores["val_perplexity"] * 2},
        {},
    )
    assert save_decoder(worse, folder) == (folder, False)  # a better decoder is kept
    assert save_decoder(worse, folder, keep_better=False) == (folder, True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".decoder-")]  # no staging folder left


def test_load_decoder_errors(tmp_path):
    with pytest.raises(CourseError, match="no trained decoder in"):
        load_decoder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CourseError, match="cannot load the decoder"):
        load_decoder(tmp_path)


def test_default_decoder_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DECODER_DIR", str(tmp_path / "x"))
    assert default_decoder_dir() == tmp_path / "x"
    monkeypatch.delenv("COURSE_DECODER_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_decoder_dir() == tmp_path / "course" / "decoder-austen"


def test_kv_cache_timing_and_size(trained):
    timing = kvcache.time_generation(trained.model, new_tokens=40)
    assert len(timing["per_step_cache_s"]) == len(timing["per_step_no_cache_s"]) == 40
    config = trained.model.config
    assert timing["cache_bytes"] == timing["cache_bytes_formula"] == 2 * 2 * 64 * 41 * 4
    assert timing["speedup"] > 0
    with pytest.raises(CourseError, match="exceed the context of 64"):
        kvcache.time_generation(trained.model, new_tokens=64)
    assert config.n_positions == 64


def test_cli_bad_settings_exit_2_with_one_line(capsys, tmp_path):
    from course.generate.__main__ import main

    assert main(["--steps", "0", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: steps must be a positive integer, got 0"
    assert not (tmp_path / "d").exists()


def test_time_budget_stops_training_early(small_texts, tokenizer):
    config = DecoderConfig(
        vocab_size=600, n_layer=1, n_head=2, n_embd=32, n_positions=32, block_size=32, batch_size=4, steps=50
    )
    run = train_decoder(
        config,
        tokenizer=tokenizer,
        train_texts=small_texts[0],
        validation_texts=small_texts[1],
        progress=False,
        max_seconds=1e-6,
    )
    assert run.scores["steps_done"] == 1 == len(run.result.history)
    assert run.scores["train_tokens_seen"] == 4 * 32
    assert math.isfinite(run.scores["val_perplexity"])
    with pytest.raises(CourseError, match="max_seconds must be a positive number"):
        train_decoder(
            config,
            tokenizer=tokenizer,
            train_texts=small_texts[0],
            validation_texts=small_texts[1],
            progress=False,
            max_seconds=0,
        )


def test_cpu_threads_follow_the_load(monkeypatch):
    import os

    from course.generate.model import set_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (100.0, 0.0, 0.0))
        assert set_cpu_threads("auto").startswith("1 thread: load average 100.0")
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert "torch's default" in set_cpu_threads("auto")
        assert set_cpu_threads(2) == "2 thread(s), as requested" and torch.get_num_threads() == 2
        with pytest.raises(CourseError, match="threads must be 'auto' or a positive integer"):
            set_cpu_threads(0)
    finally:
        torch.set_num_threads(before)
