"""What a stopped model server said about why: the error lines of its log, not its last lines.

A server's last lines are rarely its reason. vLLM, for one, logs its engine's fatal error with a traceback
per process, then exits with code 0 after a few hundred lines of shutdown noise (leaked-object reports,
resource-tracker warnings). `failure_excerpt` keeps the lines logged at error level and the exception lines
of tracebacks, each message once, and falls back to the tail when the log has none.
"""

from __future__ import annotations

import re
from pathlib import Path

# "(EngineCore pid=1) ERROR 12-04 08:29:34 [core.py:1512] message" / "ERROR: message" / "CRITICAL ..."
_LEVEL = re.compile(r"(?:^|\s)(ERROR|CRITICAL|FATAL)(?::\s*|\s)(?:\d\d-\d\d \d\d:\d\d:\d\d\s+)?(?:\[[^\]]*\] )?(.*)$")
# a traceback's last line: "RuntimeError: ...", "vllm.v1.engine.exceptions.EngineDeadError: ..."
_EXCEPTION = re.compile(r"^\s*(?:\([^)]*\)\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?::.*)?)$")
_TRACE_BODY = re.compile(r"^(?:\s|File \"|Traceback|\^|~)")
MAX_LINES = 12
MAX_WIDTH = 300


def _message(line: str) -> str | None:
    """The message of an error-level or exception line, or None for anything else: traceback bodies, and
    error-level lines longer than MAX_WIDTH (state dumps, not reasons; an exception line is cut instead)."""
    match = _LEVEL.search(line)
    text = match.group(2) if match else line
    exception = _EXCEPTION.match(text)
    if exception:
        return exception.group(1).strip()[:MAX_WIDTH]
    if match is None or not text or _TRACE_BODY.match(text) or len(text) > MAX_WIDTH:
        return None
    return text.strip()


def failure_excerpt(text: str, tail_lines: int = 30) -> str:
    """The distinct error messages of a server log (the last MAX_LINES of them), else its last lines."""
    messages: list[str] = []
    for line in text.splitlines():
        message = _message(line)
        if message and message not in messages:
            messages.append(message)
    if messages:
        return "\n".join(messages[-MAX_LINES:])
    return "\n".join(text.splitlines()[-tail_lines:])


def log_failure_excerpt(path: Path) -> str:
    try:
        return failure_excerpt(path.read_text(errors="replace"))
    except OSError:
        return "(no server log)"
