"""The generation program: input JSONL -> prompts -> OpenAI-compatible server -> output JSONL.

    python -m skills_cli.inference.generate [--config base.yaml] ++input_file=in.jsonl ++output_file=out.jsonl \
        ++prompt_config=generic/math ++inference.temperature=0.6 ++server.server_type=vllm

Resume that loses nothing: each finished sample is appended (with the key of the sample it was made for,
see `resume.py`) to `<output>-async` as soon as it is done. A rerun skips the samples whose key is found
there and regenerates the rest (an edited input or changed settings never hand a generation to another
problem); a SIGKILL can at worst leave a partial last line, which is dropped and redone, so no sample is
lost or duplicated. The final output is written atomically in input order, then `<output>.done` (with a
fingerprint of the input and settings) marks the job finished: a rerun with the same input and settings
does nothing unless `++rerun_done=true`; with changed ones it reuses the matching rows and redoes the rest.

With `++code_execution=true` the model's python blocks run in the job's sandbox and their output is fed back
before it continues (tool-integrated reasoning, `code_execution.py`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import DiskFull, DurableAppender, read_jsonl, touch_atomic, write_jsonl_atomic
from skills_cli.common.overrides import load_config_from_argv
from skills_cli.inference import resume
from skills_cli.inference.client import OpenAIClient, ServerError, is_context_overflow
from skills_cli.inference.code_execution import Sandbox, SandboxFailed, generate_with_code
from skills_cli.inference.config import GenerateConfig, async_side_file, check_code_execution, done_marker
from skills_cli.inference.merge_chunks import merged_file
from skills_cli.prompts import load_prompt_config

log = logging.getLogger("skills_cli.generate")


def chunk_slice(num_rows: int, num_chunks: int, chunk_id: int) -> tuple[int, int]:
    """Contiguous, balanced slices: chunk k covers rows [start, end)."""
    return num_rows * chunk_id // num_chunks, num_rows * (chunk_id + 1) // num_chunks


def load_rows(config: GenerateConfig) -> list[dict]:
    rows = read_jsonl(config.input_file)
    if (
        not rows and not config.allow_empty_input
    ):  # an empty output marked done would pass for a finished job, even after the input is filled
        raise UserError(f"input file {config.input_file} has no rows; nothing to generate")
    if config.num_chunks > 1:
        if config.num_chunks > len(rows):
            raise UserError(
                f"num_chunks={config.num_chunks} is larger than the {len(rows)} rows of {config.input_file}"
            )
        start, end = chunk_slice(len(rows), config.num_chunks, config.chunk_id)
        rows = rows[start:end]
    return rows[: config.max_samples] if config.max_samples >= 0 else rows


def build_prompts(config: GenerateConfig, rows: list[dict]) -> list[list[dict] | str]:
    """Every prompt is built before the first request, so a missing field fails at once, naming its row."""
    prompt_config = load_prompt_config(config.prompt_config, data_dir=Path(config.input_file).parent)
    messages = [prompt_config.messages(row, number, config.system_message) for number, row in enumerate(rows, 1)]
    if config.inference.endpoint_type == "chat":
        return messages
    return [render_text_prompt(config, conversation) for conversation in messages]


def render_text_prompt(config: GenerateConfig, messages: list[dict]) -> str:
    """Text endpoints: the client applies the chat template (a named one, or the model tokenizer's)."""
    if config.prompt_template:
        from skills_cli.prompts.chat_templates import render, template_text

        return render(template_text(config.prompt_template), messages)
    return tokenizer_template(config.server.tokenizer)(messages)


_TEMPLATES: dict[str, Callable] = {}


def tokenizer_template(path: str) -> Callable[[list[dict]], str]:
    if path not in _TEMPLATES:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        _TEMPLATES[path] = lambda messages: tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
    return _TEMPLATES[path]


def split_reasoning(text: str, begin: str, end: str) -> dict:
    """`<think>..</think>answer` -> reasoning and answer; without the end tag the answer is empty."""
    if end not in text:
        return {"reasoning": text.replace(begin, "", 1).strip(), "generation": "", "finished_thinking": False}
    reasoning, _, answer = text.partition(end)
    return {
        "reasoning": reasoning.replace(begin, "", 1).strip(),
        "generation": answer.strip(),
        "finished_thinking": True,
    }


class Progress:
    """A rich progress bar on a terminal; otherwise a log line every 10% (or 60 s)."""

    def __init__(self, total: int, already: int, enabled: bool | None):
        self.total, self.count = total, already
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        self._last_log = time.monotonic()
        self._step = max(1, total // 10)

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            columns = [TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                       TextColumn("{task.fields[rate]:.1f}/s"), TimeElapsedColumn(), TimeRemainingColumn()]  # fmt: skip
            self._bar = Bar(*columns, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("generate", total=self.total, completed=self.count, rate=0.0)
            self._start = time.monotonic()
            self._start_count = self.count
        return self

    def advance(self) -> None:
        self.count += 1
        if self._bar is not None:
            rate = (self.count - self._start_count) / max(time.monotonic() - self._start, 1e-9)
            self._bar.update(self._task, completed=self.count, rate=rate)
        elif self.count % self._step == 0 or time.monotonic() - self._last_log > 60:
            self._last_log = time.monotonic()
            log.info("generated %d/%d", self.count, self.total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


async def generate_one(
    config: GenerateConfig, client: OpenAIClient, sandbox: Sandbox | None, prompt: list[dict] | str
) -> dict:
    """One sample's result fields: one completion, or with code execution a loop of turns and executions."""
    if sandbox is not None:
        run = await generate_with_code(client, sandbox, prompt, config.inference)
        return run.fields(config.generation_key)
    try:
        completion = await client.complete(prompt)
    except ServerError as error:
        if not is_context_overflow(error):
            raise
        # this prompt can never fit the model: the sample gets no answer and says why; the others go on
        return {config.generation_key: "", "num_generated_tokens": 0, "finish_reason": "length",
                "generation_error": str(error)}  # fmt: skip
    return {config.generation_key: completion.text, "num_generated_tokens": completion.num_generated_tokens,
            "finish_reason": completion.finish_reason,
            **({"logprobs": completion.logprobs} if config.inference.logprobs else {})}  # fmt: skip


async def generate_all(
    config: GenerateConfig, prompts: list, keys: list[str], pending: list[int], side_file: Path
) -> None:
    """A fixed pool of workers pulls positions from a queue, so memory does not grow with the input."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for position in pending:
        queue.put_nowait(position)
    workers = min(config.max_concurrent_requests, max(len(pending), 1))
    sandbox = Sandbox(config.code_execution_config) if config.code_execution else None
    async with OpenAIClient(config.server, config.inference, workers, config.max_retries) as client:
        waited = await client.wait_until_ready()
        log.info("server %s ready after %.1f s; %d samples to generate", config.server.url, waited, len(pending))
        if sandbox is not None:
            waited = await sandbox.wait_until_ready()
            log.info("sandbox %s ready after %.1f s", sandbox.client.url, waited)
        with (
            DurableAppender(side_file) as appender,
            Progress(len(prompts), len(prompts) - len(pending), config.progress) as progress,
        ):

            async def worker() -> None:
                while not queue.empty():
                    position = queue.get_nowait()
                    started = time.time()
                    fields = await generate_one(config, client, sandbox, prompts[position])
                    appender.append({resume.KEY: keys[position], **fields, "generation_start_time": started,
                                     "generation_time": round(time.time() - started, 4)})  # fmt: skip
                    progress.advance()

            tasks = [asyncio.create_task(worker()) for _ in range(workers)]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise


def final_rows(config: GenerateConfig, rows: list[dict], keys: list[str], done: dict[str, dict]) -> Iterator[dict]:
    """Output rows one at a time (the whole output is never held in memory besides the input)."""
    for row, key in zip(rows, keys, strict=True):
        result = {k: v for k, v in done[key].items() if k not in (resume.KEY, resume.FORMATTED)}
        if config.parse_reasoning and not done[key].get(resume.FORMATTED):
            result.update(split_reasoning(result[config.generation_key], config.thinking_begin, config.thinking_end))
            if config.generation_key != "generation":
                result[config.generation_key] = result.pop("generation")
        yield {**row, **result}


def is_complete(config: GenerateConfig, output: Path, marker: Path, keys: list[str], side_file: Path) -> bool:
    """A finished output counts only for the input and settings it was made with; otherwise its rows become
    resume records (reused where their keys still match) and its marker goes."""
    if not marker.exists():
        return False
    finished = resume.read_marker(marker)
    if finished is None:  # an older version's marker holds nothing to compare with: trusted, as before
        log.info("%s is complete (%s exists, from an older version, so input and settings are unchecked); "
                 "++rerun_done=true redoes it", output, marker)  # fmt: skip
        return True
    if finished["fingerprint"] == resume.fingerprint(keys):
        log.info("%s is complete (%s exists); nothing to do (++rerun_done=true to redo it)", output, marker)
        return True
    reused = resume.reuse_finished_output(output, finished, side_file, config)
    log.info("%s was finished for a different input or different generation settings: %s", output,
             f"its {reused} rows are checked for reuse" if reused else "regenerating it")  # fmt: skip
    marker.unlink()
    return False


def forget_merged_output(config: GenerateConfig) -> None:
    """A chunk about to (re)generate makes the merged output incomplete until the merge runs again."""
    merged = merged_file(config.output_file, config.chunk_id) if config.num_chunks > 1 else None
    if merged is not None:
        Path(done_marker(merged)).unlink(missing_ok=True)


def run(config: GenerateConfig, stamp: str | None = None) -> int:
    output, side_file, marker = (
        Path(config.output_file),
        Path(async_side_file(config.output_file)),
        Path(done_marker(config.output_file)),
    )
    check_code_execution(config)
    rows = load_rows(config)
    prompts = build_prompts(config, rows)
    if config.dry_run:
        print(prompts[0])
        return 0
    keys = resume.sample_keys(rows, prompts, resume.generation_settings(config))
    if config.rerun_done:
        marker.unlink(missing_ok=True)
        side_file.unlink(missing_ok=True)
    if is_complete(config, output, marker, keys, side_file):
        return 0
    forget_merged_output(config)
    done = resume.matching_records(side_file, keys)
    pending = [position for position, key in enumerate(keys) if key not in done]
    log.info("%d rows, %d already generated, %d to go", len(rows), len(rows) - len(pending), len(pending))
    if pending:
        asyncio.run(generate_all(config, prompts, keys, pending, side_file))
        done = resume.matching_records(side_file, keys)
    write_jsonl_atomic(output, final_rows(config, rows, keys, done))
    touch_atomic(marker, resume.marker_text(keys, config, stamp))
    side_file.unlink(missing_ok=True)
    log.info("wrote %s (%d rows)", output, len(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        argv = sys.argv[1:] if argv is None else argv
        return run(load_config_from_argv(GenerateConfig, argv, where="generate"), resume.launch_stamp(argv))
    except DiskFull as error:  # before UserError (which it is): exit 1, as for any failure a rerun resumes
        print(f"error: {error}; finished samples are kept and a rerun continues from them", file=sys.stderr)
        return 1
    except (ServerError, SandboxFailed) as error:  # finished samples are kept: a rerun resumes after them
        print(f"error: {error}", file=sys.stderr)
        return 1
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
