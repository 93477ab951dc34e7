"""``course grade``: autograde an nbgrader assignment, sandboxed and in parallel.

Built on nbgrader's own converters, preprocessors and configuration; see
``docs/grading.md`` for the instructor's walkthrough and the threat model.

* :func:`main` / :func:`add_arguments`: the command line (``course grade``).
* :mod:`course.grade.runner`: checks, plan, workers, report.
* :mod:`course.grade.isolation.sandbox`, :mod:`course.grade.isolation.zygote`,
  :mod:`course.grade.isolation.kernel`: the sandboxed, preloaded kernels.
* :mod:`course.grade.execute`, :mod:`course.grade.preprocessors`,
  :mod:`course.grade.scoring`, :mod:`course.grade.tamper`,
  :mod:`course.grade.feedback`, :mod:`course.grade.export`: what changes
  in nbgrader's pipeline, and what comes out.

Importing this package is instant: nbgrader, nbclient and torch are
imported by the functions that need them.
"""

from course.grade.cli import add_arguments, main

__all__ = ["add_arguments", "main"]
