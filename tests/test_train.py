"""course.train: data checks, padding, precision, the loop's arithmetic, memory, saving, the Trainer recipe.

Most tests use a tiny randomly initialised BERT (2 layers, hidden 32) with the
bundled tokenizer, so the loop's behaviour is checked in seconds; the tests
that save and reload use the real bundled model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from course.errors import CourseError
from course.train import data as train_data
from course.train.data import TokenizedDataset, make_loader, make_loaders, tokenize
from course.train.live import LivePlot
from course.train.loop import TrainConfig, evaluate, fit, train_step
from course.train.memory import PeakMemory, fits_in_memory
from course.train.precision import autocast_context, choose_precision, grad_scaler

GOOD = ["great", "lovely", "wonderful", "excellent", "delightful", "superb"]
BAD = ["awful", "terrible", "dreadful", "horrible", "boring", "poor"]
THINGS = ["film", "meal", "hotel", "phone", "book", "service", "staff", "room"]


def toy_rows(n: int = 96) -> list[dict]:
    """A learnable toy split: 'the meal was great' -> 1, 'the meal was awful' -> 0."""
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        word = (GOOD if positive else BAD)[i // 2 % 6]
        extra = " and I would say so again" * (i % 3)  # different lengths, so padding matters
        rows.append({"text": f"the {THINGS[i % 8]} was {word}{extra}", "label": int(positive)})
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    from course.assets import load_tokenizer

    return load_tokenizer()


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer, 32-wide BERT classifier without dropout (deterministic)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


# ----------------------------------------------------------------------- bad input


def test_missing_text_column_is_one_clear_error(tokenizer):
    rows = [{"sentence": "fine", "label": 1}]
    with pytest.raises(CourseError, match=r"no 'text' column \(it has: sentence, label\).*rename_column"):
        tokenize(rows, tokenizer, 32)


def test_missing_column_in_a_datasets_split():
    import datasets

    split = datasets.Dataset.from_list([{"text": "fine", "stars": 4}])
    with pytest.raises(CourseError, match="no 'label' column"):
        train_data.check_columns(split)


def test_labels_out_of_range_name_the_row_and_the_fix(tokenizer):
    rows = toy_rows(6)
    rows[4]["label"] = 2
    with pytest.raises(CourseError, match=r"label 2 in row 4 is out of range: the model has 2 labels \(0..1\)"):
        tokenize(rows, tokenizer, 32, num_labels=2)


def test_string_labels_are_rejected(tokenizer):
    rows = [{"text": "fine", "label": "positive"}]
    with pytest.raises(CourseError, match="not an integer class id"):
        tokenize(rows, tokenizer, 32, num_labels=2)


def test_max_length_beyond_the_position_table(tokenizer):
    model = tiny_model(tokenizer)  # 128 positions
    with pytest.raises(CourseError, match="max_length 512 does not fit this model: it has 128 position"):
        make_loaders({"train": toy_rows(4)}, tokenizer, model, batch_size=2, max_length=512)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"steps": -1}, "steps must be a positive integer"),
        ({"grad_accum": 1.5}, "grad_accum must be a positive integer"),
        ({"padding": "longest"}, "unknown padding 'longest'"),
        ({"lr": 3}, "lr must be a number between 0 and 1"),
        ({"max_length": 1}, "max_length must be an integer >= 2"),
    ],
)
def test_config_rejects_settings_that_cannot_work(change, message):
    with pytest.raises(CourseError, match=message):
        TrainConfig(**change).check()


def test_a_whole_datasetdict_instead_of_a_split(tokenizer):
    with pytest.raises(CourseError, match="pick a split"):
        tokenize({"train": toy_rows(4)}, tokenizer, 32)


# ------------------------------------------------------------------ padding, sharding


def test_dynamic_padding_pads_each_batch_to_its_longest(tokenizer):
    rows = toy_rows(12)
    tokenized = tokenize(rows, tokenizer, 64)
    lengths = [len(item["input_ids"]) for item in tokenized]
    assert len(set(lengths)) > 1, "tokenize must not pad"
    loader = make_loader(tokenized, tokenizer, batch_size=4, shuffle=False)
    for index, batch in enumerate(loader):
        longest = max(lengths[index * 4 : index * 4 + 4])
        assert batch["input_ids"].shape == (4, longest)
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths[index * 4 : index * 4 + 4]


def test_max_length_padding_and_truncation(tokenizer):
    rows = [{"text": "word " * 100, "label": 0}, {"text": "short", "label": 1}]
    tokenized = tokenize(rows, tokenizer, 16, padding="max_length")
    assert [len(item["input_ids"]) for item in tokenized] == [16, 16]
    assert tokenized[0]["input_ids"][-1] == tokenizer.sep_token_id  # cut, but still ends properly


def test_two_processes_see_exactly_the_single_process_batches(tokenizer):
    tokenized = tokenize(toy_rows(32), tokenizer, 32)
    single = make_loader(tokenized, tokenizer, 8, seed=3)
    shards = [make_loader(tokenized, tokenizer, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for whole, part0, part1 in zip(single, *shards, strict=True):
        got = sorted(part0["labels"].tolist() + part1["labels"].tolist())
        assert got == sorted(whole["labels"].tolist())
        firsts = {tuple(ids[:6].tolist()) for part in (part0, part1) for ids in part["input_ids"]}
        assert firsts == {tuple(ids[:6].tolist()) for ids in whole["input_ids"]}


# ------------------------------------------------------------------------ precision


def test_auto_precision_on_cpu_is_fp32_with_a_no_op_context():
    choice = choose_precision("auto", "cpu")
    assert (choice.name, choice.dtype) == ("fp32", None)
    assert not grad_scaler("cpu", choice).is_enabled()
    with autocast_context("cpu", choice):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_on_cpu_autocasts_matmuls_and_says_whether_it_is_slower():
    choice = choose_precision("bf16", "cpu")
    assert choice.dtype is torch.bfloat16
    assert "bf16 units" in choice.reason
    with autocast_context("cpu", choice):
        out = torch.ones(4, 4) @ torch.ones(4, 4)
    assert out.dtype is torch.bfloat16


def test_fp16_without_cuda_and_unknown_precisions_are_errors():
    with pytest.raises(CourseError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", "cpu")
    with pytest.raises(CourseError, match="unknown precision 'half'"):
        choose_precision("half", "cpu")


@pytest.fixture
def simulated_gpu(monkeypatch):
    """Pretend a CUDA GPU of a given compute capability is present, as torch reports it.

    ``torch.cuda.is_bf16_supported()`` is faked with torch's own semantics: True
    from 8.0 on, and with its default ``including_emulation=True`` also below
    8.0 (where a bfloat16 tensor can be created, but runs emulated and slowly).
    """

    def install(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True: major >= 8 or including_emulation
        )

    return install


@pytest.mark.parametrize(
    ("capability", "name", "dtype", "words"),
    [
        ((6, 1), "fp16", torch.float16, "no native bf16"),
        ((7, 0), "fp16", torch.float16, "emulate"),
        ((7, 5), "fp16", torch.float16, "emulate"),
        ((8, 0), "bf16", torch.bfloat16, "natively"),
        ((9, 0), "bf16", torch.bfloat16, "natively"),
    ],
    ids=["pascal-6.1", "v100-7.0", "t4-7.5", "a100-8.0", "h100-9.0"],
)
def test_auto_precision_on_cuda_needs_compute_capability_8_for_bf16(simulated_gpu, capability, name, dtype, words):
    """bf16 only where it is native (>= 8.0); below, fp16 with a GradScaler, whatever emulation allows."""
    simulated_gpu(*capability)
    choice = choose_precision("auto", "cuda")
    assert (choice.name, choice.dtype) == (name, dtype)
    assert words in choice.reason
    assert f"{capability[0]}.{capability[1]}" in choice.reason
    if name == "fp16":
        assert "GradScaler" in choice.reason and "natively" not in choice.reason


@pytest.mark.parametrize(("capability", "native"), [((7, 5), False), ((8, 0), True)])
def test_requested_bf16_on_cuda_says_whether_it_is_emulated(simulated_gpu, capability, native):
    simulated_gpu(*capability)
    choice = choose_precision("bf16", "cuda")
    assert choice.dtype is torch.bfloat16
    assert ("native" in choice.reason) is native
    assert ("EMULATED" in choice.reason) is (not native)


def test_requested_bf16_on_a_gpu_that_cannot_even_emulate_it_is_one_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (5, 2))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(CourseError, match=r"compute capability 5.2\) cannot run bf16 .*use fp16"):
        choose_precision("bf16", "cuda")


# --------------------------------------------------------------------- the arithmetic


def _grads_after(model, batches, accum_batches):
    """Gradients left by train_step with an SGD optimizer of lr 0 (parameters unchanged)."""
    grads = {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    original_zero = optimizer.zero_grad

    def capture(set_to_none=True):
        grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        original_zero(set_to_none=set_to_none)

    optimizer.zero_grad = capture
    choice = choose_precision("fp32", "cpu")
    scaler, autocast = grad_scaler("cpu", choice), autocast_context("cpu", choice)
    loss = train_step(model, accum_batches, optimizer, scaler, autocast, max_grad_norm=None)
    return grads, loss


def test_gradient_accumulation_equals_one_big_batch(tokenizer):
    tokenized = tokenize(toy_rows(16), tokenizer, 32)
    big = next(iter(make_loader(tokenized, tokenizer, 16, shuffle=False)))
    halves = list(make_loader(tokenized, tokenizer, 8, shuffle=False))
    model = tiny_model(tokenizer).train()
    full_grads, full_loss = _grads_after(model, None, [big])
    accum_grads, accum_loss = _grads_after(model, None, halves)
    assert accum_loss.item() == pytest.approx(full_loss.item(), rel=1e-5)
    for name, grad in full_grads.items():
        torch.testing.assert_close(accum_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_activation_checkpointing_changes_memory_not_gradients(tokenizer):
    tokenized = tokenize(toy_rows(8), tokenizer, 32)
    batch = next(iter(make_loader(tokenized, tokenizer, 8, shuffle=False)))
    plain = tiny_model(tokenizer).train()
    checkpointed = tiny_model(tokenizer).train()
    from course.train.loop import enable_activation_checkpointing

    enable_activation_checkpointing(checkpointed)
    assert checkpointed.is_activation_checkpointing
    expected, _ = _grads_after(plain, None, [batch])
    got, _ = _grads_after(checkpointed, None, [batch])
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_evaluate_weights_every_sample_and_restores_train_mode(tokenizer):
    model = tiny_model(tokenizer).train()
    tokenized = tokenize(toy_rows(10), tokenizer, 32)
    loader = make_loader(tokenized, tokenizer, 4, shuffle=False)  # batches of 4, 4, 2
    scores = evaluate(model, loader)
    everything = next(iter(make_loader(tokenized, tokenizer, 10, shuffle=False)))
    with torch.no_grad():
        logits = model.eval()(**{k: v for k, v in everything.items() if k != "labels"}).logits
    model.train()
    expected_loss = torch.nn.functional.cross_entropy(logits, everything["labels"]).item()
    expected_acc = (logits.argmax(-1) == everything["labels"]).float().mean().item()
    assert scores["samples"] == 10
    assert scores["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(expected_acc)
    assert isinstance(scores["loss"], float) and isinstance(scores["accuracy"], float)
    assert model.training


def test_fit_learns_a_toy_task_and_reports_what_it_did(tokenizer):
    model = tiny_model(tokenizer)
    loaders = make_loaders(
        {"train": toy_rows(96), "validation": toy_rows(24)}, tokenizer, model, batch_size=8, max_length=32
    )
    before = evaluate(model, loaders["validation"])
    config = TrainConfig(steps=40, batch_size=8, grad_accum=2, lr=3e-3, eval_every=20)
    seen = []
    result = fit(
        model, loaders["train"], config, eval_loader=loaders["validation"], progress=False, on_step=seen.append
    )
    after = evaluate(model, loaders["validation"])
    assert after["accuracy"] >= 0.9 > before["accuracy"]
    assert after["loss"] < before["loss"] - 0.1
    assert [row["step"] for row in result.history] == list(range(1, 41)) == [row["step"] for row in seen]
    assert result.samples == 40 * 16
    assert [row["step"] for row in result.evaluations] == [20, 40]
    assert result.samples_per_s > 0 and result.step_time_s > 0
    assert result.peak_memory_mb >= result.baseline_memory_mb > 0
    assert result.memory_source == "process RSS"
    assert result.optimizer == "AdamW (fused)"  # torch >= 2.4 fuses AdamW on the CPU
    assert result.history[-1]["lr"] < result.history[0]["lr"]  # linear decay


def test_fit_turns_an_allocation_failure_into_one_line(tokenizer, monkeypatch):
    import course.train.loop as loop

    def no_room(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(loop, "train_step", no_room)
    model = tiny_model(tokenizer)
    loader = make_loaders({"train": toy_rows(8)}, tokenizer, model, batch_size=4, max_length=16)["train"]
    with pytest.raises(CourseError, match=r"batch size 4 x length \d+ does not fit in cpu memory"):
        fit(model, loader, TrainConfig(steps=1, batch_size=4), progress=False)


def test_other_runtime_errors_keep_their_traceback():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with fits_in_memory("batch size 4"):
            raise RuntimeError("shape mismatch")


# ------------------------------------------------------------------------- memory


def test_peak_memory_sees_a_short_lived_allocation():
    with PeakMemory("cpu", interval=0.001) as memory:
        block = torch.ones(64, 2**20)  # 256 MiB of float32, every page touched
        for _ in range(3):
            block.mul_(1.5)
        del block
    assert memory.extra_mb > 200
    assert memory.source == "process RSS"


def test_a_real_allocation_failure_is_a_course_error():
    with pytest.raises(CourseError, match="huge batch does not fit in cpu memory"):
        with fits_in_memory("huge batch"):
            torch.empty(2**44, dtype=torch.float32)  # 64 TiB


# --------------------------------------------------------------------------- plot


def test_live_plot_keeps_a_static_figure(tmp_path):
    plot = LivePlot(display=False)
    for step in range(1, 6):
        plot.log(step, loss=1.0 / step)
    plot.log(5, eval_loss=0.3, eval_accuracy=0.8)
    fig = plot.figure()
    loss_ax, acc_ax = fig.axes[:2]
    assert [line.get_label() for line in loss_ax.lines] == ["loss", "eval_loss"]
    assert [line.get_label() for line in acc_ax.lines] == ["eval_accuracy"]
    path = plot.save(tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_live_plot_lines_keep_their_colour_and_the_legend_its_place():
    """The bug: sorting by name put eval_loss first once it appeared, so the loss line changed colour at step 40."""
    plot = LivePlot(display=False)
    plot.log(1, loss=0.7)
    before = plot.figure().axes[0]
    plot.log(2, loss=0.6)
    plot.log(2, eval_loss=0.65, eval_accuracy=0.7)
    after = plot.figure().axes[0]
    colour = {line.get_label(): line.get_color() for line in after.lines}
    assert before.lines[0].get_color() == colour["loss"] != colour["eval_loss"]
    assert before.get_legend()._loc == after.get_legend()._loc


def test_live_plot_says_what_the_empty_accuracy_panel_waits_for():
    plot = LivePlot(display=False)
    plot.log(1, loss=0.7)
    texts = [text.get_text() for text in plot.figure().axes[1].texts]
    assert texts == ["accuracy appears after\nthe first evaluation"]
    plot.log(1, eval_accuracy=0.5)
    assert list(plot.figure().axes[1].texts) == []


def test_live_plot_draws_an_evaluation_at_once_and_big_enough(monkeypatch):
    plot = LivePlot(display=True, every_seconds=3600)
    drawn = []

    def show():  # what _show does, minus the drawing
        drawn.append(len(plot.history))
        plot._last_draw, plot._wait = time.monotonic(), plot.every_seconds

    monkeypatch.setattr(plot, "_show", show)
    plot.log(1, loss=0.7)  # the first point draws
    plot.log(2, loss=0.6)  # too soon: waits
    plot.log(2, eval_loss=0.6, eval_accuracy=0.7)  # an evaluation draws at once
    assert drawn == [1, 3]
    assert plot.DPI >= 100 and plot.FIGSIZE[0] >= 9


# ------------------------------------------------------------------ save and reload


def test_saved_model_reloads_as_a_text_classification_pipeline(tmp_path):
    from course.assets import load_model, load_tokenizer
    from course.train import reload_pipeline, save_model

    torch.manual_seed(0)
    model, tokenizer = load_model(task="sequence-classification"), load_tokenizer()
    folder = save_model(model, tokenizer, tmp_path / "model")
    pipe, choice = reload_pipeline(folder, device="cpu")
    assert choice.device.type == "cpu"
    texts = ["A lovely, warm film.", "The room was filthy."]
    answers = pipe(texts)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**encoded).logits.softmax(-1)
    for answer, row in zip(answers, probabilities, strict=True):
        assert answer["label"] == ["negative", "positive"][int(row.argmax())]
        assert answer["score"] == pytest.approx(row.max().item(), abs=1e-5)


def test_reload_keeps_the_saved_label_names(tmp_path, tokenizer):
    from course.train import reload_pipeline, save_model

    model = tiny_model(tokenizer)
    model.config.id2label, model.config.label2id = {0: "bad", 1: "good"}, {"bad": 0, "good": 1}
    pipe, _ = reload_pipeline(save_model(model, tokenizer, tmp_path / "m"), device="cpu")
    assert {answer["label"] for answer in pipe(["fine", "awful", "great"])} <= {"bad", "good"}
    assert pipe.model.config.id2label == {0: "bad", 1: "good"}


def test_reload_from_an_empty_folder_says_what_is_missing(tmp_path):
    from course.train import reload_pipeline

    with pytest.raises(CourseError, match="config.json missing"):
        reload_pipeline(tmp_path)


# --------------------------------------------------------------------- Trainer recipe


def test_training_arguments_use_transformers_5_names(tmp_path):
    from course.train.trainer import training_arguments

    args = training_arguments(TrainConfig(steps=7, batch_size=4, grad_accum=2, eval_every=5), tmp_path, "cpu")
    assert args.use_cpu and args.max_steps == 7 and args.gradient_accumulation_steps == 2
    assert args.average_tokens_across_devices is False
    assert args.optim.value == "adamw_torch_fused"
    assert args.eval_strategy.value == "steps" and args.eval_steps == 5
    assert args.report_to in ([], "none", ["none"])
    assert not args.bf16 and not args.fp16


def test_trainer_recipe_runs_the_same_steps(tmp_path, tokenizer):
    from course.train.trainer import trainer_finetune

    model = tiny_model(tokenizer)
    train = tokenize(toy_rows(32), tokenizer, 32)
    valid = tokenize(toy_rows(8), tokenizer, 32)
    assert isinstance(train, TokenizedDataset)
    config = TrainConfig(steps=6, batch_size=4, lr=3e-3)
    run = trainer_finetune(model, tokenizer, train, config, output_dir=tmp_path, eval_dataset=valid)
    assert [row["step"] for row in run.history] == list(range(1, 7))
    assert run.samples == 24 and run.samples_per_s > 0
    assert 0.0 <= run.evaluation["accuracy"] <= 1.0
    assert "fused" in run.optimizer


# ------------------------------------------------------------------- profile table


def test_profile_settings_rows(tokenizer):
    from course.train.profile import format_table, profile_settings

    model = tiny_model(tokenizer)
    settings = [
        {"batch_size": 4, "max_length": 16},
        {"batch_size": 2, "max_length": 32, "grad_accum": 2, "activation_checkpointing": True},
    ]
    rows = profile_settings(model, tokenizer, toy_rows(16), settings, steps=2)
    assert [row["setting"] for row in rows] == ["b4 L16", "b2x2 L32 ckpt"]
    assert [row["samples_per_step"] for row in rows] == [4, 4]
    assert all(row["step_time_s"] > 0 and row["peak_mb"] > 0 for row in rows)
    assert not model.is_activation_checkpointing  # the model itself is untouched
    assert format_table(rows).count("\n") == 3
    with pytest.raises(CourseError, match=r"unknown setting key\(s\) \['batch'\]"):
        profile_settings(model, tokenizer, toy_rows(4), [{"batch": 4, "max_length": 8}])


# ------------------------------------------------------------------------ the script


def test_script_refuses_a_wrong_process_count_before_loading_anything(capsys, monkeypatch):
    from course.train.script import main

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["--expect-processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "runs ONE process" in err
    assert "error: expected 2 processes but 1 started (accelerate launch --cpu runs one)" in err


def test_script_single_process_writes_its_reports(tmp_path):
    from course.train.script import main

    assert (
        main(
            [
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--max-length",
                "32",
                "--out",
                str(tmp_path),
                "--no-progress",
                "--device",
                "cpu",
                "--save",
            ]
        )
        == 0
    )
    rank = json.loads((tmp_path / "rank0.json").read_text())
    result = json.loads((tmp_path / "result.json").read_text())
    assert rank["world_size"] == 1 and rank["steps"] == 2 and rank["samples_this_process"] == 8
    assert rank["final_checksum"] != rank["initial_checksum"]
    assert result["eval_split"] == "validation" and result["eval"]["samples"] == 120
    assert (tmp_path / "model" / "config.json").is_file()


# --------------------------------------------------------------- launching processes


def _gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("gpus", [0, 1])
def test_a_machine_with_fewer_than_two_gpus_launches_cpu_processes(monkeypatch, gpus):
    """The bug: a one-GPU machine was told to run torchrun --nproc_per_node 2 on the GPU, which cannot work."""
    from course.train.script import launch_plan, shell_line, torchrun_command

    _gpus(monkeypatch, gpus)
    plan = launch_plan(cpus=8)
    assert (plan.processes, plan.device, plan.backend, plan.threads_per_process) == (2, "cpu", "gloo", 4)
    assert f"{gpus} GPU(s) visible" in plan.reason
    line = shell_line(torchrun_command(plan, ["--steps", "10"]))
    assert line == "torchrun --nproc_per_node 2 -m course.train --steps 10 --device cpu"
    assert str(plan) == "2 CPU processes (backend gloo, 4 thread(s) each)"
    command = torchrun_command(plan, ["--steps", "10", "--batch-size", "8"])
    wrapped = shell_line(command, width=40)
    assert all(len(part) <= 40 for part in wrapped.splitlines()) and wrapped.count("\n") >= 2
    assert wrapped.replace(" \\\n    ", " ") == shell_line(command)  # the same words, continued with backslashes


def test_several_gpus_get_one_process_each(monkeypatch):
    from course.train.script import accelerate_command, launch_plan, shell_line

    _gpus(monkeypatch, 4)
    plan = launch_plan(cpus=16)
    assert (plan.processes, plan.device, plan.backend, plan.threads_per_process) == (4, "cuda", "nccl", 4)
    assert launch_plan(2).processes == 2
    assert shell_line(accelerate_command(plan, ["--steps", "5"])).startswith(
        "accelerate launch --multi_gpu --num_processes 4 "
    )
    with pytest.raises(CourseError, match="8 processes need 8 GPUs, 4 visible"):
        launch_plan(8, device="cuda")
    assert launch_plan(8).device == "cpu"  # auto: more processes than GPUs share the CPU


def test_asking_for_gpu_processes_without_enough_gpus_is_one_line(monkeypatch):
    from course.train.script import launch_plan

    _gpus(monkeypatch, 1)
    with pytest.raises(CourseError, match="2 GPU processes need 2 GPUs, 1 visible"):
        launch_plan(device="cuda")
    with pytest.raises(CourseError, match="processes must be a positive integer"):
        launch_plan(0)
    with pytest.raises(CourseError, match="unknown device 'tpu'"):
        launch_plan(device="tpu")


def test_results_of_a_launch_are_read_and_checked(tmp_path):
    from course.train.script import LaunchPlan, LaunchResult, read_results

    for rank in (0, 1):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": 2, "final_checksum": 1.5}))
    (tmp_path / "result.json").write_text(json.dumps({"world_size": 2}))
    ranks, result = read_results(tmp_path, 2)
    assert [r["rank"] for r in ranks] == [0, 1] and result["world_size"] == 2
    assert LaunchResult(LaunchPlan(2, "cpu", 1, "test"), [], 1.0, ranks, result).in_sync
    (tmp_path / "rank1.json").unlink()
    with pytest.raises(CourseError, match="left no complete report"):
        read_results(tmp_path, 2)


def test_a_failed_launch_reports_the_processes_error_line(monkeypatch, tmp_path):
    from course.train import script

    class Done:
        returncode = 1
        stdout = ""
        stderr = "Traceback...\ncourse.train (process 0): error: max_length must be an integer >= 2, got 1\nmore\n"

    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: Done())
    plan = script.LaunchPlan(2, "cpu", 1, "test")
    failed = r"2-process run failed \(exit 1\): course.train \(process 0\): error: max_length"
    with pytest.raises(CourseError, match=failed):
        script.launch(plan, ["--max-length", "1"], tmp_path)
    with pytest.raises(CourseError, match="unknown launcher 'mpirun'"):
        script.launch(plan, [], tmp_path, launcher="mpirun")


# ------------------------------------------------------------ the exercises' checkers


def _reference_answer():
    """Notebook 03's exercise solved (accumulate, autocast, one step, zero the gradients), as its reference answer
    in tests/exercises/03_finetuning.py writes it: the function a student's ``my_train_step`` is checked against."""
    from test_exercises import answers_for

    namespace: dict = {}
    exec(answers_for(Path("03_finetuning.ipynb"))["train_step_by_hand"], namespace)
    return namespace["my_train_step"]


