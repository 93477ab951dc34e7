"""nbgrader's Execute preprocessor, run in the sandbox, one cell at a time.

:class:`SandboxExecute` (built by :func:`sandbox_execute_class`) is a
subclass of ``nbgrader.preprocessors.Execute`` and takes its place in
``Autograde.autograde_preprocessors``.  It changes three things:

* **Where** the kernel runs: :class:`~course.grade.kernel.SandboxKernelManager`
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

import json
import os
import time

from course.grade import scoring
from course.grade.context import current
from course.grade.safeio import read_regular
from course.grade.text import safe_text

_CLASS = None

TRUNCATED = "\n[output truncated: this cell produced more than {limit} bytes of output]\n"


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


def sandbox_execute_class():
    """Build (once) the SandboxExecute class on top of nbgrader's Execute."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS

    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbgrader.preprocessors import Execute
    from traitlets import Integer

    from course.grade.kernel import sandbox_kernel_manager_class
    from course.grade.preprocessors import record
    from course.grade.sandbox import kill_leftovers_of

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
            self.kernel_timing: dict[str, float] = {}
            self._events: dict[str, dict] = {}
            self._timed_out = False

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
            return scoring.describe_exit(code, cpu=limits.cpu_seconds, file_mb=limits.file_mb)

        def _report_blocked_imports(self, spec, resources) -> None:
            """Name each refused import of a blocked package (course.grade.guard) in the tamper report."""
            from course.grade.guard import attempts

            data = read_regular(os.path.join(spec.ipc_dir, "kernel.log"), limit=256 * 1024) or b""
            findings = record(resources).setdefault("tampering", [])
            notebook = resources.get("nbgrader", {}).get("notebook", "")
            for name in attempts(data.decode("utf-8", "replace")):
                findings.append(
                    {
                        "notebook": notebook,
                        "grade_id": "",
                        "kind": "blocked-import",
                        "detail": f"tried to import {safe_text(name, 120)}, which graded notebooks cannot use",
                    }
                )

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
                if stopped is not None:
                    cell.outputs = []
                    message = f"not run: {stopped}"
                    _fail(cell, scoring.NOT_RUN, message)
                    if self._events.get(self._cell_key(cell, index), {}).get("status") != "budget":
                        self._event(cell, index, "not-run", message)
                    continue
                try:
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
            """Keep at most ``max_output_bytes`` per cell; always keep errors."""
            if msg["msg_type"] == "error":
                content = msg["content"]
                content["evalue"] = _clip(str(content.get("evalue", "")))
                content["traceback"] = [_clip(str(line)) for line in content.get("traceback", [])[:200]]
                return super().output(outs, msg, display_id, cell_index)
            limit = self.max_output_bytes
            used = self._output_bytes.get(cell_index, 0)
            size = _message_size(msg)
            if limit < 0 or used + size <= limit:
                self._output_bytes[cell_index] = used + size
                return super().output(outs, msg, display_id, cell_index)
            if used > limit:
                return None  # already cut, note already added
            self._output_bytes[cell_index] = limit + 1
            room = max(0, limit - used)
            if msg["msg_type"] == "stream":
                text = msg["content"]["text"].encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
                msg["content"]["text"] = text + TRUNCATED.format(limit=limit)
            else:
                msg = dict(msg, msg_type="stream", content={"name": "stdout", "text": TRUNCATED.format(limit=limit)})
                msg["header"] = dict(msg.get("header", {}), msg_type="stream")
            return super().output(outs, msg, display_id, cell_index)

    _CLASS = SandboxExecute
    return _CLASS


class KernelStartError(RuntimeError):
    """The grader could not start a kernel: the submission is left ungraded (retried next run)."""
