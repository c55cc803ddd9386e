"""The generation program: input JSONL -> prompts -> OpenAI-compatible server -> output JSONL.

    python -m skills_cli.inference.generate [--config base.yaml] ++input_file=in.jsonl ++output_file=out.jsonl \
        ++prompt_config=generic/math ++inference.temperature=0.6 ++server.server_type=vllm

Resume that loses nothing: each finished sample is appended (with its input position) to `<output>-async`
as soon as it is done. A rerun skips the positions found there; a SIGKILL can at worst leave a partial last
line, which is dropped and redone, so no sample is lost or duplicated. The final output is written
atomically in input order, then `<output>.done` marks the job finished: a rerun of a finished job does
nothing unless `++rerun_done=true`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import DurableAppender, iter_jsonl, read_jsonl, touch_atomic, write_jsonl_atomic
from skills_cli.common.overrides import load_config_from_argv
from skills_cli.inference.client import OpenAIClient, ServerError
from skills_cli.inference.config import GenerateConfig, async_side_file, done_marker
from skills_cli.prompts import load_prompt_config

log = logging.getLogger("skills_cli.generate")
POSITION = "_position"


def chunk_slice(num_rows: int, num_chunks: int, chunk_id: int) -> tuple[int, int]:
    """Contiguous, balanced slices: chunk k covers rows [start, end)."""
    return num_rows * chunk_id // num_chunks, num_rows * (chunk_id + 1) // num_chunks


def load_rows(config: GenerateConfig) -> list[dict]:
    rows = read_jsonl(config.input_file)
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
    prompt_config = load_prompt_config(config.prompt_config)
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


def finished_positions(side_file: Path) -> dict[int, dict]:
    """Results already recorded by an earlier (possibly killed) run; the first record of a position wins."""
    if not side_file.exists():
        return {}
    done: dict[int, dict] = {}
    for row in iter_jsonl(side_file, skip_partial_last_line=True):
        done.setdefault(row[POSITION], row)
    return done


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


async def generate_all(config: GenerateConfig, prompts: list, pending: list[int], side_file: Path) -> None:
    """A fixed pool of workers pulls positions from a queue, so memory does not grow with the input."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for position in pending:
        queue.put_nowait(position)
    workers = min(config.max_concurrent_requests, max(len(pending), 1))
    async with OpenAIClient(config.server, config.inference, workers, config.max_retries) as client:
        waited = await client.wait_until_ready()
        log.info("server %s ready after %.1f s; %d samples to generate", config.server.url, waited, len(pending))
        with (
            DurableAppender(side_file) as appender,
            Progress(len(prompts), len(prompts) - len(pending), config.progress) as progress,
        ):

            async def worker() -> None:
                while not queue.empty():
                    position = queue.get_nowait()
                    started = time.time()
                    completion = await client.complete(prompts[position])
                    appender.append({
                        POSITION: position, config.generation_key: completion.text,
                        "num_generated_tokens": completion.num_generated_tokens,
                        "finish_reason": completion.finish_reason, "generation_start_time": started,
                        "generation_time": round(time.time() - started, 4),
                        **({"logprobs": completion.logprobs} if config.inference.logprobs else {}),
                    })  # fmt: skip
                    progress.advance()

            tasks = [asyncio.create_task(worker()) for _ in range(workers)]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise


def final_rows(config: GenerateConfig, rows: list[dict], done: dict[int, dict]) -> list[dict]:
    output = []
    for position, row in enumerate(rows):
        result = {k: v for k, v in done[position].items() if k != POSITION}
        if config.parse_reasoning:
            result.update(split_reasoning(result[config.generation_key], config.thinking_begin, config.thinking_end))
            if config.generation_key != "generation":
                result[config.generation_key] = result.pop("generation")
        output.append({**row, **result})
    return output


def run(config: GenerateConfig) -> int:
    output, side_file, marker = (
        Path(config.output_file),
        Path(async_side_file(config.output_file)),
        Path(done_marker(config.output_file)),
    )
    if marker.exists() and not config.rerun_done:
        log.info("%s is complete (%s exists); nothing to do (++rerun_done=true to redo it)", output, marker)
        return 0
    if config.rerun_done:
        marker.unlink(missing_ok=True)
        side_file.unlink(missing_ok=True)
    rows = load_rows(config)
    prompts = build_prompts(config, rows)
    if config.dry_run:
        print(prompts[0] if prompts else "(no input rows)")
        return 0
    done = finished_positions(side_file)
    pending = [position for position in range(len(rows)) if position not in done]
    log.info("%d rows, %d already generated, %d to go", len(rows), len(rows) - len(pending), len(pending))
    if pending:
        asyncio.run(generate_all(config, prompts, pending, side_file))
        done = finished_positions(side_file)
    write_jsonl_atomic(output, final_rows(config, rows, done))
    touch_atomic(marker)
    side_file.unlink(missing_ok=True)
    log.info("wrote %s (%d rows)", output, len(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        return run(load_config_from_argv(GenerateConfig, sys.argv[1:] if argv is None else argv, where="generate"))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ServerError as error:  # finished samples are kept: a rerun resumes after them
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