def _micro_batches(tokenizer, n=2, size=4):
    loader = make_loader(tokenize(toy_rows(n * size), tokenizer, 32), tokenizer, size, shuffle=False)
    return list(loader)[:n]


def test_same_update_accepts_a_correct_step_with_bf16_autocast(tokenizer):
    from course.train.loop import same_update

    autocast = autocast_context("cpu", choose_precision("bf16", "cpu"))
    assert same_update(_reference_answer(), tiny_model(tokenizer), _micro_batches(tokenizer), autocast) is True


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("no_division", "moved 2.00x as far.*divide each micro-batch loss"),
        ("no_autocast", "under `with autocast:`"),
        ("no_zero_grad", "gradients are left in .grad"),
        ("no_step", "moved 0.00x as far.*call optimizer.step"),
        ("returns_list", "return the step's mean loss"),
    ],
)
def test_same_update_names_the_mistake(tokenizer, mistake, message):
    from course.train.loop import same_update

    def wrong(model, micro_batches, optimizer, autocast):
        losses = []
        for batch in micro_batches:
            with autocast if mistake != "no_autocast" else torch.autocast("cpu", enabled=False):
                loss = model(**batch).loss
            (loss if mistake == "no_division" else loss / len(micro_batches)).backward()
            losses.append(loss.item() / len(micro_batches))
        if mistake != "no_step":
            optimizer.step()
        if mistake != "no_zero_grad":
            optimizer.zero_grad()
        return losses if mistake == "returns_list" else sum(losses)

    autocast = autocast_context("cpu", choose_precision("bf16", "cpu"))
    with pytest.raises(CourseError, match=message):
        same_update(wrong, tiny_model(tokenizer), _micro_batches(tokenizer), autocast)


