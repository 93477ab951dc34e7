"""ps3_finetuning: autocast, accumulation, fp16 with a GradScaler and clipping, evaluation (test_assignments cases)."""

from nbgrader_harness import GRADING, course_shortcuts, source_solutions

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

_ANSWERS = source_solutions(GRADING / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")

NO_DIVISION = '''
def train_step(model, micro_batches, optimizer, autocast):
    """Forgets to divide: the accumulated gradient is n times too large."""
    total = 0.0
    for batch in micro_batches:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        total += loss.item() / len(micro_batches)
    optimizer.step()
    optimizer.zero_grad()
    return total
'''

STEP_PER_MICRO_BATCH = '''
def train_step(model, micro_batches, optimizer, autocast):
    """Steps after every micro-batch: that is n small steps, not accumulation."""
    total = 0.0
    for batch in micro_batches:
        with autocast:
            loss = model(**batch).loss / len(micro_batches)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.item()
    return total
'''

IGNORES_AUTOCAST = '''
def train_step(model, micro_batches, optimizer, autocast):
    """Correct arithmetic, but the forward pass never runs in the precision context."""
    total = 0.0
    for batch in micro_batches:
        loss = model(**batch).loss / len(micro_batches)
        loss.backward()
        total += loss.item()
    optimizer.step()
    optimizer.zero_grad()
    return total
'''

#: Clips the scaled gradients, then unscales: the clip acts on numbers S times too large.
CLIP_BEFORE_UNSCALE = _ANSWERS["scaled_train_step"].replace(
    "    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n",
    "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n    scaler.unscale_(optimizer)\n",
)
NO_CLIPPING = _ANSWERS["scaled_train_step"].replace(
    "    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n", ""
)
#: Right numbers on a good step, but an overflowing step is applied instead of skipped.
OPTIMIZER_STEPS_DIRECTLY = _ANSWERS["scaled_train_step"].replace("scaler.step(optimizer)", "optimizer.step()")
FORGETS_UPDATE = _ANSWERS["scaled_train_step"].replace("    scaler.update()\n", "")
for _wrong in (CLIP_BEFORE_UNSCALE, NO_CLIPPING, OPTIMIZER_STEPS_DIRECTLY, FORGETS_UPDATE):
    assert _wrong != _ANSWERS["scaled_train_step"]

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
