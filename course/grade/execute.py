"""nbgrader's Execute preprocessor, run in the sandbox, one cell at a time.

:class:`SandboxExecute` (built by :func:`sandbox_execute_class`) is a
subclass of ``nbgrader.preprocessors.Execute`` and takes its place in
``Autograde.autograde_preprocessors``.  It changes three things:

* **Where** the kernel runs: :class:`~course.grade.isolation.kernel.SandboxKernelManager`
  asks the zygote for a sandboxed, preloaded kernel on ipc sockets.
* **Kernel death**: nbclient raises ``DeadKernelError`` and nbgrader drops
  the whole submission.  Here the cells already run keep their outputs
  (and so their points); the running cell and the rest get an error
  output naming the reason (see :mod:`course.grade.scoring`).
* **Timeouts and output**: a cell over the time limit is interrupted and
  fails with ``CellTimeoutError``; if the interrupt cannot land (a loop
  inside C code holds the interpreter), the kernel is killed after
  nbclient's ``iopub_timeout`` grace and the rest is marked not run.
  Output beyond ``max_output_bytes`` per cell is cut with a note; errors
  are always kept, since they decide the score.

Everything else (execution, outputs, nbgrader's ``on_cell_executed``
handling of error replies) is inherited.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections import Counter

from course.grade import scoring
from course.grade.isolation.context import current
from course.grade.safeio import read_regular
from course.grade.text import safe_text

TRUNCATED = "\n[output truncated: this cell produced more than {limit} bytes of output]\n"
#: The outputs of all cells of a notebook together: this many times the per-cell cap.
NOTEBOOK_OUTPUT_FACTOR = 8
#: Error outputs kept per cell (student code can print tracebacks in a loop).
MAX_ERRORS_PER_CELL = 3


def _message_size(msg: dict) -> int:
    """Bytes of output a kernel message carries (text and data payloads)."""
    content = msg.get("content", {})
    if msg.get("msg_type") == "stream":
        return len(content.get("text", "").encode("utf-8", "surrogatepass"))
    data = content.get("data") or {}
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values())


def _clip(text: str, limit: int = 20_000) -> str:
    """A traceback entry or message cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + " [...]"


def _fail(cell, ename: str, message: str) -> None:
    """Append the grader's error output to a cell (it scores 0 and says why)."""
    from nbformat import NotebookNode

    cell.outputs.append(NotebookNode(scoring.error_output(ename, message)))


