"""ps3_finetuning: autocast, accumulation, fp16 with a GradScaler and clipping, evaluation (test_assignments cases)."""

from nbgrader_harness import course_shortcuts, mistake

ASSIGNMENT = "ps3_finetuning"
POINTS = {
    "test_autocast": 2,
    "test_train_step_single": 1,
    "test_train_step_accumulation": 3,
    "test_train_step_autocast": 1,
    "test_scaled_step_order": 1,
    "test_scaled_step_values": 2,
    "test_scaled_step_overflow": 1,
    "test_evaluate_values": 2,
    "test_evaluate_mode": 1,
}

#: Forgets to divide: the accumulated gradient is n times too large (the reported loss is still the mean).
NO_DIVISION = mistake(
    ASSIGNMENT,
    "train_step",
    ("loss = model(**batch).loss / len(micro_batches)", "loss = model(**batch).loss"),
    ("total += loss.item()", "total += loss.item() / len(micro_batches)"),
)

#: Steps after every micro-batch: that is n small steps, not accumulation.
STEP_PER_MICRO_BATCH = mistake(
    ASSIGNMENT,
    "train_step",
    (
        "        total += loss.item()\n    optimizer.step()\n    optimizer.zero_grad()\n",
        "        optimizer.step()\n        optimizer.zero_grad()\n        total += loss.item()\n",
    ),
)

#: Correct arithmetic, but the forward pass never runs in the precision context.
IGNORES_AUTOCAST = mistake(
    ASSIGNMENT,
    "train_step",
    (
        "        with autocast:\n            loss = model(**batch).loss / len(micro_batches)\n",
        "        loss = model(**batch).loss / len(micro_batches)\n",
    ),
)

#: Clips the scaled gradients, then unscales: the clip acts on numbers S times too large.
CLIP_BEFORE_UNSCALE = mistake(
    ASSIGNMENT,
    "scaled_train_step",
    (
        "    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n",
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n    scaler.unscale_(optimizer)\n",
    ),
)
NO_CLIPPING = mistake(
    ASSIGNMENT, "scaled_train_step", ("    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n", "")
)
#: Right numbers on a good step, but an overflowing step is applied instead of skipped.
OPTIMIZER_STEPS_DIRECTLY = mistake(ASSIGNMENT, "scaled_train_step", ("scaler.step(optimizer)", "optimizer.step()"))
FORGETS_UPDATE = mistake(ASSIGNMENT, "scaled_train_step", ("    scaler.update()\n", ""))

# The wrong evaluate()s below are other ways to write the loop, not the solution with one
# thing changed: each is spelled out whole, as a student would write it.

MEAN_OF_BATCH_MEANS = '''
def evaluate(model, loader):
    """Averages per-batch means: a small last batch counts as much as a full one."""
    was_training = model.training
    model.eval()
    losses, accuracies = [], []
    with torch.no_grad():
        for batch in loader:
            labels = batch["labels"]
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            losses.append(torch.nn.functional.cross_entropy(logits, labels).item())
            accuracies.append((logits.argmax(-1) == labels).float().mean().item())
    model.train(was_training)
    return {"loss": sum(losses) / len(losses), "accuracy": sum(accuracies) / len(accuracies)}
'''

FORGETS_EVAL_MODE = '''
def evaluate(model, loader):
    """Right numbers for a model without dropout, but dropout stays on and a graph is built."""
    loss_sum, correct, count = 0.0, 0, 0
    for batch in loader:
        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        count += len(labels)
    return {"loss": loss_sum / count, "accuracy": correct / count}
'''

TENSOR_RESULTS = '''
def evaluate(model, loader):
    """Right values, but tensors instead of Python floats."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in loader])
    labels = torch.cat([b["labels"] for b in loader])
    model.train(was_training)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return {"loss": torch.nn.functional.cross_entropy(logits, labels), "accuracy": accuracy}
'''

MISTAKES = {
    "no_division": ({"train_step": NO_DIVISION}, {"test_train_step_accumulation": 0}),
    "step_per_micro_batch": ({"train_step": STEP_PER_MICRO_BATCH}, {"test_train_step_accumulation": 0}),
    "ignores_autocast": ({"train_step": IGNORES_AUTOCAST}, {"test_train_step_autocast": 0}),
    "clip_before_unscale": ({"scaled_train_step": CLIP_BEFORE_UNSCALE}, {"test_scaled_step_values": 0}),
    "no_clipping": ({"scaled_train_step": NO_CLIPPING}, {"test_scaled_step_values": 0}),
    "optimizer_steps_directly": (
        {"scaled_train_step": OPTIMIZER_STEPS_DIRECTLY},
        {"test_scaled_step_order": 0, "test_scaled_step_overflow": 0},
    ),
    "forgets_update": (
        {"scaled_train_step": FORGETS_UPDATE},
        {"test_scaled_step_order": 0, "test_scaled_step_overflow": 0},
    ),
    "mean_of_batch_means": ({"evaluate": MEAN_OF_BATCH_MEANS}, {"test_evaluate_values": 0}),
    "forgets_eval_mode": ({"evaluate": FORGETS_EVAL_MODE}, {"test_evaluate_mode": 0}),
    "tensor_results": ({"evaluate": TENSOR_RESULTS}, {"test_evaluate_values": 0}),
}

#: The course's own evaluation (course.train.loop), reached by every route.
SHORTCUTS = course_shortcuts(
    "course.train.loop",
    ["evaluate"],
    "evaluate",
    """
def evaluate(model, loader):
    result = lib.evaluate(model, loader)
    return {"loss": result["loss"], "accuracy": result["accuracy"]}
""",
    {"test_evaluate_values": 0, "test_evaluate_mode": 0},
)