def test_fixed_memory_is_parameters_times_4_4_8_bytes(tokenizer):
    from course.train.profile import fixed_memory, format_table

    model = tiny_model(tokenizer)
    params = sum(p.numel() for p in model.parameters())
    fixed = fixed_memory(model)
    assert fixed["parameters"] == params
    assert fixed["training_extra_mb"] == pytest.approx(params * 12 / 2**20)
    assert fixed["total_mb"] == pytest.approx(params * 16 / 2**20)
    row = {
        "setting": "b8 L64",
        "samples_per_step": 8,
        "step_time_s": 0.5,
        "samples_per_s": 16.0,
        "peak_mb": 900.0,
        "extra_mb": 300.0,
        "memory": "process RSS",
    }
    table = format_table([row], fixed_mb=260.0)
    assert table.splitlines()[0].endswith("fixed (MiB) | grows (MiB) |")
    assert table.splitlines()[2].endswith("| 260 | 40 |")


def test_minilm_fixed_memory_is_about_270_mb():
    """The figure the lesson quotes: 22.7 M parameters x 12 bytes of gradients and AdamW state."""
    from course.assets import load_model
    from course.quiet import expected_load_report
    from course.train.profile import fixed_memory

    with expected_load_report():
        fixed = fixed_memory(load_model(task="sequence-classification"))
    assert 22.5e6 < fixed["parameters"] < 23e6
    assert 265e6 < fixed["training_extra_mb"] * 2**20 < 280e6


