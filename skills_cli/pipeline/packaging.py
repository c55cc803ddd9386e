"""Ship the project's own code with every job, so a job runs the version that submitted it.

The `skills_cli` package files are hashed into a content address. Local jobs get a copy under
`$SKILLS_CLI_HOME/code/<hash>/`; Slurm jobs get the same tree under `<job_dir>/code/<hash>/`, uploaded once
per version (a later submission of the same code uploads nothing). Jobs put that directory first on
PYTHONPATH. Unlike a git archive this also ships uncommitted edits: what you ran is what you tested.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import skills_cli

PACKAGE_ROOT = Path(skills_cli.__file__).resolve().parent
_SHIPPED_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".jinja", ".txt"}


@dataclass(frozen=True)
class CodeSnapshot:
    digest: str
    files: tuple[tuple[str, bytes], ...]  # (path relative to the code root, content)

    @property
    def dirname(self) -> str:
        return f"code/{self.digest}"


@lru_cache(maxsize=1)
def snapshot() -> CodeSnapshot:
    """Hash the package's source files (content and relative path) into one digest."""
    files = []
    # followlinks: the packaged cluster_configs directory is a link to the repository's top-level one.
    for directory, dirnames, filenames in os.walk(PACKAGE_ROOT, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            path = Path(directory) / filename
            if path.suffix in _SHIPPED_SUFFIXES:
                relative = str(Path("skills_cli") / path.relative_to(PACKAGE_ROOT))
                files.append((relative, path.read_bytes()))
    digest = hashlib.sha256()
    for relative, content in files:
        digest.update(relative.encode() + b"\0" + hashlib.sha256(content).digest())
    return CodeSnapshot(digest.hexdigest()[:16], tuple(files))


def materialize(code: CodeSnapshot, root: Path) -> Path:
    """Write the snapshot under `root/code/<digest>` once (atomically); return that directory."""
    target = root / code.dirname
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".code-", dir=target.parent))
    for relative, content in code.files:
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    try:
        staging.rename(target)
    except OSError:  # another submission won the race with identical content
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tarball(code: CodeSnapshot, prefix: str) -> bytes:
    """A gzip tar of the snapshot with every path under `prefix/`, for a single upload."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for relative, content in code.files:
            info = tarfile.TarInfo(f"{prefix}/{relative}")
            info.size, info.mode = len(content), 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
