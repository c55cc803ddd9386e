"""Tool-integrated reasoning (`++code_execution=true`): the model's python blocks run in the sandbox and their
output is fed back before it goes on, as NeMo-Skills' code execution mode does.

One sample is a loop of turns. Each turn asks the server to continue the prompt plus the text so far, with the
code block's end marker as an extra stop string. A turn that stopped inside an opened block (the text holds a
`code_begin` with no `code_end` after it; servers differ on whether the stop string itself is in the text, and
both are handled) hands the block's code to the sample's sandbox session (globals persist across its blocks;
closed when the sample ends); the block end and an output block (`output_begin`, stdout then stderr, cut at
`max_output_characters`, `output_end`) are appended, and the next turn continues from there. The sample ends
when a turn finishes without opening a block, when `tokens_to_generate` is spent over all turns (counted from
the servers' usage: output blocks are not counted, the server's context still bounds them), or after
`max_code_executions` executions: the model then gets one last turn, and a block it opens there is closed and
never run.

On the text endpoint the continuation is the rendered prompt plus the text so far, which every server takes; on
the chat endpoint it is the conversation with the text so far as the assistant's unfinished message
(`continue_final_message`), which only some servers take (`config.CHAT_CONTINUATION_KINDS`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from skills_cli.common.errors import UserError
from skills_cli.inference.client import Completion, OpenAIClient, ServerError, is_context_overflow
from skills_cli.inference.config import CodeExecutionConfig, InferenceConfig
from skills_cli.sandbox.client import Execution, Limits, SandboxClient, SandboxError, SandboxUnavailable

log = logging.getLogger("skills_cli.generate")
# a service that failed one run gets this long to answer again before the whole run stops
SANDBOX_RECHECK_SECONDS = 30.0
RESTARTED_NOTE = "(the interpreter was restarted: variables from earlier blocks are gone)\n"
# a server's refusal of a continuation (its prompt grew past the context, typically): that sample ends there
REFUSED_STATUS = 400


class SandboxFailed(Exception):
    """The sandbox stopped answering mid-run: no later sample could run its code (a rerun resumes)."""


@dataclass
class SampleRun:
    """What one sample's turns have made so far."""

    text: str = ""
    finish_reason: str | None = None
    num_generated_tokens: int | None = None
    num_code_executions: int = 0
    code_execution_errors: int = 0
    code_execution_time: float = 0.0
    generation_error: str | None = None

    def add_turn(self, completion: Completion) -> None:
        self.text += completion.text
        self.finish_reason = completion.finish_reason
        if completion.num_generated_tokens is not None:
            self.num_generated_tokens = (self.num_generated_tokens or 0) + completion.num_generated_tokens

    def fields(self, generation_key: str) -> dict:
        """The row fields of a finished sample."""
        return {generation_key: self.text, "num_generated_tokens": self.num_generated_tokens,
                "finish_reason": self.finish_reason, "num_code_executions": self.num_code_executions,
                "code_execution_errors": self.code_execution_errors,
                "code_execution_time": round(self.code_execution_time, 4),
                **({"generation_error": self.generation_error} if self.generation_error else {})}  # fmt: skip


def open_block_code(text: str, settings: CodeExecutionConfig) -> str | None:
    """The code of the block `text` ends in (opened, not closed before the end), else None. A trailing
    `code_end` is this block's end whether or not the server kept the stop string in the text."""
    start = text.rfind(settings.code_begin)
    if start < 0:
        return None
    code = text[start + len(settings.code_begin) :].removesuffix(settings.code_end)
    return None if settings.code_end in code else code


def close_block(text: str, settings: CodeExecutionConfig) -> str:
    return text if text.endswith(settings.code_end) else text + settings.code_end


def requested_code(completion: Completion, text: str, settings: CodeExecutionConfig) -> str | None:
    """The code the model handed over with this turn: it stopped (not at the token limit) inside a block. A
    server that names the stop string that ended the turn (vLLM's `stop_reason`) must name our marker; one that
    does not is taken to have stopped on it, as NeMo-Skills does."""
    if completion.finish_reason != "stop":
        return None
    if completion.stop_reason is not None and completion.stop_reason != settings.code_end:
        return None  # the user's stop string or a stop token ended it inside a block: the sample is over
    return open_block_code(text, settings)


