"""Architecture rules that must hold as the project grows: layers, the single nemo-run importer, the single
place that quotes for the shell, and a light `ns --help`."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "skills_cli"


def python_files() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_linter_contracts_hold():
    result = subprocess.run([sys.executable, "-m", "importlinter.cli", "--config", str(REPO / "pyproject.toml")],
                            capture_output=True, text=True, cwd=REPO)  # fmt: skip
    if "No module named" in result.stderr:  # older import-linter entry point
        result = subprocess.run([str(REPO / ".venv/bin/lint-imports")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower() or "0 broken" in result.stdout


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
