"""The isolation of students' kernels: everything between the grader and a student's code.

* :mod:`~course.grade.isolation.sandbox`: namespaces, the allow-list file
  system view, rlimits, privileges.
* :mod:`~course.grade.isolation.linux`: the system calls under it (libc
  through ctypes), their flags, and the one reader of the mount table.
* :mod:`~course.grade.isolation.cgroups`: one control group per kernel, so
  limits hold for its whole process tree.
* :mod:`~course.grade.isolation.zygote`: the fork server that imports torch
  once and forks a supervised, sandboxed kernel per submission.
* :mod:`~course.grade.isolation.lifecycle`: the zygote's life in one run
  (the run folder, preload list, start, stop).
* :mod:`~course.grade.isolation.kernel`: the grader's side, a jupyter_client
  provisioner and kernel manager talking to the zygote.
* :mod:`~course.grade.isolation.context`: what one worker's kernels are
  (uid, limits, what they see, their environment).
* :mod:`~course.grade.isolation.uids`: a private uid range per run.
* :mod:`~course.grade.isolation.kernel_io`, :mod:`~course.grade.isolation.guard`:
  code that runs inside the student's kernel (output cap, blocked packages).

Nothing here imports nbgrader, the gradebook or the preprocessors: the
grading pipeline (``course.grade``) uses these pieces, and they use only
the grader's settings, its safe file reads and its exit codes.
"""
