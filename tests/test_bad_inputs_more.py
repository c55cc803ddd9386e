"""More bad inputs a hostile user finds on a fresh clone (issue 14, items 6, 8, 9): each is one `error:` line,
exit status 2, and nothing is queued: no experiment in the store, no output folder, no log folder.

The many small cases run the real `ns` entry point (`skills_cli.cli.main`) in-process, so each costs
milliseconds; `test_real_subprocess_agrees` runs a few of them through a real `python -m skills_cli` too.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_ns, write_config
from test_bad_inputs import assert_clean_error, experiments

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config, load_config_from_argv
from skills_cli.common.typed_config import ConfigError, bounded, from_dict
from skills_cli.inference.config import GenerateConfig
from skills_cli.pipeline.cluster import known_clusters
from skills_cli.pipeline.plan import safe_name
from skills_cli.training.algorithms import ALGORITHMS

BINARY = bytes(range(256)) * 4  # NUL and every other byte: what a model weight file or an image looks like
LATIN1 = "caf\xe9 na\xefve\n".encode("latin-1")  # text, but not UTF-8


def ns(*args: str) -> subprocess.CompletedProcess:
    """The `ns` entry point in this process (same parsing, validation and exit codes as the real command)."""
    from skills_cli.cli import main

    logger = logging.getLogger("skills_cli")
    handlers = list(logger.handlers)
    stdout, stderr = sys.stdout, sys.stderr
    out, err = _Capture(), _Capture()
    argv = sys.argv
    sys.argv, sys.stdout, sys.stderr = ["ns", *args], out, err
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv, sys.stdout, sys.stderr = argv, stdout, stderr
        logger.handlers = handlers  # main() adds a handler each call
    return subprocess.CompletedProcess(["ns", *args], code, out.getvalue(), err.getvalue())


class _Capture:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str | bytes) -> int:  # click may write bytes
        self.parts.append(text.decode() if isinstance(text, bytes) else text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return "".join(self.parts)


def assert_nothing_queued(home: Path, *outputs: Path) -> None:
    assert experiments() == [], f"something was recorded: {experiments()}"
    assert not (home / "logs").exists() or not any((home / "logs").iterdir()), "a log folder was created"
    for output in outputs:
        assert not output.exists(), f"{output} was created"


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Inputs for the cases: a good JSONL input, a bad one of each kind, a folder, a plain file."""
    paths = {
        "good": tmp_path / "in.jsonl",
        "binary": tmp_path / "binary.jsonl",
        "latin1": tmp_path / "latin1.jsonl",
        "empty": tmp_path / "empty.jsonl",
        "blank": tmp_path / "blank.jsonl",
        "array": tmp_path / "array.json",
        "array1": tmp_path / "array1.jsonl",
        "plain_file": tmp_path / "plain.txt",
        "folder": tmp_path / "folder",
        "prompt_dir": tmp_path / "prompt.yaml",
        "prompt_binary": tmp_path / "binary_prompt.yaml",
        "config_binary": tmp_path / "binary_config.yaml",
        "config_dup": tmp_path / "dup_config.yaml",
        "model": tmp_path / "model",
    }
    paths["good"].write_text('{"problem": "1+1?"}\n{"problem": "2+2?"}\n')
    paths["binary"].write_bytes(BINARY)
    paths["latin1"].write_bytes(b'{"problem": "x"}\n' + LATIN1)
    paths["empty"].write_text("")
    paths["blank"].write_text("\n  \n")
    paths["array"].write_text('[\n  {"problem": "1+1?"},\n  {"problem": "2+2?"}\n]\n')
    paths["array1"].write_text('[{"problem": "1+1?"}, {"problem": "2+2?"}]\n')
    paths["plain_file"].write_text("not a folder\n")
    paths["folder"].mkdir()
    paths["prompt_dir"].mkdir()
    paths["prompt_binary"].write_bytes(BINARY)
    paths["config_binary"].write_bytes(BINARY)
    paths["config_dup"].write_text("inference:\n  temperature: 0.5\n  top_p: 0.9\n  temperature: 0.7\n")
    paths["model"].mkdir()
    return paths


def generate_args(files: dict[str, Path], tmp_path: Path, *extra: str, input_file: str = "good") -> list[str]:
    return ["generate", "--expname", "bad", "--input_file", str(files[input_file]), "--output_dir",
            str(tmp_path / "out"), "--model", str(files["model"]), "++prompt_config=generic/math", *extra]  # fmt: skip