def cut_output(body: str, limit: int, cut_by_sandbox: bool) -> str:
    """At most `limit` characters, and a line saying so when anything was left out (here or by the sandbox,
    which keeps a few times the limit)."""
    if len(body) <= limit and not cut_by_sandbox:
        return body
    return f"{body[:limit]}\n[output truncated after {min(limit, len(body))} characters]"


def output_block(execution: Execution, settings: CodeExecutionConfig) -> str:
    """What the model reads after its block: stdout, then stderr (a traceback for an exception), then what
    the sandbox says about a run that did not end normally (timeout, memory, a crashed interpreter)."""
    body = execution.stdout + execution.stderr
    if execution.status != "ok" and execution.message and execution.message not in body:
        body += ("" if not body or body.endswith("\n") else "\n") + execution.message
    body = cut_output(body, settings.max_output_characters, execution.truncated)
    if body and not body.endswith("\n"):
        body += "\n"
    return settings.output_begin + body + settings.output_end


def session_limits(settings: CodeExecutionConfig) -> Limits:
    # the sandbox keeps a few times what the model is shown, so our cut can say how much was left out
    return Limits(timeout=settings.timeout, memory_mb=settings.memory_mb,
                  max_output_bytes=max(4 * settings.max_output_characters, 4096))  # fmt: skip


class Sandbox:
    """The sandbox as this run uses it: its client, and a cap on the sessions the run holds at once (the
    service's own maximum), so that samples queue here in order instead of retrying the service's refusals."""

    def __init__(self, settings: CodeExecutionConfig):
        self.settings = settings
        try:
            self.client = SandboxClient(settings.sandbox_url)
        except SandboxError as error:  # no address: the job was started without a sandbox
            raise UserError(f"++code_execution=true needs a sandbox: {error} (or ++code_execution_config."
                            "sandbox_url=http://HOST:PORT)") from None  # fmt: skip
        self.slots: asyncio.Semaphore | None = None

    async def wait_until_ready(self) -> float:
        """Bounded, like the model server's wait; the error names the address and the sandbox log's last lines."""
        try:
            waited = await asyncio.to_thread(self.client.wait_until_ready, self.settings.sandbox_startup_timeout)
            maximum = (await asyncio.to_thread(self.client.health)).get("max_sessions")
        except SandboxError as error:  # unavailable, or it refused our key
            raise UserError(str(error)) from None
        if maximum == 0:
            raise UserError(f"the sandbox at {self.client.url} allows no sessions (--max_sessions 0); code "
                            "execution keeps one per sample")  # fmt: skip
        self.slots = asyncio.Semaphore(maximum) if isinstance(maximum, int) and maximum > 0 else None
        return waited


