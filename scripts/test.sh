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

# shellcheck source=scripts/uv_helpers.sh
. scripts/uv_helpers.sh   # ensure_uv, find_links_args, torch_constraint

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

t=$(date +%s.%N); ensure_uv; install_project;            say "venv synced: $(since "$t") s ($UV)"
# after the venv: the cluster's container nodes mount the interpreter the checkout's .venv links to (a fresh clone
# has no .venv before install_project, and its nodes could not run the in-job python)
t=$(date +%s.%N); bash tests/infra/local_cluster.sh up >&2; say "infrastructure up: $(since "$t") s"
# vLLM's own environment (CPU build): the tests parse our rendered vLLM command lines with its argument parser
t=$(date +%s.%N); SKILLS_VLLM_PYTHON=$PWD/$(bash scripts/server_env.sh vllm); export SKILLS_VLLM_PYTHON
say "vLLM server environment: $(since "$t") s ($SKILLS_VLLM_PYTHON)"
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
