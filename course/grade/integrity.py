"""Is the kernel still the one the tests were written for?  (Checked before every test cell.)

Student code runs in the same interpreter as the instructor's tests, before
them.  One line can make every test pass without an answer::

    get_ipython().input_transformers_post.append(lambda l: ["pass\\n"] if "assert" in "".join(l) else l)

and so can a custom exception handler (``set_custom_exc``), a patched
``run_cell``, a replaced ``sys.excepthook`` or displayhook, a tracer, or a
patched builtin.  (Cell hooks, ``events.register("pre_run_cell", ...)``,
are allowed: ``%autoreload`` uses them, and what they print is scrubbed
of hidden tests in the feedback.)  Before each test cell the grader asks the kernel, through
a silent request whose ``user_expressions`` are evaluated outside
``run_cell`` and the input transformers, for :data:`FINGERPRINT`: the
identity of each of those hooks.  The first answer (before any student code
ran) is the pristine one; a test cell whose fingerprint differs is not
run, scores 0, and the tamper report names what changed.

This *detects*; it cannot make in-kernel tests unforgeable: code that
replaces the machinery answering this question (``user_expressions``
itself, or the kernel's message handlers) can lie.  See the threat model in
docs/grading.md.
"""

from __future__ import annotations

import ast

#: One expression, evaluated by IPython in the kernel: a dict of plain values.
FINGERPRINT = """(lambda ip, sys, builtins: {
 "input transformers": repr([id(f) for f in ip.input_transformers_post]
                            + [id(f) for f in ip.input_transformers_cleanup]
                            + [id(ip.input_transformer_manager)]),
 "AST transformers": repr([id(f) for f in ip.ast_transformers]),
 "custom exception handler": repr((ip.custom_exceptions, id(ip.CustomTB))),
 "run_cell": repr(sorted(n for n in ("run_cell", "run_cell_async", "_run_cell", "run_ast_nodes", "run_code",
                                     "showtraceback", "_showtraceback", "transform_cell", "user_expressions")
                         if n in vars(ip))
                  + [id(getattr(type(ip), n, None)) for n in ("run_cell", "run_cell_async", "_run_cell",
                     "run_ast_nodes", "run_code", "showtraceback", "_showtraceback", "transform_cell")]
                  + [id(type(ip))]),
 "kernel execute": repr(["do_execute" in vars(ip.kernel), id(getattr(type(ip.kernel), "do_execute", None))]),
 "displayhook": repr([id(ip.displayhook), id(type(ip.displayhook)), id(sys.displayhook)]),
 "sys.excepthook": repr(id(sys.excepthook)),
 "tracer": repr([id(sys.gettrace()), id(sys.getprofile())]),
 "builtins": repr(hash(tuple(sorted((k, id(v)) for k, v in vars(builtins).items() if not k.startswith("_"))))),
})(get_ipython(), __import__("sys"), __import__("builtins"))"""


def parse(reply_content: dict) -> dict[str, str] | None:
    """The fingerprint from an execute_reply's content, or None if the kernel did not give one."""
    result = (reply_content.get("user_expressions") or {}).get("fingerprint") or {}
    if result.get("status") != "ok":
        return None
    text = (result.get("data") or {}).get("text/plain", "")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value


def changes(pristine: dict[str, str], now: dict[str, str] | None) -> list[str]:
    """What differs from the pristine kernel, by name (every name when the kernel did not answer)."""
    if now is None:
        return ["the kernel did not answer the integrity check"]
    return [name for name in pristine if now.get(name) != pristine[name]]
