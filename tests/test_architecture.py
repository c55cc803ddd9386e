"""Architecture rules that must hold as the project grows: layers, the single nemo-run importer, the single
place that quotes for the shell, a light `ns --help`, executor kinds named only where executors are defined,
small functions and modules, and package docstrings."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "skills_cli"


def python_files() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # import-linter's entry point, beside this python


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], capture_output=True, text=True,
                          cwd=REPO, timeout=600)  # fmt: skip


def test_import_linter_contracts_hold():
    result = lint_imports(REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", result.stdout), result.stdout


def test_import_linter_fails_on_a_broken_contract(tmp_path):
    """The guard above can fail: a contract the code breaks (the pipeline does import common) is reported."""
    config = tmp_path / "broken.toml"
    config.write_text("""[tool.importlinter]
root_package = "skills_cli"

[[tool.importlinter.contracts]]
name = "deliberately broken"
type = "forbidden"
source_modules = ["skills_cli.pipeline"]
forbidden_modules = ["skills_cli.common"]
""")
    result = lint_imports(config)
    assert result.returncode != 0
    assert "deliberately broken BROKEN" in result.stdout, result.stdout


def test_only_one_module_imports_nemo_run():
    importers = [p.relative_to(REPO).as_posix() for p in python_files()
                 if re.search(r"^\s*(from nemo_run|import nemo_run)", p.read_text(), re.M)]  # fmt: skip
    assert importers == ["skills_cli/pipeline/executors/tunnel.py"]


def test_shell_quoting_lives_in_one_place():
    quoting = [p.relative_to(REPO).as_posix() for p in python_files()
               if re.search(r"shlex\.(quote|join)", p.read_text())]  # fmt: skip
    assert quoting == ["skills_cli/pipeline/shell.py"]


def test_every_module_has_a_docstring():
    missing = [p.relative_to(REPO).as_posix() for p in python_files()
               if not p.read_text().lstrip().startswith(('"""', "'''"))]  # fmt: skip
    assert missing == []


def test_help_imports_nothing_heavy():
    probe = ("import sys; sys.argv = ['ns', '--help']\n"
             "from skills_cli.cli.app import app\n"
             "try:\n    app()\nexcept SystemExit:\n    pass\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'nemo_run', 'docker', 'torch', 'paramiko', 'fabric', 'transformers', 'yaml'})\n"
             "print('HEAVY', heavy, file=sys.stderr)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert "HEAVY []" in result.stderr, result.stderr
    for command in ("run_cmd", "setup", "status", "logs", "cancel"):
        assert command in result.stdout


# -- executor kinds are named only by the cluster config and the executors --------------------------------
KIND_OWNERS = ("skills_cli/pipeline/cluster.py", "skills_cli/pipeline/executors/")


def _is_executor_attribute(node: ast.AST) -> bool:
    """`x.executor` or `x.executor.value`."""
    if isinstance(node, ast.Attribute) and node.attr == "value":
        node = node.value
    return isinstance(node, ast.Attribute) and node.attr == "executor"


def _is_text(node: ast.AST) -> bool:
    """A string literal, or a tuple/list/set of them (`x.executor in ("local", "none")`)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_text(item) for item in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def executor_kind_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every `ExecutorKind` reference and every comparison of an `.executor` with text."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == "ExecutorKind":
            found.append((node.lineno, "ExecutorKind"))
        elif isinstance(node, ast.Attribute) and node.attr == "ExecutorKind":
            found.append((node.lineno, "ExecutorKind"))
        elif isinstance(node, ast.ImportFrom) and any(alias.name == "ExecutorKind" for alias in node.names):
            found.append((node.lineno, "imports ExecutorKind"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_executor_attribute(side) for side in sides) and any(_is_text(side) for side in sides):
                found.append((node.lineno, "compares .executor with a kind name"))
    return sorted(found)


def test_executor_kind_guard_finds_every_form():
    snippet = """
from skills_cli.pipeline.cluster import ExecutorKind
a = cluster.executor is ExecutorKind.SLURM
b = record.executor == "slurm"
c = "none" != self.cluster.executor
d = plan.cluster.executor.value in ("local", "none")
e = cluster.runs_remotely and record.executor_name == "slurm" and values["executor"] == "slurm"
f = f"(executor {cluster.executor})"
"""
    assert executor_kind_uses(snippet) == [
        (2, "imports ExecutorKind"), (3, "ExecutorKind"), (4, "compares .executor with a kind name"),
        (5, "compares .executor with a kind name"), (6, "compares .executor with a kind name"),
    ]  # fmt: skip


def test_only_cluster_config_and_executors_name_executor_kinds():
    """Everything else asks the cluster config's capabilities (jobs_see_local_paths, runs_remotely, ...), so a
    plugin's executor kind works everywhere without edits."""
    offenders = []
    for path in [*python_files(), *sorted((REPO / "recipes").glob("*.py"))]:
        where = path.relative_to(REPO).as_posix()
        if where.startswith(KIND_OWNERS):
            continue
        offenders += [f"{where}:{line}: {what}" for line, what in executor_kind_uses(path.read_text())]
    assert offenders == [], "\n".join(offenders)


# -- size limits and package docstrings ---------------------------------------------------------------------
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function or method longer than `limit` lines (def line to last line)."""
    return sorted((node.lineno, node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.end_lineno - node.lineno + 1 > limit)  # fmt: skip


def test_long_function_guard_can_fail():
    body = "".join(f"    x{i} = {i}\n" for i in range(3))
    source = f"def short():\n{body}\nclass A:\n    def method(self):\n{body.replace('    ', '        ')}"
    assert long_functions(source, limit=3) == [(1, "short", 4), (7, "method", 4)]
    assert long_functions(source, limit=4) == []


def test_no_function_is_longer_than_60_lines():
    offenders = [f"{path.relative_to(REPO).as_posix()}:{line}: {name} has {length} lines"
                 for path in python_files() for line, name, length in long_functions(path.read_text())]  # fmt: skip
    assert offenders == [], "\n".join(offenders)


def test_no_module_is_longer_than_600_lines():
    offenders = [f"{path.relative_to(REPO).as_posix()}: {n} lines" for path in python_files()
                 if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]  # fmt: skip
    assert offenders == [], "\n".join(offenders)


def test_every_package_says_what_it_is():
    offenders = []
    for path in sorted(PACKAGE.rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if not docstring.strip() or "placeholder" in docstring.lower():
            offenders.append(f"{path.relative_to(REPO).as_posix()}: {docstring[:60]!r}")
    assert offenders == [], "\n".join(offenders)