class SandboxSession:
    """One sample's interpreter: opened at its first block, kept across its blocks, closed when it ends. A run
    that ends the interpreter (timeout, memory, a crash) makes the next block start a fresh one."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox, self.client, self.settings = sandbox, sandbox.client, sandbox.settings
        self.session: str | None = None

    async def run(self, code: str) -> Execution:
        if self.session is None:
            await self._open()
        execution = await self._run_cell(code)
        if expired_before(execution, self.session):  # closed while idle (the model took long to write)
            await self.close()
            await self._open()
            execution = await self._run_cell(code)
            execution = replace(execution, stdout=RESTARTED_NOTE + execution.stdout)
        if execution.status == "sandbox_error":
            await asyncio.to_thread(check_sandbox_answers, self.client)
        if ends_session(execution):
            await self.close()  # already gone in the service, except after a failed run: then this frees it
        return execution

    async def close(self) -> None:
        if self.session is None:
            return
        session, self.session = self.session, None
        try:
            await asyncio.to_thread(self.client.close_session, session)
        except (OSError, SandboxError) as error:  # it expires on its own; this sample is done with it anyway
            log.debug("closing sandbox session %s: %s", session, error)
        finally:
            if self.sandbox.slots is not None:
                self.sandbox.slots.release()

    async def _run_cell(self, code: str) -> Execution:
        return await asyncio.to_thread(self.client.run_in_session, self.session, code, self.settings.timeout)

    async def _open(self) -> None:
        """A new session, holding one of the run's slots until it closes."""
        if self.sandbox.slots is not None:
            await self.sandbox.slots.acquire()
        try:
            self.session = await self._request_session()
        except BaseException:
            if self.sandbox.slots is not None:
                self.sandbox.slots.release()
            raise

    async def _request_session(self) -> str:
        """While the service has all its sessions open (HTTP 429; other programs may share it), wait."""
        deadline = time.monotonic() + self.settings.session_wait
        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(self.client.open_session, session_limits(self.settings))
            except SandboxError as error:
                if not is_busy(error) or time.monotonic() > deadline:
                    raise SandboxFailed(f"cannot open a sandbox session: {error}") from None
            except OSError as error:
                raise SandboxFailed(f"the sandbox at {self.client.url} is unreachable: {error}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def is_busy(error: SandboxError) -> bool:
    """All the service's session slots are taken (HTTP 429): one frees when another sample ends."""
    return ": 429 " in str(error)


def expired_before(execution: Execution, session: str) -> bool:
    """The session had already ended before this cell (idle expiry), so the cell never ran."""
    return (execution.message or "").startswith(f"session {session} has ended")


def ends_session(execution: Execution) -> bool:
    """Whether the service ended the session with this run (its interpreter is gone)."""
    return execution.status in ("timeout", "memory", "sandbox_error") or "has ended" in (execution.message or "")


def check_sandbox_answers(sandbox: SandboxClient) -> None:
    """After a failed run: a service that answers again lets the run go on (that sample saw the failure as its
    output); one that does not stops the run."""
    try:
        sandbox.wait_until_ready(timeout=SANDBOX_RECHECK_SECONDS)
    except SandboxUnavailable as error:
        raise SandboxFailed(str(error)) from None


def turn_request(prompt: list[dict] | str, text: str, stop: list[str], budget: int | None) -> tuple:
    """The prompt and body overrides that continue `prompt` after the sample's text so far."""
    overrides: dict = {"stop": stop, **({"max_tokens": budget} if budget is not None else {})}
    if not text:
        return prompt, overrides
    if isinstance(prompt, str):
        return prompt + text, overrides
    continued = [*prompt, {"role": "assistant", "content": text}]
    return continued, {**overrides, "continue_final_message": True, "add_generation_prompt": False}


async def next_turn(client: OpenAIClient, prompt: list[dict] | str, run: SampleRun, stop: list[str],
                    budget: int | None) -> Completion | None:  # fmt: skip
    """The next turn's completion; None when the server refused to continue (the sample ends, its reason kept)."""
    request, overrides = turn_request(prompt, run.text, stop, budget)
    try:
        return await client.complete(request, overrides)
    except ServerError as error:
        if error.status != REFUSED_STATUS or not (run.text or is_context_overflow(error)):
            raise  # a first turn refused for anything but its length is the settings' fault: the run stops
        run.finish_reason, run.generation_error = "length", str(error)
        return None


async def generate_with_code(
    client: OpenAIClient, sandbox: Sandbox, prompt: list[dict] | str, inference: InferenceConfig
) -> SampleRun:
    """One sample's turns, its code run in one sandbox session (see the module docstring)."""
    run, settings = SampleRun(), sandbox.settings
    stop = [*inference.stop, *([settings.code_end] if settings.code_end not in inference.stop else [])]
    session = SandboxSession(sandbox)
    try:
        while True:
            budget = remaining_tokens(inference.tokens_to_generate, run.num_generated_tokens)
            if budget is not None and budget <= 0:
                run.finish_reason = "length"
                break
            completion = await next_turn(client, prompt, run, stop, budget)
            if completion is None:
                break
            run.add_turn(completion)
            code = requested_code(completion, run.text, settings)
            if code is None:
                break
            run.text = close_block(run.text, settings)
            if run.num_code_executions >= settings.max_code_executions:
                break  # the last turn's block is closed and never run
            await execute(session, code, run, settings)
    finally:
        await session.close()
    return run


async def execute(session: SandboxSession, code: str, run: SampleRun, settings: CodeExecutionConfig) -> None:
    started = time.monotonic()
    execution = await session.run(code)
    run.code_execution_time += time.monotonic() - started
    run.num_code_executions += 1
    run.code_execution_errors += execution.status != "ok"
    run.text += output_block(execution, settings)


def remaining_tokens(total: int | None, used: int | None) -> int | None:
    return None if total is None else total - (used or 0)
