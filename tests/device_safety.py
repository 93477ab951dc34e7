"""Find tensors built on the CPU that meet tensors on the chosen device, without a GPU.

The bug this hunts, from lesson 01 (step 6)::

    probs = scores.softmax(dim=-1)                              # on the chosen device
    torch.allclose(probs.sum(-1), torch.ones(1, heads, seq))    # ones on the CPU

On a CPU machine both tensors are on the CPU and all is well; on CUDA or MPS
the second line raises "Expected all tensors to be on the same device".  CI
has no GPU, so the bug can only be caught by reading the code.

The rule, checked statically on every code cell and every library module:

    a tensor *factory* (``torch.ones``, ``zeros``, ``full``, ``arange``,
    ``eye``, ``rand*``, ``tensor``, ``empty``, ``linspace`` ...) called
    without ``device=`` must not *meet* another tensor: be an operand of an
    arithmetic or comparison operator, or an argument of a torch function
    or tensor method, next to a value that is not known to be on the CPU.

"Meeting" also follows names and attributes: ``ones = torch.ones(3)`` then
``x + ones``; a module built without ``device=`` (``base = nn.Linear(8, 6)``)
is on the CPU, and so are ``base.weight`` and ``base(x)``.  Known *not* to
be on a device: Python numbers (literals, ``math.*``, ``len``, names bound
to them, loop variables over ``range`` or a list of numbers), strings and
containers, metadata (``.shape``, ``.dtype``), and anything ending in
``.cpu()``, ``.numpy()``, ``.tolist()`` or ``.item()``.  A value computed
only from CPU-made values and never moved (``mask.sum(dim=1)``, no ``.to``)
is on the CPU as well, so an all-CPU test cell raises nothing.

The fix is always the same and always harmless:
``torch.ones(..., device=probs.device)``.

A static scan cannot see types, so it errs on the side of asking for
``device=``, and it cannot follow a tensor through a function's return
value.  ``tests/test_device_safety.py`` therefore also runs the library's
attention code on tensors of another device (``meta``), and shows with
torch's ``FakeTensorMode`` (fake CUDA tensors on a CPU-only build) that the
original lesson-01 line raises.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

#: torch functions that create a tensor from scratch, on the CPU unless told otherwise.
FACTORIES = frozenset(
    {
        "ones",
        "zeros",
        "full",
        "empty",
        "eye",
        "arange",
        "linspace",
        "logspace",
        "rand",
        "randn",
        "randint",
        "randperm",
        "tensor",
        "as_tensor",
        "from_numpy",
        "tril_indices",
        "triu_indices",
    }
)
#: Tensor methods and torch functions whose tensor arguments must share a device.
MEETING_METHODS = frozenset(
    {
        "add",
        "sub",
        "mul",
        "div",
        "matmul",
        "mm",
        "bmm",
        "mv",
        "dot",
        "masked_fill",
        "masked_fill_",
        "where",
        "gather",
        "scatter",
        "index_select",
        "copy_",
        "expand_as",
        "type_as",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "equal",
        "allclose",
        "isclose",
        "maximum",
        "minimum",
        "cat",
        "stack",
        "einsum",
        "assert_close",
    }
)
#: Calls at the end of an expression that leave it on the CPU.
TO_CPU = frozenset({"cpu", "numpy", "tolist", "item"})
#: Attributes and methods of a tensor or module that are not tensors (metadata, Python numbers).
NOT_TENSORS = frozenset(
    {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "training", "dim", "size", "numel", "scaling"}
)
#: Namespaces whose functions take Python numbers, never tensors on a device.
PLAIN_NAMESPACES = frozenset({"math", "np", "numpy", "statistics", "random"})
#: Calls that move a tensor to another device.
MOVES = frozenset({"to", "cuda", "mps"})
#: Chained calls that keep a factory's result where it was made.
KEEPS_DEVICE = frozenset(
    {"tril", "triu", "bool", "float", "double", "half", "long", "int", "unsqueeze", "view", "reshape", "expand", "T"}
)


@dataclass(frozen=True)
class Finding:
    """One place where a CPU-made tensor meets another tensor."""

    where: str  # "notebooks/01_attention.ipynb cell 14" or "course/x.py"
    line: int  # line inside the cell (1-based) or the file
    code: str  # the offending source line, stripped

    def __str__(self) -> str:
        return f"{self.where}, line {self.line}: {self.code}"


def _in_torch(node: ast.AST) -> bool:
    """``torch``, ``torch.testing``, ``torch.nn.functional``, ``F``: a namespace, not a tensor."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in {"torch", "th", "F"}