def test_compare_recipes_runs_both_at_the_same_steps(tmp_path, tokenizer):
    from course.train.trainer import compare_recipes, recipe_summary

    model = tiny_model(tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    train = tokenize(toy_rows(32), tokenizer, 32)
    rows = compare_recipes(model, tokenizer, train, TrainConfig(steps=3, batch_size=4), output_dir=tmp_path, repeats=2)
    runs = [(row["recipe"], row["repeat"]) for row in rows]
    assert runs == [("loop", 1), ("Trainer", 1), ("Trainer", 2), ("loop", 2)]  # ABBA: load drift favours neither
    assert all(row["samples_per_s"] == pytest.approx(12 / row["seconds"]) for row in rows)
    summary = recipe_summary(rows)
    assert set(summary) == {"loop", "Trainer"}
    assert all(s["min"] <= s["median"] <= s["max"] for s in summary.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # each run used a copy


def test_activation_checkpointing_on_an_encoder_gives_no_cache_warning(tokenizer, caplog):
    """transformers warned "`use_cache=True` is incompatible with gradient checkpointing" on an encoder (no cache)."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # an earlier test may have used up the one warning
    model = tiny_model(tokenizer)
    model.config.use_cache = True
    loader = make_loader(tokenize(toy_rows(8), tokenizer, 32), tokenizer, 4)
    logger = hf_logging.get_logger("transformers")
    logger.addHandler(caplog.handler)
    try:
        fit(model, loader, TrainConfig(steps=1, batch_size=4, activation_checkpointing=True), progress=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert not [r.getMessage() for r in caplog.records if "checkpointing" in r.getMessage()]