# -- ns generate: overrides and options out of range --------------------------------------------------------
GENERATE_CASES = {
    "temperature-nan": (["++inference.temperature=nan"], ["inference.temperature", "nan", "not a finite number"]),
    "temperature-.nan": (["++inference.temperature=.nan"], ["inference.temperature", "not a finite number"]),
    "temperature-.inf": (["++inference.temperature=.inf"], ["inference.temperature", "inf", "not a finite number"]),
    "port-99999": (["++server.port=99999"], ["server.port", "99999", "between 1 and 65535"]),
    "max-retries-negative": (["++max_retries=-3"], ["max_retries", "-3", ">= 0"]),
    "tokens-absurd": (["++inference.tokens_to_generate=99999999999"], ["tokens_to_generate", "10000000", "context"]),
    "concurrency-absurd": (["++max_concurrent_requests=1000000000"], ["max_concurrent_requests", "100000", "socket"]),
    "max-samples-negative": (["++max_samples=-5"], ["max_samples", "-5", "-1: all"]),
    "max-samples-zero": (["++max_samples=0"], ["max_samples", "0", ">= 1 or -1"]),
    "num-chunks-negative": (["--num_chunks", "-2"], ["--num_chunks", "-2", ">= 1"]),
    "num-chunks-zero": (["--num_chunks", "0"], ["--num_chunks", "0", ">= 1"]),
    "num-random-seeds-negative": (["--num_random_seeds", "-1"], ["--num_random_seeds", "-1", ">= 0"]),
    "time-0": (["--time", "0"], ["time limit '0'", "longer than 0 seconds"]),
    "time-0:00:00": (["--time", "0:00:00"], ["time limit '0:00:00'", "longer than 0 seconds"]),
    "expname-empty": (["--expname", ""], ["--expname ''", "empty"]),
    "address-and-server-gpus": (["--server_address", "http://127.0.0.1:9/v1", "--server_gpus", "1"],
                                ["--server_gpus", "--server_address"]),
    "address-and-server-nodes": (["--server_address", "http://127.0.0.1:9/v1", "--server_nodes", "2"],
                                 ["--server_nodes", "--server_address"]),
    "address-and-server-args": (["--server_address", "http://127.0.0.1:9/v1", "--server_args", "--x 1"],
                                ["--server_args", "--server_address"]),
    "chunk-ids-without-num-chunks": (["--chunk_ids", "0"], ["--chunk_ids", "needs --num_chunks"]),
}  # fmt: skip


@pytest.mark.parametrize("extra, needles", list(GENERATE_CASES.values()), ids=list(GENERATE_CASES))
def test_generate_refuses_out_of_range_values(files, tmp_path, isolated_home, extra, needles):
    args = generate_args(files, tmp_path)
    if "--expname" in extra:  # the case gives its own (empty) name
        args = args[:1] + args[3:]
    line = assert_clean_error(ns(*args, *extra), *needles)
    assert "must lie in 0..0" not in line
    assert_nothing_queued(isolated_home, tmp_path / "out")


# -- ns generate: unusable files ----------------------------------------------------------------------------
FILE_CASES = {
    "input-folder": ("folder", [], ["--input_file", "is a directory"]),
    "input-binary": ("binary", [], ["--input_file", "not a text file"]),
    "input-not-utf8": ("latin1", [], ["--input_file", "not UTF-8"]),
    "input-empty": ("empty", [], ["--input_file", "is empty"]),
    "input-blank-lines": ("blank", [], ["--input_file", "is empty"]),
    "input-json-array": ("array", [], ["--input_file", "JSON array", "one JSON object per line"]),
    "input-json-array-one-line": ("array1", [], ["--input_file", "JSON array"]),
    "model-is-a-file": ("good", ["--model", "{plain_file}"], ["--model", "is a file"]),
    "output-dir-is-a-file": ("good", ["--output_dir", "{plain_file}"], ["--output_dir", "is a file"]),
    "output-dir-under-a-file": ("good", ["--output_dir", "{plain_file}/out"], ["--output_dir", "is a file"]),
    "prompt-config-folder": ("good", ["++prompt_config={prompt_dir}"], ["prompt config", "is a directory"]),
    "prompt-config-binary": ("good", ["++prompt_config={prompt_binary}"], ["prompt config", "not a text file"]),
    "config-binary": ("good", ["--config", "{config_binary}"], ["--config", "not a text file"]),
    "config-duplicate-key": ("good", ["--config", "{config_dup}"], ["duplicate key 'temperature'", "lines 2 and 4"]),
}  # fmt: skip


