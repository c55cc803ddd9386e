"""The symbolic worker process: `python symbolic_worker.py`, one JSON request per line on stdin, one reply per line.

Run as a script by path (not imported), so it imports nothing from this folder: only the standard library and
math-verify, which is imported here and nowhere else, so importing the grader stays cheap.
"""

from __future__ import annotations

import json
import sys

_WORKER_MEMORY_LIMIT = 4 << 30  # bytes of address space: a runaway sympy dies instead of swapping the node


def _serve_symbolic_checks() -> None:
    """Worker main loop: read {"predicted", "expected"} lines, answer {"equal"} or {"error"} lines."""
    import logging

    logging.disable(logging.WARNING)  # math-verify warns that we disabled its signal timeouts; we kill instead
    _limit_memory(_WORKER_MEMORY_LIMIT)
    del sys.path[0]  # this script's folder: the grader's modules (numeric, extract, ...) must not shadow sympy's
    from math_verify import parse, verify

    def as_latex(answer: str) -> str:
        return answer if "$" in answer else f"${answer}$"

    replies, sys.stdout = sys.stdout, sys.stderr  # a stray print in a library must not corrupt the protocol
    replies.write("ready\n")
    replies.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            gold = parse(as_latex(request["expected"]), parsing_timeout=None)
            target = parse(as_latex(request["predicted"]), parsing_timeout=None)
            reply = {"equal": bool(gold and target and verify(gold, target, timeout_seconds=None))}
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"[:300]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _limit_memory(limit: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform, or already lower


if __name__ == "__main__" and sys.argv[1:] == ["--symbolic-worker"]:
    _serve_symbolic_checks()
