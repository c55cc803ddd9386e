"""The documentation against the code it documents.

- every command in COMMANDS has docs/commands/<api name>.md, whose option tables list exactly the flags and
  arguments its real `ns ... --help` prints, each with a meaning and the spec's default;
- every `ns ...` line in a bash block of any page names a real command with real flags (and valid choices),
  and its `++key` overrides exist in the program's typed config; every Python block parses and calls the API
  with real argument names;
- docs/training.md: every `++key` exists in the typed SFT/GRPO configs, and its reference tables list exactly
  their keys with their defaults;
- docs/clusters.md: the key reference lists exactly the ClusterConfig/SSHTunnelConfig fields, and every YAML
  example loads as a cluster config;
- docs/index.md links every page, and every relative link resolves.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import typing
from pathlib import Path

import pytest
from conftest import REPO, run_ns
from test_cli_surface import help_arguments, help_flags

import skills_cli.pipeline as api
from skills_cli.inference.config import GenerateConfig
from skills_cli.pipeline.cluster import ClusterConfig, SSHTunnelConfig, parse_cluster_config
from skills_cli.pipeline.commands import COMMANDS
from skills_cli.pipeline.options import CommandSpec, Option
from skills_cli.training.algorithms import ALGORITHMS

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
SFTConfig, GRPOConfig = ALGORITHMS.get("sft").config_class, ALGORITHMS.get("grpo").config_class
OVERRIDE_CONFIGS = {"sft": SFTConfig, "grpo": GRPOConfig, "generate": GenerateConfig, "eval": GenerateConfig}


def page_of(spec: CommandSpec) -> Path:
    return DOCS / "commands" / f"{spec.api_name}.md"


# -- markdown parsing -------------------------------------------------------------------------------------
def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row (header and separator rows included; callers filter)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            rows.append([cell.strip() for cell in cells])
    return rows


def code_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if m.group(1) in languages]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def normal_flag(flag: str) -> str:
    return "--" + flag[2:].replace("-", "_")


def documented_options(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """{--flag: row} and {ARGUMENT: row} from the page's tables (rows whose first cell is `--flag` or `NAME`)."""
    flags, arguments = {}, {}
    for row in table_rows(text):
        names = ticked(row[0]) if row else []
        if not names:
            continue
        if names[0].startswith("--"):
            for name in names:
                flags[normal_flag(name)] = row
        elif re.fullmatch(r"[A-Z][A-Z_]*(\.\.\.)?", names[0]):
            arguments[names[0].rstrip(".").lower()] = row
    return flags, arguments


def default_text_ok(option: Option, cell: str) -> bool:
    default = option.default
    if default is ...:
        return "required" in cell
    if isinstance(default, bool):
        return ("on" if default else "off") in cell
    if default in (None, "", []):
        return True  # a sentence says what happens (e.g. "the cluster config's")
    if isinstance(default, float) and default == int(default):
        return bool(re.search(rf"(?<![\d.]){int(default)}(\.0)?(?![\d.])", cell))
    return str(default) in cell


# -- the command pages ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", COMMANDS, ids=[spec.api_name for spec in COMMANDS])
def test_every_command_has_a_page_documenting_exactly_its_help(spec):
    page = page_of(spec)
    assert page.is_file(), (
        f"no documentation page {page.relative_to(REPO)} for `ns {' '.join([*spec.groups[:1], spec.name])}`"
    )
    text = page.read_text()
    help_text = run_ns(*spec.groups[:1], spec.name, "--help", check=True).stdout
    printed = {normal_flag(f) for f in help_flags(help_text)} - {"--help"}
    flags, arguments = documented_options(text)
    assert set(flags) == printed, (f"{page.name}: documented but not in --help: {sorted(set(flags) - printed)}; "
                                   f"in --help but not documented: {sorted(printed - set(flags))}")  # fmt: skip
    assert set(arguments) == {a.rstrip(".") for a in help_arguments(help_text)}, page.name
    for option in spec.options:
        row = arguments[option.name] if option.positional else flags[f"--{option.name}"]
        assert len(row) >= 3 and row[1], f"{page.name}: {option.name} has no meaning"
        assert default_text_ok(option, row[2]), (
            f"{page.name}: default of {option.name} is {option.default!r}, not {row[2]!r}"
        )
    command = " ".join(["ns", *spec.groups[:1], spec.name])
    cli_examples = [line for block in code_blocks(text, ("bash",)) for line in ns_lines(block)
                    if line.startswith(command + " ") or line == command]  # fmt: skip
    python_examples = [block for block in code_blocks(text, ("python",)) if spec.api_name in api_calls(block)]
    assert cli_examples and python_examples, f"{page.name}: needs CLI and Python API examples"
    assert len(cli_examples) + len(python_examples) >= 2


