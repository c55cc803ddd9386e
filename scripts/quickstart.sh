#!/usr/bin/env bash
# The README's main command: install skills-cli with its hf and grading extras into .venv if needed, then run
# recipes/quickstart.py on the embedded default (bare local processes; no Docker, no GPU, no network after the
# install). Arguments go to the recipe, e.g. `bash scripts/quickstart.sh --size small`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! .venv/bin/python -c "import skills_cli, torch, transformers, matplotlib" 2>/dev/null; then
  command -v uv >/dev/null || python3 -m pip install -q uv
  links=$(python3 -m pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'/\1/p" | head -1)
  # a CPU torch wheel in the find-links folder is pinned, so the resolver never picks a CUDA build
  wheel=$( [ -n "$links" ] && find "$links" -maxdepth 1 -name 'torch-*+cpu-*.whl' -printf '%f\n' 2>/dev/null | sort -V | tail -n1 || true)
  constraint=$(mktemp)
  [ -n "$wheel" ] && { wheel=${wheel#torch-}; echo "torch==${wheel%%-*}" >"$constraint"; }
  [ -x .venv/bin/python ] || uv venv -q -p 3.11 .venv 2>/dev/null || uv venv -q .venv
  VIRTUAL_ENV=.venv uv pip install -q ${links:+--find-links "$links"} --constraint "$constraint" --constraint constraints.txt -e '.[hf,grading]'
  rm -f "$constraint"
fi
exec .venv/bin/python recipes/quickstart.py "$@"
