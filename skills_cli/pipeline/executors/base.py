"""The protocol every executor implements; the pipeline talks to executors only through it."""

from __future__ import annotations

from typing import Protocol

from skills_cli.pipeline.plan import Plan
from skills_cli.pipeline.store import JobRecord, Store


class Executor(Protocol):
    def preflight(self, plan: Plan) -> None:
        """Check what can be checked before submitting (mount sources, images, GPUs); raise UserError."""

    def dry_run(self, plan: Plan) -> str:
        """Exactly what `submit` would run, as text."""

    def submit(self, plan: Plan, store: Store) -> list[JobRecord]:
        """Start or queue every job of the plan in dependency order; record them in the store."""

    def refresh(self, records: list[JobRecord], store: Store) -> list[JobRecord]:
        """Bring the stored states of these jobs up to date."""

    def cancel(self, records: list[JobRecord], store: Store) -> None:
        """Stop these jobs (running or waiting)."""

    def logs(self, record: JobRecord, tail: int | None) -> str:
        """The job's log text (all of its commands)."""
