"""The interpreter loop of a sandbox session: runs cells with persistent globals (standard library only and
self-contained: the service passes this file's text to `python -c` inside the jail, where skills_cli may not be
importable).

Protocol, one JSON object per line: the service writes {"code": ...} to stdin; the loop answers {"status",
"stdout", "stderr", "truncated", "message"} on the stdout it had at start. The cell's own file descriptors 0-2
point at /dev/null, so what a cell writes straight to them (os.write, child processes) is dropped: only
sys.stdout and sys.stderr are captured. As in a notebook, the value of a final expression is printed.
"""

import ast
import io
import json
import os
import sys
import traceback

OUTPUT_KILL_FACTOR = 4  # a cell that writes this many times its cap is stopped (status output_limit)


class OutputLimitExceeded(BaseException):
    """Raised from a write far past the cap; a BaseException so a cell's `except Exception` cannot hide it."""


class CappedStream(io.TextIOBase):
    """A text stream that keeps the first `cap` bytes (UTF-8) and counts the rest."""

    def __init__(self, cap):
        self.cap = cap
        self.kept = io.StringIO()
        self.kept_bytes = 0
        self.total = 0

    def writable(self):
        return True

    def write(self, text):
        size = len(text.encode("utf-8", "replace"))
        self.total += size
        if self.kept_bytes < self.cap:
            piece = text.encode("utf-8", "replace")[: self.cap - self.kept_bytes]
            self.kept.write(piece.decode("utf-8", "ignore"))
            self.kept_bytes += len(piece)
        if self.total > OUTPUT_KILL_FACTOR * self.cap + 65536:
            raise OutputLimitExceeded()
        return len(text)

    @property
    def truncated(self):
        return self.total > self.kept_bytes


def run_code(code, namespace):
    """Exec the cell; a final expression's value is printed (repr), as a notebook shows it."""
    tree = ast.parse(code, "<cell>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
        if value is not None:
            print(repr(value))


def outcome_of(error):
    """(status, message) for how a cell ended."""
    if error is None:
        return "ok", None
    if isinstance(error, SystemExit):
        return ("ok", None) if error.code in (None, 0) else ("error", f"the cell called exit({error.code!r})")
    if isinstance(error, OutputLimitExceeded):
        return "output_limit", "the cell wrote far more than the output limit and was stopped"
    if isinstance(error, MemoryError):
        return "memory", "the cell ran out of memory (MemoryError)"
    return "error", f"{type(error).__name__}: {error}".splitlines()[0][:300]


def print_cell_traceback(error, stream):
    """The traceback from the cell's own frames on (this loop's frames would only confuse the reader)."""
    frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename != "<cell>":
        frames = frames.tb_next
    traceback.print_exception(type(error), error, frames, file=stream)


def run_cell(code, namespace, cap):
    out, err = CappedStream(cap), CappedStream(cap)
    sys.stdout, sys.stderr = out, err
    error = None
    try:
        run_code(code, namespace)
    except BaseException as caught:  # the cell's failure is its result, whatever it is
        error = caught
        if not isinstance(caught, (SystemExit, OutputLimitExceeded)):
            print_cell_traceback(caught, err)
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    status, message = outcome_of(error)
    return {"status": status, "stdout": out.kept.getvalue(), "stderr": err.kept.getvalue(),
            "truncated": out.truncated or err.truncated, "message": message}  # fmt: skip


def serve(cap):
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(null, descriptor)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    replies.write('{"ready": true}\n')
    replies.flush()
    for line in requests:
        reply = run_cell(json.loads(line)["code"], namespace, cap)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
