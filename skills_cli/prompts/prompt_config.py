"""Prompt configs: YAML files with a system message, a user template and optional few-shot examples.

    system: "You are a careful mathematician."
    user: "Solve the problem and put the final answer in \\boxed{{}}.\n\n{examples}{problem}"
    few_shot_examples:
      prefix: "Here are some examples.\n\n"
      template: "Problem: {problem}\nSolution: {solution}\n\n"
      suffix: ""
      examples: [{problem: "1+1?", solution: "\\boxed{2}"}]

Few-shot examples may instead be rows of a prepared split of the benchmark, named by id, so that benchmark data
never has to be copied into a config (MBPP's paper prompt uses its tasks 2, 3 and 4):

    few_shot_examples:
      template: "Task: {text}\n```python\n{code}\n```\n\n"
      split: prompt
      ids: [mbpp-2, mbpp-3, mbpp-4]

They are read from `<data_dir>/<split>.jsonl` when the config is loaded with `data_dir` (the folder of the
prepared input file, `<data>/<benchmark>/`); a config loaded without it still validates, and says what is
missing if asked for messages.

Or each row gets its own examples: the first `count` rows of the split whose `match` field equals the row's
(MMLU's paper prompt: the five dev questions of the row's subject):

    few_shot_examples:
      template: "{problem}\n{options_text}\nAnswer: {expected_answer}\n\n"
      split: dev
      match: subject
      count: 5

Templates use Python `str.format` fields filled from each input row; literal braces are doubled (`{{}}`).
A config is named by a path to a YAML file or by a packaged name such as `generic/math`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.common.typed_config import from_dict

PACKAGED = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class FewShotConfig:
    template: str
    examples: list[dict] = field(default_factory=list)
    prefix: str = ""
    suffix: str = ""
    # instead of `examples`: the rows of this prepared split with these ids, in this order (see the docstring)
    split: str | None = None
    ids: list[str] = field(default_factory=list)
    # or, per row: the first `count` rows of the split whose field `match` equals the row's
    match: str | None = None
    count: int | None = None

    def chosen_for(self, row: dict) -> list[dict]:
        """The examples shown before `row`: all of them, or those of its `match` value."""
        if self.match is None:
            return self.examples
        same = [example for example in self.examples if example.get(self.match) == row.get(self.match)]
        return same[: self.count] if self.count is not None else same


@dataclass(frozen=True)
class PromptConfig:
    user: str
    system: str = ""
    few_shot_examples: FewShotConfig | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name, template in (("user", self.user), ("system", self.system)):
            try:
                template_fields(template)
            except ValueError as error:
                raise UserError(f"prompt config {self.source}: {name} template is not valid ({error}); "
                                "write literal braces as {{ and }}") from None  # fmt: skip

    @property
    def fields(self) -> set[str]:
        """Row fields the templates need (`examples` is filled from the few-shot block)."""
        return (template_fields(self.user) | template_fields(self.system)) - {"examples"}

    def examples_text(self, row: dict | None = None) -> str:
        if self.few_shot_examples is None:
            return ""
        shots = self.few_shot_examples
        if shots.split is not None and not shots.examples:
            raise UserError(f"prompt config {self.source}: its few-shot examples are rows of the prepared split "
                            f"{shots.split!r}, which are read only when it is loaded with the data folder "
                            "(load_prompt_config(name, data_dir=...))")  # fmt: skip
        chosen = shots.chosen_for(row or {})
        body = "".join(self.example_text(number, example) for number, example in enumerate(chosen, 1))
        return shots.prefix + body + shots.suffix

    def example_text(self, number: int, example: dict) -> str:
        try:
            return self.few_shot_examples.template.format(**example)
        except (KeyError, IndexError) as error:
            name = example.get("id", f"number {number}")
            raise UserError(f"prompt config {self.source}: few-shot example {name} has no {error} "
                            "for the template") from None  # fmt: skip

    def messages(self, row: dict, row_number: int | None = None, system_message: str | None = None) -> list[dict]:
        """Chat messages for one input row; a missing field names the field and the row."""
        missing = sorted(name for name in self.fields if name not in row)
        if missing:
            where = f"row {row_number}" if row_number is not None else "the row"
            raise UserError(f"prompt {self.source}: {where} has no field {missing[0]!r} "
                            f"(row fields: {', '.join(sorted(row)) or 'none'})")  # fmt: skip
        values = {**row, "examples": self.examples_text(row)}
        system = system_message if system_message is not None else self.system.format(**values)
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": self.user.format(**values)}]


def template_fields(template: str) -> set[str]:
    """Top-level field names of a format string (`{a.b}` and `{a[0]}` count as `a`)."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            names.add(name.split(".")[0].split("[")[0])
        elif name == "":
            raise ValueError("positional {} field")
    return names


def resolve_prompt_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    if path.is_dir() and not (PACKAGED / f"{name}.yaml").is_file():
        raise UserError(f"prompt config {name!r} is a directory; give a .yaml file or a packaged name")
    packaged = PACKAGED / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    known = sorted(str(p.relative_to(PACKAGED).with_suffix("")) for p in PACKAGED.rglob("*.yaml"))
    raise UserError(f"prompt config {name!r} not found (a .yaml path, or one of: {', '.join(known)})")


def load_prompt_config(name: str, data_dir: str | Path | None = None) -> PromptConfig:
    """The config; with `data_dir` (the prepared benchmark folder), few-shot examples named by split and ids
    are read from it."""
    from skills_cli.common.yaml_files import read_yaml_file

    path = resolve_prompt_path(name)
    data = read_yaml_file(path, "prompt config")  # a binary file or a duplicate key: one line
    if not isinstance(data, dict):
        raise UserError(f"prompt config {path}: expected a mapping")
    config = from_dict(PromptConfig, {**data, "source": str(path)}, f"prompt config {path}")
    check_example_source(config.few_shot_examples, str(path))
    return with_data_examples(config, Path(data_dir)) if data_dir is not None else config


def check_example_source(shots: FewShotConfig | None, source: str) -> None:
    """Examples are written in the config or named by split and ids, not both."""
    if shots is None or (shots.split is None and not shots.ids and shots.match is None):
        return
    if shots.split is None or bool(shots.ids) == (shots.match is not None):
        raise UserError(f"prompt config {source}: few_shot_examples from data needs a split and either ids or "
                        "match (with an optional count)")  # fmt: skip
    if shots.examples:
        raise UserError(f"prompt config {source}: few_shot_examples has both examples and split; give one")
    if shots.count is not None and (shots.match is None or shots.count < 1):
        raise UserError(f"prompt config {source}: few_shot_examples.count needs match and must be >= 1")


def with_data_examples(config: PromptConfig, data_dir: Path) -> PromptConfig:
    """The config with its few-shot examples read from `data_dir/<split>.jsonl` (unchanged without a split)."""
    shots = config.few_shot_examples
    if shots is None or shots.split is None:
        return config
    path = data_dir / f"{shots.split}.jsonl"
    if not path.is_file():
        raise UserError(f"prompt config {config.source}: few-shot split {shots.split!r} is not prepared "
                        f"(no {path}); prepare every split of the benchmark: ns prepare_data {data_dir.name}")  # fmt: skip
    if shots.match is not None:  # every row of the split; each prompt picks those of its own match value
        return replace(config, few_shot_examples=replace(shots, examples=read_jsonl(path)))
    rows = {row.get("id"): row for row in read_jsonl(path)}
    missing = [row_id for row_id in shots.ids if row_id not in rows]
    if missing:
        raise UserError(f"prompt config {config.source}: {path} has no row with id {missing[0]!r} (few-shot ids)")
    return replace(config, few_shot_examples=replace(shots, examples=[rows[row_id] for row_id in shots.ids]))
