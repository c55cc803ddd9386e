#!/usr/bin/env bash
# The README's main command: install skills-cli into .venv if needed, then run recipes/quickstart.py on the
# embedded default (bare local processes; no Docker, no GPU, no network after the install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/ns ]; then
  command -v uv >/dev/null || python3 -m pip install -q uv
  links=$(python3 -m pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'/\1/p" | head -1)
  uv venv -q -p 3.11 .venv 2>/dev/null || uv venv -q .venv
  VIRTUAL_ENV=.venv uv pip install -q ${links:+--find-links "$links"} -e .
fi
exec .venv/bin/python recipes/quickstart.py "$@"
