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
                self.set_widgets_metadata()
            finally:
                context.remove_box(spec)
            record(resources).setdefault("timing", {}).update(self.kernel_timing)
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
            """The last lines the kernel process wrote outside the notebook."""
            path = os.path.join(spec.ipc_dir, "kernel.log")
            try:
                with open(path, errors="replace") as handle:
                    lines = [line.rstrip() for line in handle if line.strip()][-5:]
            except OSError:
                return "(none)"
            return " | ".join(lines) or "(empty)"

        def _exit_reason(self, spec) -> str:
            """Why the kernel is gone, from its supervisor's return code."""
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            code = None
            if process is not None:
                try:
                    code = process.wait(timeout=3)
                except TimeoutError:
                    code = None
            if code == scoring.SUPERVISOR_FAILED:
                raise KernelStartError(f"the sandbox failed: {self._kernel_log(spec)}")
            limits = spec.limits
            return scoring.describe_exit(code, cpu=limits.cpu_seconds, file_mb=limits.file_mb)

        # -- cells -----------------------------------------------------------

        def _run_cells(self, spec) -> None:
            """Execute cell by cell; after a death, fail the rest with the reason."""
            started = time.perf_counter()
            stopped = None
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code":
                    continue
                if stopped is not None:
                    cell.outputs = []
                    _fail(cell, scoring.NOT_RUN, f"not run: {stopped}")
                    continue
                try:
                    self.preprocess_cell(cell, self.resources, index)
                except DeadKernelError:
                    reason = self._exit_reason(spec)
                    _fail(cell, scoring.KERNEL_DIED, f"the kernel died while running this cell: {reason}")
                    stopped = f"the kernel died in an earlier cell ({reason})"
                except CellTimeoutError:  # the interrupt did not land: a loop inside C code
                    self.km.provisioner.process.kill()
                    message = (
                        f"this cell ran longer than {self.timeout} s (the limit per cell) and did not stop "
                        "when interrupted, so the kernel was stopped"
                    )
                    _fail(cell, scoring.TIMEOUT, message)
                    stopped = "the kernel was stopped after an earlier cell timed out"
            self.kernel_timing["execute"] = time.perf_counter() - started

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
