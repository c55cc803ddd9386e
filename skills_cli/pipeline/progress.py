"""Progress while waiting for jobs: a live table on a terminal, one plain line per job start or end otherwise.

Whatever waits (a submission that is not `--detach`ed, `ns status --watch`, the quickstart) polls the jobs'
states and hands every fresh list to `Progress.update`. On a terminal the table (experiment, job, state,
elapsed time) is redrawn in place; elsewhere (logs, CI, pipes) each transition is one line, e.g.
`eval/judge: RUNNING` and `eval/judge: SUCCEEDED after 12.3 s`, and nothing else is printed.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from skills_cli.pipeline.store import JobRecord, JobState

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

STATE_STYLE = {JobState.SUCCEEDED: "green", JobState.FAILED: "red", JobState.CANCELLED: "yellow",
          JobState.TIMEOUT: "red", JobState.RUNNING: "cyan"}  # fmt: skip


def styled_state(state: JobState) -> str:
    """The state's name in rich markup, coloured by outcome (shared with `ns status` tables)."""
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state.value}[/]" if style else state.value


def elapsed_seconds(record: JobRecord, now: float) -> float | None:
    """Seconds the job has run (until it ended, else until `now`); None before it started."""
    if not record.started_at:
        return None
    return (record.ended_at or now) - record.started_at


def transition_line(record: JobRecord, now: float) -> str | None:
    """The plain line for the job's new state: started, or ended (with its run time); None for other states."""
    name = f"{record.expname}/{record.name}"
    if record.state is JobState.RUNNING:
        return f"{name}: RUNNING"
    if not record.state.finished:
        return None
    seconds = elapsed_seconds(record, now)
    ran = "" if seconds is None else f" after {seconds:.1f} s"
    reason = f" ({record.reason})" if record.reason else ""
    return f"{name}: {record.state.value}{ran}{reason}"


def progress_table(records: list[JobRecord], now: float) -> Table:
    """Every job's experiment, name, state and elapsed time, in the order given."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="waiting for jobs", title_justify="left")
    for column in ("experiment", "job", "state", "elapsed"):
        table.add_column(column, justify="right" if column == "elapsed" else "left")
    for record in records:
        state = styled_state(record.state)
        seconds = elapsed_seconds(record, now)
        table.add_row(escape(record.expname), escape(record.name), state, "" if seconds is None else f"{seconds:.0f} s")
    return table


class Progress:
    """Shows jobs' states while something waits for them; use as a context manager around the polling loop."""

    def __init__(self, console: Console | None = None, plain: TextIO | None = None):
        self.console = console  # a terminal console: live table; None: plain lines on `plain` (default stderr)
        self.plain = plain
        self._seen: dict[str, JobState] = {}
        self._live: Live | None = None

    @classmethod
    def on(cls, stream: TextIO | None = None) -> Progress:
        """A live table when `stream` (stderr by default) is a terminal, plain lines on it otherwise."""
        stream = stream or sys.stderr
        if not stream.isatty():
            return cls(None, stream)
        from rich.console import Console

        return cls(Console(file=stream))

    def __enter__(self) -> Progress:
        if self.console is not None:
            from rich.live import Live

            self._live = Live(progress_table([], time.time()), console=self.console, auto_refresh=False, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, records: list[JobRecord], now: float | None = None) -> None:
        now = time.time() if now is None else now
        changed = [record for record in records if self._seen.get(record.uid) is not record.state]
        self._seen.update((record.uid, record.state) for record in records)
        if self._live is not None:
            self._live.update(progress_table(records, now), refresh=True)  # redrawn every poll: elapsed moves on
            return
        for record in changed:
            line = transition_line(record, now)
            if line is not None:
                print(line, file=self.plain or sys.stderr, flush=True)
