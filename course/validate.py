"""Argument checks shared by the lessons: one clear line instead of a deep traceback.

A batch size of 0 or a ``max_length`` longer than the model's position table
fails much later, inside torch, with an ``IndexError`` in an embedding or a
CUDA "device-side assert".  These checks catch them first and raise one
:class:`~course.errors.CourseError` that says what to change.

Lesson 02 (``course.pipelines``) and lesson 03 (``course.train``) both use
them, so they live below both: a lesson module never imports a later lesson's.
"""

from __future__ import annotations

from typing import Any

from course.errors import CourseError


def max_positions(model: Any) -> int | None:
    """How many positions the model's position embeddings cover (None if unknown).

    ``model`` is a model or its config; both carry ``max_position_embeddings``.
    """
    config = getattr(model, "config", model)
    return getattr(config, "max_position_embeddings", None)


def check_max_length(max_length: int, model: Any | None = None) -> int:
    """``max_length`` must be a positive int no longer than the model's position table."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise CourseError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
    limit = max_positions(model) if model is not None else None
    if limit is not None and max_length > limit:
        raise CourseError(
            f"max_length {max_length} does not fit this model: it has {limit} position embeddings; "
            f"use max_length <= {limit}"
        )
    return max_length


def check_batch_size(batch_size: int, name: str = "batch_size") -> int:
    """A batch size (or any count named ``name``) must be a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CourseError(f"{name} must be a positive integer, got {batch_size!r}")
    return batch_size
