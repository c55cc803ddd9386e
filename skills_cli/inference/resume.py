"""What a rerun of a generation may reuse.

Every finished sample is recorded (in `<output>-async`, and in the order of `<output>.done`) with the key of
the sample it was made for: a hash of the input row (its `id` when it has one), of the prompt actually sent
(which covers the prompt config, template and system message) and of the settings that shape the output
(sampling parameters, seed, endpoint, model; code execution's settings when it is on). Identical rows get one
key each through an occurrence index. A record is reused only for the sample with its key, wherever that
sample now sits in the input, so an edited input or changed settings regenerate exactly the samples they touch
and never hand a generation to another problem. `.done` holds a fingerprint of all keys: a finished output is
complete only for the input and settings it was made with.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

from skills_cli.common.jsonl import DurableAppender, iter_jsonl, write_jsonl_atomic
from skills_cli.inference.config import GenerateConfig

log = logging.getLogger("skills_cli.generate")
KEY = "_key"
FORMATTED = "_formatted"  # a record taken from a finished output: its fields are already in output form
MARKER_VERSION = 1
# Client-side knobs that never change what the model generates.
NOT_SHAPING_OUTPUT = {"timeout"}
# Code execution's knobs that say where the sandbox is and how long to wait for it, not what it runs.
NOT_SHAPING_EXECUTION = {"sandbox_url", "sandbox_startup_timeout", "session_wait"}
CODE_EXECUTION_FIELDS = ["num_code_executions", "code_execution_errors", "code_execution_time", "generation_error"]


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def generation_settings(config: GenerateConfig) -> dict:
    """The settings a generation depends on, besides its prompt."""
    inference = {k: v for k, v in dataclasses.asdict(config.inference).items() if k not in NOT_SHAPING_OUTPUT}
    settings = {"inference": inference, "server_type": config.server.server_type, "model": config.server.model}
    if config.code_execution:  # only then: the keys of runs without it stay what they were
        execution = dataclasses.asdict(config.code_execution_config)
        settings["code_execution"] = {k: v for k, v in execution.items() if k not in NOT_SHAPING_EXECUTION}
    return settings


def output_layout(config: GenerateConfig) -> dict:
    """How raw results become output fields: a finished output is reusable only under the same layout."""
    return {"generation_key": config.generation_key, "parse_reasoning": config.parse_reasoning,
            "thinking_begin": config.thinking_begin, "thinking_end": config.thinking_end,
            **({"code_execution": True} if config.code_execution else {})}  # fmt: skip


def sample_keys(rows: list[dict], prompts: list, settings: dict) -> list[str]:
    """One key per input row, in input order; the n-th copy of an identical sample gets the suffix `-n`."""
    settings_hash = hashlib.sha256(canonical(settings).encode()).hexdigest()
    seen: Counter[str] = Counter()
    keys = []
    for row, prompt in zip(rows, prompts, strict=True):
        sample = {"id": row["id"]} if "id" in row else {"row": row}
        digest = hashlib.sha256(canonical([sample, prompt, settings_hash]).encode()).hexdigest()[:32]
        keys.append(f"{digest}-{seen[digest]}")
        seen[digest] += 1
    return keys


def fingerprint(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def marker_text(keys: list[str], config: GenerateConfig, stamp: str | None = None) -> str:
    """`.done`: the fingerprint, plus the keys in output order so a changed rerun can reuse matching rows, and
    the launch stamp (see `launch_stamp`) by which the launcher recognizes a finished job without running it."""
    return canonical({"version": MARKER_VERSION, "fingerprint": fingerprint(keys), "layout": output_layout(config),
                      "keys": keys, **({"stamp": stamp} if stamp else {})}) + "\n"  # fmt: skip


def launch_stamp(argv: list[str]) -> str:
    """A hash of the generation program's command line and of the files it names (the input file, a --config
    file): what the launcher can compute before submitting. Equal stamps mean the same samples and settings,
    so `ns generate` skips the job; a different stamp says nothing, and the job itself compares sample keys."""
    digest = hashlib.sha256(canonical(argv).encode())
    named = [argv[1]] if argv[:1] == ["--config"] and len(argv) > 1 else []
    named += [word.split("=", 1)[1] for word in argv if word.startswith("++input_file=")]
    for name in named:
        try:
            stat = os.stat(name)
            digest.update(file_digest(name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            digest.update(b"<unreadable>")
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def file_digest(path: str, size: int, mtime_ns: int) -> bytes:
    """sha256 of a file, read once per version (size, mtime): every chunk and seed of one `ns generate` names
    the same input file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.digest()


def marker_stamp(marker: Path) -> str | None:
    """The launch stamp a finished job's `.done` holds (None when absent, unreadable or from an older version)."""
    data = read_marker(marker) if marker.is_file() else None
    return data.get("stamp") if data else None


def read_marker(marker: Path) -> dict | None:
    """The marker's contents; None for a marker of an older version (empty), which cannot be checked."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8") or "null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and "fingerprint" in data else None


def result_fields(layout: dict, logprobs: bool) -> list[str]:
    """The fields generation adds to an input row (they override a row's own field of the same name)."""
    fields = [layout["generation_key"], "num_generated_tokens", "finish_reason", "generation_start_time",
              "generation_time"]  # fmt: skip
    if layout["parse_reasoning"]:
        fields += ["reasoning", "finished_thinking"]
    if layout.get("code_execution"):
        fields += CODE_EXECUTION_FIELDS
    return fields + (["logprobs"] if logprobs else [])


def reuse_finished_output(output: Path, marker: dict, side_file: Path, config: GenerateConfig) -> int:
    """Record the rows of a finished output (made for other keys) as resume records; returns how many.

    Only an output written under the same layout can be reused (its result fields are copied as they are);
    its rows pair with the keys listed in its marker, in order.
    """
    keys = marker.get("keys")
    if marker.get("layout") != output_layout(config) or not isinstance(keys, list) or not output.is_file():
        return 0
    rows = list(iter_jsonl(output, kind="finished output"))
    if len(rows) != len(keys):  # edited by hand: its rows no longer pair with the keys
        return 0
    fields = result_fields(output_layout(config), config.inference.logprobs)
    with DurableAppender(side_file) as appender:
        for key, row in zip(keys, rows, strict=True):
            appender.append({KEY: key, FORMATTED: True, **{name: row[name] for name in fields if name in row}})
    return len(rows)


def matching_records(side_file: Path, keys: list[str]) -> dict[str, dict]:
    """The recorded results whose key is one of `keys` (the first record of a key wins).

    Records made for other samples or other settings are reported in one line and dropped from the side file
    (rewritten atomically), so they are neither reused nor reported again.
    """
    if not side_file.exists():
        return {}
    wanted = set(keys)
    found: dict[str, dict] = {}
    earlier: set[str] = set()
    unkeyed = 0
    for record in iter_jsonl(side_file, skip_partial_last_line=True, kind="resume"):
        key = record.get(KEY)
        if key is None:  # written by an older version, which recorded positions only
            unkeyed += 1
            continue
        earlier.add(key)
        if key in wanted:
            found.setdefault(key, record)
    stale = len(earlier) - len(found) + unkeyed
    if stale:
        log.warning("resume: %d of %d earlier generations no longer match the input or the generation settings; "
                    "regenerating them", stale, len(earlier) + unkeyed)  # fmt: skip
        write_jsonl_atomic(side_file, found.values())
    return found
