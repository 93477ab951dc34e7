"""Problem set 4 (LoRA by hand, checked against peft): points and typical mistakes.

Read by the shared assignment harness (``tests/test_assignments.py``).  Each mistake replaces the
named solution cells (nbgrader ``grade_id``) and lists the tests it must
fail; every test not listed keeps its full points.

The wrong ``LoRALinear`` classes are the instructor's solution with one
thing changed (``nbgrader_harness.mistake`` fails loudly if the solution no
longer contains the text it changes), so they stay in step with the notebook.
"""

from nbgrader_harness import mistake

ASSIGNMENT = "ps4_adapters"

POINTS = {
    "test_lora_init": 2,
    "test_lora_forward": 2,
    "test_lora_grads": 1,
    "test_merge": 2,
    "test_apply_lora": 2,
    "test_count_trainable": 1,
    "test_peft_parity": 2,
}

SCALED = "(self.lora_B @ self.lora_A) * self.scaling"

# Forgets alpha / r in forward and merge: the update has the wrong size (merge is at least consistent).
NO_SCALING = mistake(
    ASSIGNMENT,
    "lora_linear",
    (
        "(self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling",
        "self.dropout(x) @ self.lora_A.T @ self.lora_B.T",
    ),
    (SCALED, "self.lora_B @ self.lora_A"),
)

# Initialises B at random too: the wrapped model no longer starts as the pretrained one.
B_RANDOM = mistake(
    ASSIGNMENT,
    "lora_linear",
    (
        "nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
        "nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))\n"
        "        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))",
    ),
)

# merge() folds the update into W but forward still adds the low-rank path: counted twice.
MERGE_COUNTS_TWICE = mistake(ASSIGNMENT, "lora_linear", ("        if self.merged:\n            return result\n", ""))

# No ValueError for r <= 0 or alpha <= 0 (only the hidden tests check it).
NO_VALIDATION = mistake(
    ASSIGNMENT,
    "lora_linear",
    ("if isinstance(r, bool) or not isinstance(r, int) or r <= 0:", "if False:"),
    ("if not alpha > 0:", "if False:"),
)

COUNTS_TENSORS = '''
def count_trainable(model):
    """Counts tensors, not the numbers in them."""
    params = list(model.parameters())
    return sum(1 for p in params if p.requires_grad), len(params)
'''

MISTAKES = {
    "no_scaling": ({"lora_linear": NO_SCALING}, {"test_lora_forward": 0, "test_merge": 0, "test_peft_parity": 0}),
    "b_random_init": ({"lora_linear": B_RANDOM}, {"test_lora_init": 0}),
    "merge_counts_twice": ({"lora_linear": MERGE_COUNTS_TWICE}, {"test_merge": 0, "test_peft_parity": 0}),
    "no_validation": ({"lora_linear": NO_VALIDATION}, {"test_lora_init": 0}),
    "counts_tensors": ({"count_trainable": COUNTS_TENSORS}, {"test_count_trainable": 0}),
}
