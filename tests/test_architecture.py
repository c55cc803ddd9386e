"""Architecture rules that must hold as the project grows: layers, the single nemo-run importer, the single
place that quotes for the shell, and a light `ns --help`."""

from __future__ import annotations

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
    config.write_text('''[tool.importlinter]
root_package = "skills_cli"

[[tool.importlinter.contracts]]
name = "deliberately broken"
type = "forbidden"
source_modules = ["skills_cli.pipeline"]
forbidden_modules = ["skills_cli.common"]
''')
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