# -- examples everywhere ----------------------------------------------------------------------------------
def ns_lines(block: str) -> list[str]:
    """The `ns ...` command lines of a shell block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        for part in re.split(r"\s(?:&&|\|\||;)\s", line):
            if part.startswith("ns ") or part == "ns":
                lines.append(part.split(" #")[0].strip())
    return lines


def spec_for(words: list[str]) -> tuple[CommandSpec, list[str]]:
    for spec in COMMANDS:
        for group in spec.groups or (None,):  # `ns train sft` and `ns nemo_rl sft` alike
            prefix = [group, spec.name] if group else [spec.name]
            if words[: len(prefix)] == prefix:
                return spec, words[len(prefix) :]
    raise AssertionError(f"`ns {' '.join(words)}`: no such command")


def config_has_key(cls: type, dotted: str) -> bool:
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return False
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        cls = hints[part]
    return True


def check_ns_line(line: str, where: str) -> None:
    words = shlex.split(line)[1:]
    spec, rest = spec_for(words)
    options = {o.name: o for o in spec.options}
    positional = [o for o in spec.options if o.positional]
    index = 0
    while index < len(rest):
        word = rest[index]
        if word.startswith("--"):
            name = word[2:].split("=", 1)[0].replace("-", "_")
            assert name in options and not options[name].positional, f"{where}: `{line}`: unknown flag {word}"
            option = options[name]
            if option.type is not bool and "=" not in word:
                index += 1
                value = rest[index] if index < len(rest) else None
            else:
                value = word.split("=", 1)[1] if "=" in word else None
            if option.choices and value is not None:
                assert value in option.choices, f"{where}: `{line}`: {word} {value} is not one of {option.choices}"
        elif word.startswith("++"):
            assert spec.extra_args, f"{where}: `{line}`: {spec.name} takes no ++ overrides"
            key = word[2:].split("=", 1)[0]
            config = OVERRIDE_CONFIGS.get(spec.name)
            if config is not None:
                assert config_has_key(config, key), f"{where}: `{line}`: ++{key} is not a key of {config.__name__}"
        elif spec.name == "run_cmd":
            return  # the command to run starts here: its own flags are its business
        else:
            assert positional or spec.extra_args, f"{where}: `{line}`: unexpected argument {word!r}"
        index += 1


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_examples_use_real_commands_flags_and_api_arguments(page):
    text = page.read_text()
    for block in code_blocks(text, ("bash", "sh")):
        for line in ns_lines(block):
            check_ns_line(line, page.name)
    functions = {spec.api_name: spec for spec in COMMANDS}
    for block in code_blocks(text, ("python",)):
        ast.parse(block)  # every Python example parses
        for name, calls in api_calls(block).items():
            spec = functions[name]
            known = {o.name for o in spec.options} | {"ctx"}
            for call in calls:
                given = {k.arg for k in call.keywords}
                assert given <= known, f"{page.name}: {name}() has no argument {sorted(given - known)}"
                missing = {o.name for o in spec.options if o.default is ...} - given
                assert not missing, f"{page.name}: {name}() needs {sorted(missing)}"


def api_calls(block: str) -> dict[str, list[ast.Call]]:
    """Calls of the Python API in a code block, by API name (`from skills_cli.pipeline import eval as evaluate`
    counts as `eval`); importing a name the API does not have fails."""
    tree = ast.parse(block)
    local = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "skills_cli.pipeline":
            for alias in node.names:
                assert hasattr(api, alias.name), f"skills_cli.pipeline has no {alias.name}"
                local[alias.asname or alias.name] = alias.name
    names = {spec.api_name for spec in COMMANDS}
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and local.get(node.func.id) in names:
            calls.setdefault(local[node.func.id], []).append(node)
    return calls


# -- training.md ------------------------------------------------------------------------------------------
def leaf_keys(cls: type, prefix: str = "") -> dict[str, object]:
    """{dotted key: default} of every leaf of a typed config."""
    out: dict[str, object] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for key in leaf_keys(kind):
                sub = default
                for part in key.split("."):
                    sub = getattr(sub, part)
                out[f"{prefix}{f.name}.{key}"] = sub
        else:
            out[prefix + f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def section(text: str, title: str) -> str:
    match = re.search(rf"^#+ {re.escape(title)}\s*$(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def key_rows(text: str) -> dict[str, list[str]]:
    return {ticked(row[0])[0]: row for row in table_rows(text) if row and ticked(row[0])
            and not ticked(row[0])[0].startswith("--")}  # fmt: skip


def default_cell(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    return str(value).replace("'", "")


def test_training_overrides_exist_in_the_typed_configs():
    text = (DOCS / "training.md").read_text()
    # `++policy.megatron_cfg.*` names a section; `++key=value` is the placeholder
    keys = {key.rstrip(".") for key in re.findall(r"\+\+([A-Za-z_][\w.]*)", text)} - {"key", "section.key"}
    assert len(keys) > 20
    for key in keys:
        assert config_has_key(SFTConfig, key) or config_has_key(GRPOConfig, key), (
            f"training.md: ++{key} is no config key"
        )


def test_training_reference_lists_exactly_the_config_keys_with_their_defaults():
    text = (DOCS / "training.md").read_text()
    sft, grpo = leaf_keys(SFTConfig), leaf_keys(GRPOConfig)
    grpo_only = {k: v for k, v in grpo.items() if k not in sft or sft[k] != v}
    for title, expected in (("SFT keys", sft), ("GRPO keys", grpo_only)):
        rows = key_rows(section(text, title))
        assert set(rows) == set(expected), (f"{title}: documented but not in the config: {sorted(set(rows) - set(expected))}; "
                                            f"undocumented: {sorted(set(expected) - set(rows))}")  # fmt: skip
        for key, row in rows.items():
            assert row[1].strip("`") == default_cell(expected[key]), (
                f"{title}: {key} default {row[1]} != {expected[key]!r}"
            )
            assert len(row) >= 3 and row[2], f"{title}: {key} has no meaning"


# -- clusters.md ------------------------------------------------------------------------------------------
def test_cluster_reference_lists_exactly_the_config_keys():
    text = (DOCS / "clusters.md").read_text()
    rows = key_rows(section(text, "Key reference"))
    expected = {f.name for f in dataclasses.fields(ClusterConfig)} - {"name", "source"}
    expected |= {f"ssh_tunnel.{f.name}" for f in dataclasses.fields(SSHTunnelConfig)}
    assert set(rows) == expected, (f"documented but not config keys: {sorted(set(rows) - expected)}; "
                                   f"undocumented: {sorted(expected - set(rows))}")  # fmt: skip
    mentioned = set(re.findall(r"`(ssh_tunnel\.\w+)`", text))
    assert mentioned <= expected


def test_every_cluster_yaml_example_loads(monkeypatch):
    import yaml

    blocks = code_blocks((DOCS / "clusters.md").read_text(), ("yaml",))
    assert len(blocks) >= 5
    monkeypatch.setenv("HOME", "/home/me")
    for block in blocks:
        for name in re.findall(r"\$\{(\w+)\}", block):
            monkeypatch.setenv(name, f"/value/of/{name}")
        parse_cluster_config(yaml.safe_load(block), "example")


# -- index and links --------------------------------------------------------------------------------------
def test_index_links_every_page_and_links_resolve():
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        if page.name != "index.md":
            assert f"({page.relative_to(DOCS).as_posix()})" in index, f"index.md does not link {page.relative_to(DOCS)}"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            assert (page.parent / target).resolve().exists(), f"{page.relative_to(DOCS)}: broken link {target}"