@functools.cache
def sandbox_execute_class():
    """Build (once) the SandboxExecute class on top of nbgrader's Execute."""

    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbgrader.preprocessors import Execute
    from traitlets import Integer

    from course.grade.isolation.kernel import sandbox_kernel_manager_class
    from course.grade.isolation.sandbox import kill_leftovers_of
    from course.grade.records import record

    class SandboxExecute(Execute):
        """Execute a submission in a sandboxed kernel, surviving its death."""

        max_output_bytes = Integer(1_000_000, help="bytes of output one cell may produce; beyond that it is cut").tag(
            config=True
        )

        def preprocess(self, nb, resources, km=None):
            context = current()
            spec = context.new_box(resources["metadata"]["path"])
            try:
                self._reset(nb, resources, km, context)
                self._start(spec, context)
                try:
                    self._run_cells(spec)
                finally:
                    self._stop()
                self._record_usage(spec, resources, context)
                self._report_blocked_imports(spec, resources)
                self.set_widgets_metadata()
            finally:
                context.remove_box(spec)
            info = record(resources)
            info.setdefault("timing", {}).update(self.kernel_timing)
            info["events"] = self._events
            return self.nb, self.resources

        def _reset(self, nb, resources, km, context) -> None:
            """Per-notebook state, as nbconvert's ExecutePreprocessor.preprocess sets it, plus ours."""
            from nbclient.client import NotebookClient

            NotebookClient.__init__(self, nb, km)
            self.reset_execution_trackers()
            self._check_assign_resources(resources)
            self.shutdown_kernel = "immediate"  # the sandbox dies with it; nothing to save
            self.max_output_bytes = context.max_output_bytes
            message = f"this cell ran longer than {self.timeout} s (the limit per cell) and was interrupted"
            self.error_on_timeout = {
                "ename": scoring.TIMEOUT,
                "evalue": message,
                "traceback": [f"\x1b[0;31m{scoring.TIMEOUT}\x1b[0m: {message}"],
            }
            self._output_bytes: dict[int, int] = {}
            self._errors: dict[int, int] = {}
            self._notebook_bytes = 0
            limit = context.max_output_bytes
            self.max_notebook_bytes = limit * NOTEBOOK_OUTPUT_FACTOR if limit >= 0 else float("inf")
            self.store_widget_state = False  # widget state is unbounded and nothing grades it
            self.kernel_timing: dict[str, float] = {}
            self._events: dict[str, dict] = {}
            self._timed_out = False
            self._pristine: dict | None = None
            self._oom_before = 0

        # -- kernel lifetime -------------------------------------------------

        def _start(self, spec, context) -> None:
            """Start the sandboxed kernel and its client; raise KernelStartError if it fails."""
            manager_class = sandbox_kernel_manager_class()
            kernel_name = self.nb.metadata.get("kernelspec", {}).get("name", "python3")
            self.km = manager_class(
                kernel_name=kernel_name,
                transport="ipc",
                connection_file=os.path.join(spec.ipc_dir, "kernel.json"),
                box_spec=spec,
                zygote=context.zygote,
                kernel_log=os.path.join(spec.ipc_dir, "kernel.log"),
            )
            started = time.perf_counter()
            try:
                self.start_new_kernel(cwd=spec.files_from)
                self.start_new_kernel_client()
                info = self.wait_for_reply(self.kc.kernel_info())
                self.nb.metadata["language_info"] = info["content"]["language_info"]
            except Exception as error:
                log = self._kernel_log(spec)
                self._stop()
                raise KernelStartError(f"the sandboxed kernel did not start ({error}); kernel log: {log}") from None
            self.kernel_timing["kernel_start"] = time.perf_counter() - started
            self._pristine = self._fingerprint()

        def _stop(self) -> None:
            """Kill the kernel (its namespace dies with it) and close the channels."""
            if self.km is not None:
                try:
                    self._cleanup_kernel()
                except Exception:  # already dead, or never started
                    pass
            self.km = None
            self.kc = None
            context = current()
            if context.isolate:
                # Nothing of this student's may survive into the next kernel of this uid.
                kill_leftovers_of(context.uid)

        @staticmethod
        def _kernel_log(spec) -> str:
            """The last lines the kernel process wrote outside the notebook (bounded, never via a link)."""
            data = read_regular(os.path.join(spec.ipc_dir, "kernel.log"), limit=4096, tail=True)
            if data is None:
                return "(none)"
            lines = [line.rstrip() for line in data.decode(errors="replace").splitlines() if line.strip()][-5:]
            return safe_text(" | ".join(lines), limit=1000) or "(empty)"

        def _exit_reason(self, spec) -> str:
            """Why a kernel that was running is gone, from how its supervisor ended.

            The kernel had started, so whatever status it exited with is the
            student's doing: even the supervisor's own failure code cannot be
            taken for a sandbox failure here (a kernel may ``os._exit(70)``).
            """
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            code = None
            if process is not None:
                try:
                    code = process.wait(timeout=3)
                except TimeoutError:
                    code = None
            limits = spec.limits
            oom_now = spec.cgroup.usage().oom_kills if spec.cgroup is not None else 0
            if code == -signal.SIGKILL and oom_now > self._oom_before:  # an OOM kill in this very cell
                return (
                    "it was killed (SIGKILL) by the out-of-memory killer: the kernel's processes together went "
                    f"over their memory limit of {spec.cgroup.memory_limit_mb:g} MiB"
                )
            return scoring.describe_exit(code, cpu=limits.cpu_seconds, file_mb=limits.file_mb)

        @staticmethod
        def _record_usage(spec, resources, context) -> None:
            """What the kernel's whole process tree used (cgroups only), for the JSON result."""
            if spec.cgroup is None:
                return
            used = spec.cgroup.usage().to_json()
            record(resources)["resources"] = {
                "limits": context.cgroups.description,
                "memory_limit_mb": round(spec.cgroup.memory_limit_mb, 1),
                "cpu_limit_seconds": spec.limits.cpu_seconds,
                **used,
            }

        def _before_cell(self, spec) -> str | None:
            """Read the tree's figures before a cell: why to stop (its CPU seconds are used up), if so.

            Also notes the OOM kills so far, so that a kernel killed in the
            next cell is blamed on memory only if the OOM killer acted then.
            """
            if spec.cgroup is None:
                return None
            usage = spec.cgroup.usage()
            self._oom_before = usage.oom_kills
            used = usage.cpu_seconds
            if used is None or used <= spec.limits.cpu_seconds:
                return None
            return (
                f"the kernel's processes together used {used:.0f} CPU seconds, over the submission's "
                f"CPU budget of {spec.limits.cpu_seconds} s"
            )

        async def _async_fingerprint(self, timeout: float = 10.0) -> dict | None:
            """Ask the kernel for :data:`course.grade.integrity.FINGERPRINT` (silently, outside run_cell)."""
            from course.grade import integrity

            msg_id = self.kc.execute(
                "", silent=True, store_history=False, user_expressions={"fingerprint": integrity.FINGERPRINT}
            )
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    msg = await self.kc.get_shell_msg(timeout=remaining)
                except Exception:  # queue.Empty on timeout
                    return None
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    return integrity.parse(msg.get("content", {}))

        def _fingerprint(self) -> dict | None:
            from nbclient.util import run_sync

            return run_sync(self._async_fingerprint)()

        def _tampered(self, cell, index: int) -> bool:
            """Before a test cell: if the kernel's hooks changed, fail the cell unrun and report it."""
            from course.grade import integrity

            if self._pristine is None:
                return False
            if not self.kc or not self.km:
                return False
            changed = integrity.changes(self._pristine, self._fingerprint())
            if not changed:
                return False
            cell.outputs = []
            message = (
                "this test was not run: the kernel was tampered with before it ("
                + ", ".join(changed)
                + " changed), so it scores 0"
            )
            _fail(cell, scoring.TAMPERED, message)
            self._event(cell, index, "tampered", message)
            grade_id = self._cell_key(cell, index)
            findings = record(self.resources).setdefault("tampering", [])
            notebook = self.resources.get("nbgrader", {}).get("notebook", "")
            if not any(f["kind"] == "kernel" for f in findings):
                findings.append(
                    {
                        "notebook": notebook,
                        "grade_id": grade_id,
                        "kind": "kernel",
                        "detail": "changed before " + grade_id + ": " + ", ".join(changed),
                    }
                )
            return True

        def _report_blocked_imports(self, spec, resources) -> None:
            """Name each refused import or read of a blocked package (see isolation.guard) in the tamper report."""
            from course.grade.isolation.guard import attempts, reads

            data = read_regular(os.path.join(spec.ipc_dir, "kernel.log"), limit=256 * 1024) or b""
            text = data.decode("utf-8", "replace")
            findings = record(resources).setdefault("tampering", [])
            notebook = resources.get("nbgrader", {}).get("notebook", "")
            for kind, verb, names in (
                ("blocked-import", "import", attempts(text)),
                ("blocked-read", "read", reads(text)),
            ):
                for name, count in Counter(names).items():
                    times = "once" if count == 1 else f"{count} times"
                    detail = f"tried to {verb} {safe_text(name, 120)} ({times}), which graded notebooks cannot use"
                    findings.append({"notebook": notebook, "grade_id": "", "kind": kind, "detail": detail})

        @staticmethod
        def _cell_key(cell, index: int) -> str:
            """A cell's grade_id, else its position."""
            from course.grade.tamper import nbgrader_meta

            return nbgrader_meta(cell).get("grade_id") or f"cell {index}"

        def _event(self, cell, index: int, status: str, message: str) -> None:
            """Record what the grader saw happen to a cell (its JSON status comes from here)."""
            from course.grade.tamper import nbgrader_meta

            grade_id = self._cell_key(cell, index)
            kind = (
                "test" if scoring.is_test_cell(cell) else "solution" if nbgrader_meta(cell).get("solution") else "code"
            )
            self._events[grade_id] = {"cell": grade_id, "kind": kind, "status": status, "message": message}

        # -- cells -----------------------------------------------------------

        def _run_cells(self, spec) -> None:
            """Execute cell by cell; after a death, fail the rest with the reason."""
            started = time.perf_counter()
            budget = current().budget_seconds
            stopped = None
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code":
                    continue
                if stopped is None and budget and time.perf_counter() - started > budget:
                    stopped = f"the submission used up its time budget of {budget:g} s (all cells together)"
                    self._event(cell, index, "budget", stopped)
                if stopped is None and (over := self._before_cell(spec)):
                    stopped = over
                    self._event(cell, index, "budget", stopped)
                if stopped is not None:
                    cell.outputs = []
                    message = f"not run: {stopped}"
                    _fail(cell, scoring.NOT_RUN, message)
                    if self._events.get(self._cell_key(cell, index), {}).get("status") != "budget":
                        self._event(cell, index, "not-run", message)
                    continue
                try:
                    if scoring.is_test_cell(cell) and self._tampered(cell, index):
                        continue
                    self.preprocess_cell(cell, self.resources, index)
                except DeadKernelError:
                    reason = self._exit_reason(spec)
                    message = f"the kernel died while running this cell: {reason}"
                    _fail(cell, scoring.KERNEL_DIED, message)
                    self._event(cell, index, "kernel-died", message)
                    stopped = f"the kernel died in an earlier cell ({reason})"
                except CellTimeoutError:  # the interrupt did not land: a loop inside C code
                    self.km.provisioner.process.kill()
                    message = (
                        f"this cell ran longer than {self.timeout} s (the limit per cell) and did not stop "
                        "when interrupted, so the kernel was stopped"
                    )
                    _fail(cell, scoring.TIMEOUT, message)
                    self._event(cell, index, "timeout", message)
                    stopped = "the kernel was stopped after an earlier cell timed out"
                else:
                    if self._timed_out:
                        message = self.error_on_timeout["evalue"]
                        self._event(cell, index, "timeout", f"{scoring.TIMEOUT}: {message}")
            self.kernel_timing["execute"] = time.perf_counter() - started

        def preprocess_cell(self, cell, resources, index):
            """Run one cell; test cells run with ``store_history=False``.

            So the instructor's tests (hidden ones included) never enter the
            kernel's ``In``, ``_ih`` or history, where a later cell of the
            student's could read them.
            """
            self._check_assign_resources(resources)
            self._timed_out = False
            cell = self.execute_cell(cell, index, store_history=not scoring.is_test_cell(cell))
            return cell, self.resources

        async def _async_handle_timeout(self, timeout, cell=None):
            """nbclient's timeout handling (interrupt, then error_on_timeout), noted for the cell's status."""
            self._timed_out = True
            return await super()._async_handle_timeout(timeout, cell)

        def output(self, outs, msg, display_id, cell_index):
            """Keep at most ``max_output_bytes`` per cell and :data:`NOTEBOOK_OUTPUT_FACTOR` times that per notebook.

            Errors are kept (they decide the score) but clipped, at most
            :data:`MAX_ERRORS_PER_CELL` per cell, and they count too.
            """
            if msg["msg_type"] == "error":
                errors = self._errors.get(cell_index, 0)
                if errors >= MAX_ERRORS_PER_CELL:
                    return None  # the cell already failed; more tracebacks add nothing
                self._errors[cell_index] = errors + 1
                content = msg["content"]
                content["ename"] = _clip(str(content.get("ename", "")), 200)
                content["evalue"] = _clip(str(content.get("evalue", "")))
                content["traceback"] = [_clip(str(line)) for line in content.get("traceback", [])[:200]]
                self._notebook_bytes += len(content["evalue"]) + sum(len(line) for line in content["traceback"])
                return super().output(outs, msg, display_id, cell_index)
            limit = self.max_output_bytes
            used = self._output_bytes.get(cell_index, 0)
            size = _message_size(msg)
            total_room = self.max_notebook_bytes - self._notebook_bytes
            if limit < 0 or (used + size <= limit and size <= total_room):
                self._output_bytes[cell_index] = used + size
                self._notebook_bytes += size
                return super().output(outs, msg, display_id, cell_index)
            if used > limit:
                return None  # already cut, note already added
            self._output_bytes[cell_index] = limit + 1
            room = max(0, min(limit - used, total_room))
            self._notebook_bytes += room
            if msg["msg_type"] == "stream":
                text = msg["content"]["text"].encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
                msg["content"]["text"] = text + TRUNCATED.format(limit=limit)
            else:
                msg = dict(msg, msg_type="stream", content={"name": "stdout", "text": TRUNCATED.format(limit=limit)})
                msg["header"] = dict(msg.get("header", {}), msg_type="stream")
            return super().output(outs, msg, display_id, cell_index)

        def _update_display_id(self, display_id, msg):
            """An update of an earlier display counts against the notebook's output budget too."""
            size = _message_size(msg)
            if size > self.max_notebook_bytes - self._notebook_bytes:
                return None
            self._notebook_bytes += size
            return super()._update_display_id(display_id, msg)

    return SandboxExecute


class KernelStartError(RuntimeError):
    """The grader could not start a kernel: the submission is left ungraded (retried next run)."""