@pytest.mark.parametrize("input_file, extra, needles", list(FILE_CASES.values()), ids=list(FILE_CASES))
def test_generate_refuses_unusable_files(files, tmp_path, isolated_home, input_file, extra, needles):
    extra = [word.format(**{k: str(v) for k, v in files.items()}) for word in extra]
    result = ns(*generate_args(files, tmp_path, *extra, input_file=input_file))
    line = assert_clean_error(result, *needles)
    assert "does not exist" not in line
    output = Path(extra[extra.index("--output_dir") + 1]) if "--output_dir" in extra else tmp_path / "out"
    assert_nothing_queued(isolated_home, *([] if output == files["plain_file"] else [output]))
    assert files["plain_file"].read_text() == "not a folder\n"


def test_a_good_generate_still_passes_the_checks(files, tmp_path, isolated_home):
    """The checks refuse only bad input: the same command with good files gets to the dry run."""
    (tmp_path / "ok.yaml").write_text("inference:\n  temperature: 0.5\n")
    result = ns(*generate_args(files, tmp_path, "--dry_run", "--num_chunks", "2", "--config", str(tmp_path / "ok.yaml"),
                               "++max_samples=-1", "++server.port=65535"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert experiments() == []


# -- ns eval ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-5", "0"])
def test_eval_max_samples_keeps_minus_one_for_all_and_refuses_other_values(tmp_path, isolated_home, value):
    result = ns("eval", "--expname", "e", "--benchmarks", "arith", "--output_dir", str(tmp_path / "out"), "--model",
                str(tmp_path), "--max_samples", value)  # fmt: skip
    assert_clean_error(result, "--max_samples", value, "-1: all")
    assert_nothing_queued(isolated_home, tmp_path / "out")


def test_eval_judge_address_with_judge_hosting_options(tmp_path, isolated_home):
    result = ns("eval", "--expname", "e", "--benchmarks", "arith", "--output_dir", str(tmp_path / "out"),
                "--server_address", "http://127.0.0.1:9/v1", "--judge_server_address", "http://127.0.0.1:9/v1",
                "--judge_server_gpus", "2")  # fmt: skip
    assert_clean_error(result, "--judge_server_gpus", "--judge_server_address")
    assert_nothing_queued(isolated_home, tmp_path / "out")


# -- ns train sft / grpo ------------------------------------------------------------------------------------
TRAIN_CASES = {
    "sft-lr-nan": ("sft", "++policy.optimizer.kwargs.lr=nan", ["optimizer.kwargs.lr", "not a finite number"]),
    "sft-lr-negative": ("sft", "++policy.optimizer.kwargs.lr=-1", ["optimizer.kwargs.lr", "-1", "> 0"]),
    "sft-max-steps-negative": ("sft", "++sft.max_num_steps=-1", ["sft.max_num_steps", "-1", ">= 1"]),
    "sft-max-steps-zero": ("sft", "++sft.max_num_steps=0", ["sft.max_num_steps", "0", ">= 1"]),
    "sft-save-period-zero": ("sft", "++checkpointing.save_period=0", ["checkpointing.save_period", "0", ">= 1"]),
    "sft-keep-last-negative": ("sft", "++checkpointing.keep_last_k=-1", ["keep_last_k", "-1", "null keeps every"]),
    "sft-keep-last-zero": ("sft", "++checkpointing.keep_last_k=0", ["keep_last_k", "0", ">= 1"]),
    "sft-seed-negative": ("sft", "++sft.seed=-5", ["sft.seed", "-5", ">= 0"]),
    "sft-warmup-negative": ("sft", "++policy.scheduler.warmup_steps=-3", ["warmup_steps", "-3", ">= 0"]),
    "sft-weight-decay-inf": ("sft", "++policy.optimizer.kwargs.weight_decay=.inf", ["weight_decay", "not a finite"]),
    "sft-beta-nan": ("sft", "++policy.optimizer.kwargs.betas=[0.9, .nan]", ["betas[1]", "not a finite"]),
    "grpo-lr-nan": ("grpo", "++policy.optimizer.kwargs.lr=nan", ["optimizer.kwargs.lr", "not a finite number"]),
    "grpo-max-steps-zero": ("grpo", "++grpo.max_num_steps=0", ["grpo.max_num_steps", "0", ">= 1"]),
    "grpo-seed-negative": ("grpo", "++grpo.seed=-5", ["grpo.seed", "-5", ">= 0"]),
    "grpo-keep-last-negative": ("grpo", "++checkpointing.keep_last_k=-1", ["keep_last_k", "-1"]),
    "grpo-temperature-nan": ("grpo", "++policy.generation.temperature=nan", ["generation.temperature", "finite"]),
    "grpo-new-tokens-absurd": ("grpo", "++policy.generation.max_new_tokens=99999999999", ["max_new_tokens", "10000000"]),
    "grpo-kl-inf": ("grpo", "++loss_fn.reference_policy_kl_penalty=.inf", ["reference_policy_kl_penalty", "finite"]),
    "grpo-gpu-memory": ("grpo", "++policy.generation.vllm_cfg.gpu_memory_utilization=1.5", ["gpu_memory_utilization"]),
}  # fmt: skip


@pytest.mark.parametrize("algorithm, override, needles", list(TRAIN_CASES.values()), ids=list(TRAIN_CASES))
def test_train_refuses_out_of_range_overrides(tmp_path, isolated_home, algorithm, override, needles):
    """The overrides fail before the model or the data are even looked at (neither exists here)."""
    result = ns("train", algorithm, "--expname", "t", "--hf_model", str(tmp_path / "model"), "--training_data",
                str(tmp_path / "train.jsonl"), "--output_dir", str(tmp_path / "out"), override)  # fmt: skip
    assert_clean_error(result, *needles)
    assert_nothing_queued(isolated_home, tmp_path / "out")


@pytest.mark.parametrize("data, needles", [("folder", ["is a directory"]), ("binary", ["not a text file"]),
                                           ("latin1", ["not UTF-8"]), ("empty", ["is empty"]),
                                           ("array", ["JSON array"])])  # fmt: skip
@pytest.mark.parametrize("algorithm", ["sft", "grpo"])
def test_train_refuses_unusable_training_data(files, tmp_path, isolated_home, algorithm, data, needles):
    from test_sft_support import tiny_model

    result = ns("train", algorithm, "--expname", "t", "--hf_model", tiny_model(), "--training_data", str(files[data]),
                "--output_dir", str(tmp_path / "out"), "++policy.train_global_batch_size=16",
                "++grpo.num_prompts_per_step=1" if algorithm == "grpo" else "++sft.max_num_steps=1")  # fmt: skip
    line = assert_clean_error(result, "--training_data", *needles)
    assert "does not exist" not in line
    assert_nothing_queued(isolated_home, tmp_path / "out")


def test_keep_last_k_null_keeps_every_checkpoint():
    """-1 used to keep every checkpoint silently; now null says so and -1 is refused."""
    sft_config = ALGORITHMS.get("sft").config_class
    assert load_config(sft_config, ["++checkpointing.keep_last_k=null"]).checkpointing.keep_last_k is None
    assert load_config(sft_config, []).checkpointing.keep_last_k == 3


# -- the typed config rules themselves ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Example:
    ratio: float = 0.5
    ceiling: float = bounded(1.0, nonfinite=True)  # opts in: inf means "no ceiling"
    port: int = bounded(80, ge=1, le=65535)
    count: int = bounded(-1, ge=1, also=(-1,), why="-1: all")
    weights: list[float] = bounded(default_factory=list, ge=0)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"ratio": float("nan")}, "x.ratio: nan is not a finite number"),
        ({"ratio": "-inf"}, "x.ratio: -inf is not a finite number"),
        ({"port": 0}, "x.port: 0 is out of range: must be between 1 and 65535"),
        ({"count": -2}, "x.count: -2 is out of range: must be >= 1 or -1 (-1: all)"),
        ({"weights": [1.0, -0.5]}, "x.weights[1]: -0.5 is out of range: must be >= 0"),
    ],
)
def test_every_config_field_gets_finiteness_and_its_bounds(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(_Example, data, "x")
    assert str(error.value) == message
    opted_in = from_dict(_Example, {"ceiling": float("inf"), "count": -1, "port": 65535, "weights": [0.0]}, "x")
    assert opted_in.ceiling == float("inf") and opted_in.count == -1


def test_cluster_config_fields_are_bounded(config_dir, isolated_home):
    write_config(
        config_dir, "port", "executor: slurm\nssh_tunnel:\n  host: h\n  user: u\n  job_dir: /j\n  port: 99999\n"
    )
    result = ns("run_cmd", "--cluster", "port", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    assert_clean_error(result, "ssh_tunnel.port", "99999", "between 1 and 65535")
    assert_nothing_queued(isolated_home)


# -- YAML: duplicate keys and binary files ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, needles",
    [
        ("executor: none\nmounts: []\n\nexecutor: slurm\n", ["duplicate key 'executor'", "lines 1 and 4"]),
        ("executor: none\nenv_vars:\n  - A=1\nenv_vars:\n  - B=2\n", ["duplicate key 'env_vars'", "lines 2 and 4"]),
        ("executor: none\ncontainers:\n  main: a\n  main: b\n", ["duplicate key 'main'", "lines 3 and 4"]),
    ],
    ids=["executor-twice", "env-vars-twice", "nested-key-twice"],
)
def test_duplicate_keys_in_a_cluster_config(config_dir, isolated_home, text, needles):
    path = write_config(config_dir, "dup", text)
    assert_clean_error(ns("run_cmd", "--cluster", "dup", "--config_dir", str(config_dir), "--expname", "e", "echo hi"),
                       *needles, str(path))  # fmt: skip
    assert_nothing_queued(isolated_home)


@pytest.mark.parametrize("content", [BINARY, b"executor: none\x01\n", LATIN1], ids=["binary", "control-char", "latin1"])
def test_binary_cluster_config_is_one_line(config_dir, isolated_home, content):
    (config_dir / "bin.yaml").write_bytes(content)
    assert_clean_error(ns("run_cmd", "--cluster", "bin", "--config_dir", str(config_dir), "--expname", "e", "echo hi"),
                       "bin.yaml")  # fmt: skip
    assert_nothing_queued(isolated_home)


def test_in_job_config_file_refuses_duplicate_keys_and_binary(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("input_file: a\noutput_file: b\nprompt_config: p\noutput_file: c\n")
    with pytest.raises(UserError, match=r"duplicate key 'output_file' in .*dup.yaml at lines 2 and 4"):
        load_config_from_argv(GenerateConfig, ["--config", str(dup)], "generate")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(BINARY)
    with pytest.raises(UserError, match="not a text file"):
        load_config_from_argv(GenerateConfig, ["--config", str(binary)], "generate")


def test_a_folder_named_like_a_config_is_not_a_known_cluster(config_dir, isolated_home):
    (config_dir / "ghost.yaml").mkdir()
    write_config(config_dir, "real", "executor: none\n")
    assert "ghost" not in known_clusters(str(config_dir)) and "real" in known_clusters(str(config_dir))
    line = assert_clean_error(ns("run_cmd", "--cluster", "ghost", "--config_dir", str(config_dir), "echo hi"),
                              "unknown cluster 'ghost'")  # fmt: skip
    assert "ghost" not in line.split("known clusters:")[1].split("(searched")[0]


# -- safe_name is injective -----------------------------------------------------------------------------------
def test_safe_name_keeps_safe_names_and_never_merges_two_names():
    for name in ("generate", "quickstart-sft", "my.exp_1", "a" * 80):
        assert safe_name(name) == name  # existing paths and goldens stay the same
    names = [
        "ëxp-日本語-🚀",
        "üxp-日本語-🚀",
        "exp-日本語-🚀",
        "xp-_-",
        "xp-日本-🚀",
        "my exp",
        "my_exp",
        "my/exp",
        "",
        "a" * 81,
        "a" * 82,
    ]
    cleaned = [safe_name(name) for name in names]
    assert len(set(cleaned)) == len(names), cleaned
    assert cleaned[0].startswith("xp-_-_") and cleaned[0] == safe_name("ëxp-日本語-🚀")  # stable
    assert all(len(c) <= 80 and all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in c) for c in cleaned)


def test_unicode_experiments_get_separate_log_folders(isolated_home):
    for name in ("ëxp-日本語-🚀", "üxp-日本語-🚀"):  # both were `xp-_-`
        result = ns("run_cmd", "--expname", name, "echo hi")
        assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in (isolated_home / "logs").iterdir())
    assert len(folders) == 2, folders


# -- the real command agrees --------------------------------------------------------------------------------
def test_real_subprocess_agrees(files, tmp_path, isolated_home):
    result = run_ns(*generate_args(files, tmp_path, "++inference.temperature=.nan"))
    assert_clean_error(result, "inference.temperature", "not a finite number")
    result = run_ns(*generate_args(files, tmp_path, input_file="binary"))
    assert_clean_error(result, "--input_file", "not a text file")
    assert_nothing_queued(isolated_home, tmp_path / "out")
