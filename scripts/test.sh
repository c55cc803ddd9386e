#!/usr/bin/env bash
# scripts/test.sh -- THE test command: brings up the local infrastructure (Slurm + slurmdbd, sshd, dockerd,
# podman; tests/infra/local_cluster.sh), syncs the project into .venv with uv, runs ruff (check + format
# --check), then pytest.
#   bash scripts/test.sh [pytest args...]        e.g.  bash scripts/test.sh -x -k slurm
# Needs root (the infrastructure starts system daemons). Phase timings go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATE=${SKILLS_INFRA_STATE:-/tmp/skills-cli-infra}
T0=$(date +%s.%N)
say() { printf '[test.sh] %s\n' "$*" >&2; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# uv: use the one on PATH, else install it from PyPI. --target keeps it out of the system site-packages,
# which Debian's python3 refuses to touch (PEP 668, "externally-managed-environment").
ensure_uv() {
  local dir=${XDG_CACHE_HOME:-$HOME/.cache}/skills-cli/uv
  if command -v uv >/dev/null 2>&1; then UV=$(command -v uv); return; fi
  if [ ! -x "$dir/bin/uv" ]; then
    python3 -m pip install --quiet --root-user-action=ignore --upgrade --target "$dir" uv >&2
  fi
  UV=$dir/bin/uv
}

# --find-links folders from pip's configuration (config files or PIP_FIND_LINKS), e.g. a local wheel folder
# holding a CPU-only torch; uv does not read pip's configuration, so we pass them on.
find_links_args() {
  local line dir
  line=$(python3 -m pip config list 2>/dev/null | grep -m1 -E '^[^=]*\.find-links=' || true)
  line=${line#*=}; line=${line//\'/}
  for dir in $line; do [ -e "$dir" ] && printf -- '--find-links\n%s\n' "$dir"; done
  return 0
}

# torch must never resolve to a CUDA build (GBs of nvidia-* wheels, useless on CI). If a find-links folder
# offers a +cpu torch wheel, pin that exact build for whatever extra might pull torch in.
torch_constraint() {
  local dir whl
  for dir in "$@"; do
    [ -d "$dir" ] || continue
    whl=$(find "$dir" -maxdepth 1 -name 'torch-*+cpu-*.whl' -printf '%f\n' | sort -V | tail -n1)
    [ -n "$whl" ] && { whl=${whl#torch-}; echo "torch==${whl%%-*}"; return 0; }
  done
  return 0
}

install_project() {
  local args=() constraints
  mapfile -t args < <(find_links_args)
  constraints=$(mktemp)
  torch_constraint "${args[@]}" >"$constraints"
  [ -s "$constraints" ] && args+=(--constraint "$constraints")
  args+=(--constraint constraints.txt)  # the versions the suite last passed with (see the file)
  [ -x .venv/bin/python ] || { rm -rf .venv; "$UV" venv -q -p 3.11 .venv >&2; }
  VIRTUAL_ENV=.venv "$UV" pip install -q -e '.[dev,hf,megatron,trackers,grading]' "${args[@]}" >&2
  rm -f "$constraints"
  # (nvidia-ml-py, a small NVML binding swanlab needs, is fine; list first, grep after: `uv pip list | grep -q` under pipefail can fail on SIGPIPE and hide a match)
  if grep -qiE '^nvidia-(cublas|cudnn|cuda|nccl|cusparse|cufft|curand|cusolver|nvjitlink|nvtx)' <<<"$(VIRTUAL_ENV=.venv "$UV" pip list 2>/dev/null)"; then
    say "ERROR: .venv contains nvidia-* packages (a CUDA torch build slipped in); remove .venv and retry"
    exit 1
  fi
}

t=$(date +%s.%N); bash tests/infra/local_cluster.sh up >&2; say "infrastructure up: $(since "$t") s"
t=$(date +%s.%N); ensure_uv; install_project;            say "venv synced: $(since "$t") s ($UV)"
# lint first: a finding fails the test command before pytest starts (import-linter runs inside pytest,
# tests/test_architecture.py, next to the AST guards)
LINTED=(skills_cli tests bench tools recipes)
.venv/bin/ruff check "${LINTED[@]}" >&2 && .venv/bin/ruff format --check "${LINTED[@]}" >&2
say "ruff check and ruff format --check: clean"

# shellcheck source=/dev/null
. "$STATE/env.sh"
# the benchmark mirror the tests read (never copied into the repository): ../shared next to the checkout
if [ -z "${SKILLS_BENCHMARKS_DIR:-}" ]; then
  for dir in "$PWD/../shared/data/benchmarks" /work/shared/data/benchmarks; do
    [ -f "$dir/gsm8k/test.jsonl" ] && { export SKILLS_BENCHMARKS_DIR=$(cd "$dir" && pwd); break; }
  done
fi
say "benchmark mirror: ${SKILLS_BENCHMARKS_DIR:-not found (the evaluation tests will fail)}"
export SKILLS_REQUIRE_INFRA=1   # the conftest turns missing infrastructure into a failure, not a skip
say "setup total: $(since "$T0") s; running pytest $*"
exec .venv/bin/python -m pytest "$@"