def _is_torch_attr(node: ast.AST, names: frozenset[str]) -> bool:
    """``torch.<name>(...)`` (also ``torch.testing.<name>``, ``F.<name>``) for a name in ``names``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in names
        and _in_torch(node.func.value)
    )


def _deviceless_factory(node: ast.AST) -> bool:
    """A factory call without ``device=`` (``**kwargs`` counts as maybe having one), or a chain on one."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in KEEPS_DEVICE:
        node = node.func.value
    if not (_is_torch_attr(node, FACTORIES) or _is_module_constructor(node)):
        return False
    return not any(keyword.arg in (None, "device") for keyword in node.keywords)


def _is_module_constructor(node: ast.AST) -> bool:
    """``nn.Linear(8, 6)`` or ``torch.nn.Linear(8, 6)``: a module whose parameters start on the CPU."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    owner = node.func.value
    if isinstance(owner, ast.Name):
        return owner.id == "nn"
    return (
        isinstance(owner, ast.Attribute)
        and owner.attr == "nn"
        and isinstance(owner.value, ast.Name)
        and (owner.value.id == "torch")
    )


class _Scanner(ast.NodeVisitor):
    """Collect the lines where a device-less factory (or a name bound to one) meets another value."""

    def __init__(self, cpu_names: set[str] | None = None, scalars: set[str] | None = None) -> None:
        self.cpu_names: set[str] = set() if cpu_names is None else cpu_names
        self.scalars: set[str] = set() if scalars is None else scalars  # names bound to Python numbers
        self.lines: list[int] = []

    def _scalar(self, node: ast.AST) -> bool:
        """A Python number (never on a device): ``2``, ``d_try``, ``math.sqrt(d)``, ``len(x) * 2``."""
        if isinstance(node, ast.Constant):
            return isinstance(node.value, int | float)
        if isinstance(node, ast.Name):
            return node.id in self.scalars
        if isinstance(node, ast.UnaryOp):
            return self._scalar(node.operand)
        if isinstance(node, ast.BinOp):
            return self._scalar(node.left) and self._scalar(node.right)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math":
                return True
            return isinstance(func, ast.Name) and func.id in {"len", "int", "float", "round", "abs"}
        return False

    def _numbers(self, node: ast.AST) -> bool:
        """An iterable of Python numbers: ``range(n)``, ``[16, 64]``, or a name bound to such a list."""
        if isinstance(node, ast.List | ast.Tuple):
            return all(self._scalar(item) for item in node.elts)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            return True
        return isinstance(node, ast.Name) and node.id in self.scalars

    # ---- what a value is
    def _cpu_made(self, node: ast.AST) -> bool:
        """Built on the CPU: a device-less factory or module, a name bound to one, or read off one.

        ``base.weight``, ``base.weight.detach()`` and ``layer(x)`` are on the CPU when ``base`` and
        ``layer`` are CPU modules (a ``.to(...)`` or ``.cuda()`` on the way moves them off).
        """
        if isinstance(node, ast.UnaryOp):  # ~mask, -ones
            return self._cpu_made(node.operand)
        if _deviceless_factory(node) or (isinstance(node, ast.Name) and node.id in self.cpu_names):
            return True
        if isinstance(node, ast.Attribute):
            return node.attr not in NOT_TENSORS and self._cpu_made(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            return method not in MOVES | TO_CPU | NOT_TENSORS and self._cpu_made(node.func.value)
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.cpu_names

    def _derived_cpu(self, node: ast.AST) -> bool:
        """Computed from CPU-made values, and never moved: ``mask.sum(dim=1)`` for a CPU ``mask``."""
        made = False
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in MOVES:
                return False
            if isinstance(sub, ast.keyword) and sub.arg == "device":
                return False
            made = made or self._cpu_made(sub)
        return made

    def _known_cpu(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Constant | ast.Set | ast.Dict | ast.JoinedStr):  # numbers, strings, containers
            return True
        if self._scalar(node) or self._derived_cpu(node):
            return True
        if isinstance(node, ast.UnaryOp):
            return self._known_cpu(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TO_CPU:
            return True
        if isinstance(node, ast.Call) and self._literal_call(node):
            return True
        return (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"len", "int", "float"}
        )

    @staticmethod
    def _literal_call(node: ast.Call) -> bool:
        """``causal_mask(5)``: a call on literals only, with no device, builds on the default device (CPU)."""
        arguments = [*node.args, *(k.value for k in node.keywords)]
        named_device = any(k.arg in (None, "device") for k in node.keywords)
        return bool(arguments) and not named_device and all(isinstance(a, ast.Constant) for a in arguments)

    def _meet(self, values: list[ast.AST], line: int) -> None:
        values = [
            item for value in values for item in (value.elts if isinstance(value, ast.List | ast.Tuple) else [value])
        ]
        if any(self._cpu_made(v) for v in values) and not all(self._known_cpu(v) for v in values):
            self.lines.append(line)

    # ---- where values meet
    def visit_BinOp(self, node: ast.BinOp) -> None:
        self._meet([node.left, node.right], node.lineno)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        self._meet([node.left, *node.comparators], node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in MEETING_METHODS:
            arguments = [*node.args, *(k.value for k in node.keywords if k.arg not in ("dtype", "dim", "atol", "rtol"))]
            if _is_torch_attr(node, MEETING_METHODS):
                self._meet(arguments, node.lineno)
            elif not (isinstance(node.func.value, ast.Name) and node.func.value.id in PLAIN_NAMESPACES):
                self._meet([node.func.value, *arguments], node.lineno)  # a method: its object meets the arguments
        self.generic_visit(node)

    # ---- names bound to CPU-made tensors
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if self._derived_cpu(node.value):
                    self.cpu_names.add(target.id)
                else:
                    self.cpu_names.discard(target.id)
                if self._scalar(node.value) or self._numbers(node.value):  # a number, or a list of numbers
                    self.scalars.add(target.id)
                else:
                    self.scalars.discard(target.id)

    def visit_For(self, node: ast.For) -> None:
        if isinstance(node.target, ast.Name) and self._numbers(node.iter):
            self.scalars.add(node.target.id)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        inner = _Scanner()  # a function body has its own names
        for statement in node.body:
            inner.visit(statement)
        self.lines.extend(inner.lines)

    visit_AsyncFunctionDef = visit_FunctionDef


def scan_source(
    source: str, where: str, cpu_names: set[str] | None = None, scalars: set[str] | None = None
) -> list[Finding]:
    """Findings in one piece of Python source (a module, or a notebook cell with IPython lines removed)."""
    tree = ast.parse(source)
    scanner = _Scanner(cpu_names, scalars)
    scanner.visit(tree)
    lines = source.splitlines()
    return [Finding(where, line, lines[line - 1].strip()) for line in sorted(set(scanner.lines))]


def _python_only(source: str) -> str:
    """A cell's source with IPython magics and shell lines blanked (line numbers kept)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def scan_notebook(path: Path, root: Path) -> list[Finding]:
    """Findings in every code cell of a notebook; names bound in one cell are followed into later cells."""
    cells = json.loads(path.read_text())["cells"]
    names: set[str] = set()
    scalars: set[str] = set()
    found: list[Finding] = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        try:
            found += scan_source(_python_only(source), f"{path.relative_to(root)} cell {index}", names, scalars)
        except SyntaxError:  # a student stub such as `...  # your code` that is not Python yet
            continue
    return found


def scan_module(path: Path, root: Path) -> list[Finding]:
    """Findings in one library module."""
    return scan_source(path.read_text(), str(path.relative_to(root)))
