"""Problem set 3 (a training step and an evaluation), end to end through nbgrader.

The source passes every test, the released stubs fail every one, and
typical mistakes lose exactly the points of the tests they break.
"""

import nbformat
import pytest
from nbgrader_harness import autograde, course_copy, fill_solutions, generate, run_tests, source_solutions

ASSIGNMENT = "ps3_finetuning"
POINTS = {
    "test_autocast": 2,
    "test_train_step_single": 1,
    "test_train_step_accumulation": 3,
    "test_train_step_autocast": 1,
    "test_evaluate_values": 2,
    "test_evaluate_mode": 1,
}

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


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course_dir = course_copy(tmp_path_factory.mktemp("ps3"), ASSIGNMENT)
    return course_dir, generate(course_dir, ASSIGNMENT)


@pytest.fixture(scope="module")
def answers(course):
    course_dir, _ = course
    return source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")


@pytest.fixture(scope="module")
def submissions(course, answers, tmp_path_factory):
    _, release_nb = course
    folder = tmp_path_factory.mktemp("subs")
    variants = {
        "correct": {},
        "no_division": {"train_step": NO_DIVISION},
        "step_per_micro_batch": {"train_step": STEP_PER_MICRO_BATCH},
        "ignores_autocast": {"train_step": IGNORES_AUTOCAST},
        "mean_of_batch_means": {"evaluate": MEAN_OF_BATCH_MEANS},
        "forgets_eval_mode": {"evaluate": FORGETS_EVAL_MODE},
        "tensor_results": {"evaluate": TENSOR_RESULTS},
    }
    notebooks = {"stub": release_nb}
    for student, changes in variants.items():
        notebooks[student] = fill_solutions(release_nb, {**answers, **changes}, folder / f"{student}.ipynb")
    return notebooks


@pytest.fixture(scope="module")
def grades(course, submissions):
    course_dir, _ = course
    return autograde(course_dir, ASSIGNMENT, submissions)


def expected(*zeroed: str) -> dict[str, int]:
    return {grade_id: (0 if grade_id in zeroed else points) for grade_id, points in POINTS.items()}


@pytest.mark.slow
def test_source_passes_and_stubs_fail(course):
    course_dir, release_nb = course
    assert run_tests(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb") == {gid: True for gid in POINTS}
    assert run_tests(release_nb) == {gid: False for gid in POINTS}


@pytest.mark.slow
def test_release_hides_solutions_and_hidden_tests(course):
    _, release_nb = course
    cells = nbformat.read(release_nb, as_version=4).cells
    text = "\n".join(cell.source for cell in cells)
    assert "HIDDEN TESTS" not in text and "4 micro-batches of 2" not in text
    assert "BEGIN SOLUTION" not in text and "reduction=\"sum\").item()" not in text
    stubs = {
        cell.metadata.nbgrader.grade_id: cell.source.count("raise NotImplementedError()")
        for cell in cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    assert stubs == {"autocast": 1, "train_step": 1, "evaluate": 1}


@pytest.mark.slow
def test_autograde_full_marks_for_the_correct_answers(grades):
    assert grades["correct"]["grades"] == expected()
    assert grades["correct"]["score"] == grades["correct"]["max_score"] == sum(POINTS.values())


@pytest.mark.slow
def test_autograde_zero_for_stubs(grades):
    assert grades["stub"]["grades"] == expected(*POINTS)
    assert grades["stub"]["score"] == 0


@pytest.mark.slow
def test_autograde_partial_marks_for_typical_mistakes(grades):
    """Each mistake loses exactly the points of the tests it breaks."""
    assert grades["no_division"]["grades"] == expected("test_train_step_accumulation")
    assert grades["step_per_micro_batch"]["grades"] == expected("test_train_step_accumulation")
    assert grades["ignores_autocast"]["grades"] == expected("test_train_step_autocast")
    assert grades["mean_of_batch_means"]["grades"] == expected("test_evaluate_values")
    assert grades["forgets_eval_mode"]["grades"] == expected("test_evaluate_mode")
    assert grades["tensor_results"]["grades"] == expected("test_evaluate_values")
    assert [grades[s]["score"] for s in ("no_division", "ignores_autocast", "mean_of_batch_means")] == [7, 9, 8]
