"""Prompt configs: YAML files with a system message, a user template and optional few-shot examples.

    system: "You are a careful mathematician."
    user: "Solve the problem and put the final answer in \\boxed{{}}.\n\n{examples}{problem}"
    few_shot_examples:
      prefix: "Here are some examples.\n\n"
      template: "Problem: {problem}\nSolution: {solution}\n\n"
      suffix: ""
      examples: [{problem: "1+1?", solution: "\\boxed{2}"}]

Templates use Python `str.format` fields filled from each input row; literal braces are doubled (`{{}}`).
A config is named by a path to a YAML file or by a packaged name such as `generic/math`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import from_dict

PACKAGED = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class FewShotConfig:
    template: str
    examples: list[dict] = field(default_factory=list)
    prefix: str = ""
    suffix: str = ""


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

    def examples_text(self) -> str:
        if self.few_shot_examples is None:
            return ""
        shots = self.few_shot_examples
        body = "".join(shots.template.format(**example) for example in shots.examples)
        return shots.prefix + body + shots.suffix

    def messages(self, row: dict, row_number: int | None = None, system_message: str | None = None) -> list[dict]:
        """Chat messages for one input row; a missing field names the field and the row."""
        missing = sorted(name for name in self.fields if name not in row)
        if missing:
            where = f"row {row_number}" if row_number is not None else "the row"
            raise UserError(f"prompt {self.source}: {where} has no field {missing[0]!r} "
                            f"(row fields: {', '.join(sorted(row)) or 'none'})")  # fmt: skip
        values = {**row, "examples": self.examples_text()}
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


def load_prompt_config(name: str) -> PromptConfig:
    from skills_cli.common.yaml_files import read_yaml_file

    path = resolve_prompt_path(name)
    data = read_yaml_file(path, "prompt config")  # a binary file or a duplicate key: one line
    if not isinstance(data, dict):
        raise UserError(f"prompt config {path}: expected a mapping")
    return from_dict(PromptConfig, {**data, "source": str(path)}, f"prompt config {path}")
