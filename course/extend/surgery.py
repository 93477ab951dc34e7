r"""Model surgery: find submodules by name, swap them, freeze and unfreeze, count what trains.

Every extension in this lesson is the same three moves on a loaded model::

    names = find_modules(model, ["query", "value"])      # which Linear layers?
    for name in names:                                    # swap each for a wrapper
        replace_module(model, name, LoRALinear(get_module(model, name), r=8))
    freeze(model, except_=["lora_", "classifier"])        # only the new parts learn
    count_parameters(model)                               # how much of the model trains?

A module's *name* is its path from the model, with dots:
``bert.encoder.layer.3.attention.self.query``.  A *target* matches a name
the way 🤗 ``peft`` matches ``target_modules``: the full name, or its last
parts (``"query"`` and ``"self.query"`` both match the name above).  A
target containing ``*`` or ``?`` is a shell-style pattern matched against
the full name (``"bert.encoder.layer.[0-2].*.query"``), and one starting
with ``re:`` a regular expression that must match the whole name
(``r"re:.*layer\.\d+\.output\.dense"``: the feed-forward output, not
``attention.output.dense``).

Nothing here imports torch at module level: the functions only walk
``model.named_modules()`` and ``model.named_parameters()``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from course.errors import CourseError

if TYPE_CHECKING:
    import torch


def _as_list(targets: str | Iterable[str]) -> list[str]:
    """One target or several -> a list; an empty list is an error."""
    found = [targets] if isinstance(targets, str) else list(targets)
    if not found or not all(isinstance(t, str) and t for t in found):
        raise CourseError(f"targets must be module names such as 'query' or ['query', 'value'], got {targets!r}")
    return found


def name_matches(name: str, target: str) -> bool:
    """Does module ``name`` match ``target`` (full name, dotted suffix, a glob or ``re:`` regex)?"""
    if target.startswith("re:"):
        try:
            return re.fullmatch(target[3:], name) is not None
        except re.error as error:
            raise CourseError(f"target {target!r} is not a valid regular expression: {error}") from None
    if any(char in target for char in "*?["):
        return fnmatch.fnmatchcase(name, target)
    return name == target or name.endswith("." + target)


def candidates(model: torch.nn.Module, kind: type | tuple[type, ...] | None = None, limit: int = 12) -> list[str]:
    """Short names a target could use: the distinct last parts of the module names (of ``kind``)."""
    seen: dict[str, None] = {}
    for name, module in model.named_modules():
        if name and (kind is None or isinstance(module, kind)):
            seen.setdefault(name.rsplit(".", 1)[-1], None)
    names = [n for n in seen if not n.isdigit()]
    return names[:limit] + (["..."] if len(names) > limit else [])


def find_modules(
    model: torch.nn.Module, targets: str | Iterable[str], kind: type | tuple[type, ...] | None = None
) -> dict[str, torch.nn.Module]:
    """Every submodule whose name matches one of ``targets`` (and is a ``kind``), by full name.

    ``kind`` is a class or a tuple of classes, as for ``isinstance``; the
    first one names what was looked for in the error message.

    Raises a one-line :class:`CourseError` that lists the names you could
    have meant when a target matches nothing, so a typo such as ``"querry"``
    fails at once instead of silently adapting nothing.
    """
    targets = _as_list(targets)
    found: dict[str, torch.nn.Module] = {}
    for target in targets:
        hits = {
            name: module
            for name, module in model.named_modules()
            if name and name_matches(name, target) and (kind is None or isinstance(module, kind))
        }
        if not hits:
            first = kind[0] if isinstance(kind, tuple) else kind
            what = f" {first.__name__}" if first is not None else ""
            raise CourseError(
                f"no{what} module matches '{target}' in {type(model).__name__}; "
                f"candidates: {', '.join(candidates(model, kind))}"
            )
        found.update(hits)
    return found


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule at a dotted ``name`` (``model.get_submodule`` with a one-line error)."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise CourseError(f"{type(model).__name__} has no submodule '{name}'") from None


def replace_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> torch.nn.Module:
    """Put ``new`` where the submodule ``name`` was; return the old one.

    ``bert.encoder.layer.0.attention.self.query`` is attribute ``query`` of
    the module ``bert.encoder.layer.0.attention.self``: setting that
    attribute is all a replacement is.
    """
    parent_name, _, child = name.rpartition(".")
    parent = get_module(model, parent_name) if parent_name else model
    old = get_module(model, name)
    setattr(parent, child, new)
    return old


def freeze(model: torch.nn.Module, except_: str | Iterable[str] = ()) -> list[str]:
    """Stop gradients for every parameter, except those whose name contains one of ``except_``.

    Returns the names of the parameters left trainable.  ``except_`` parts are
    plain substrings of parameter names (``"lora_"``, ``"classifier"``).
    """
    keep = [except_] if isinstance(except_, str) else list(except_)
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(part in name for part in keep))
        if parameter.requires_grad:
            trainable.append(name)
    return trainable


def unfreeze(model: torch.nn.Module, targets: str | Iterable[str] | None = None) -> list[str]:
    """Make the parameters of matching modules trainable again (all of them with ``targets=None``)."""
    modules = {"": model} if targets is None else find_modules(model, targets)
    names = []
    for prefix, module in modules.items():
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(True)
            names.append(f"{prefix}.{name}" if prefix else name)
    return names


@dataclass(frozen=True)
class ParameterCount:
    """How many parameters a model has and how many of them train."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        """Trainable share of all parameters (0..1)."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.trainable:,} of {self.total:,} parameters train ({100 * self.fraction:.2f}%)"


def count_parameters(model: torch.nn.Module) -> ParameterCount:
    """Trainable and total parameter counts, each shared tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():  # parameters() already skips tensors shared by two modules
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return ParameterCount(trainable, total)
