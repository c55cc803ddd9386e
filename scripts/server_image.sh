#!/usr/bin/env bash
# scripts/server_image.sh KIND BASE_IMAGE [TAG] -- build (once) a container image of a model server kind from its
# environment (scripts/server_env.sh KIND), for the `containers.KIND` role of Docker and Slurm-container clusters,
# where no registry is reachable (CI, air-gapped sites). Prints the tag.
#   vllm: vLLM's CPU build. BASE_IMAGE needs python3.11 (the environment's compiled packages are cp311) and a
#         Debian-like /usr/lib/x86_64-linux-gnu. Triton is left out: it is a GPU compiler (vLLM's CPU build
#         says "doesn't include CPU backend" and disables it) and a third of the environment's size.
#         libnuma, which vLLM's CPU kernels link, is copied from this (Debian) machine when the base lacks it.
# Idempotent: the tag names the environment's package list and the base image, and an existing tag is reused.
# Where a registry is reachable, use the server's own images instead (vllm/vllm-openai on GPUs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

kind=${1:?usage: scripts/server_image.sh vllm BASE_IMAGE [TAG]}
base=${2:?usage: scripts/server_image.sh vllm BASE_IMAGE [TAG]}
engine=${CONTAINER_ENGINE:-docker}
case $kind in
  vllm) left_out=(triton) ;;
  *) echo "error: no server image for kind '$kind' (known: vllm)" >&2; exit 2 ;;
esac
python=$(bash scripts/server_env.sh "$kind")
env_dir=$(dirname "$(dirname "$python")")
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
digest=$( { cat "$env_dir/.skills-cli-server-env"; echo "$base ${left_out[*]}"; } | sha256sum | cut -c1-12)
tag=${3:-skills-cli-$kind:$digest}
if "$engine" image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi

context=$(mktemp -d "${TMPDIR:-/tmp}/skills-server-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/site-packages" "$context/lib"
# hard links when the environment is on the same filesystem (no copy of GBs), a copy otherwise
excludes=(); for name in "${left_out[@]}"; do excludes+=(--exclude "/$name" --exclude "/$name-*.dist-info"); done
rsync -a --link-dest="$site" "${excludes[@]}" "$site/" "$context/site-packages/"
cp -L /usr/lib/x86_64-linux-gnu/libnuma.so.1 "$context/lib/" 2>/dev/null || true
cat >"$context/Dockerfile" <<EOF
FROM $base
COPY lib/ /opt/skills-server-libs/
# python3's own site directory: a job's PYTHONPATH (our code) then adds to it instead of hiding it
COPY site-packages/ /usr/local/lib/python3.11/dist-packages/
RUN for lib in /opt/skills-server-libs/*; do [ -e "/usr/lib/x86_64-linux-gnu/\$(basename "\$lib")" ] || cp "\$lib" /usr/lib/x86_64-linux-gnu/; done
ENV PYTHONUNBUFFERED=1
RUN python3 -c "import torch, transformers, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__)"
EOF
DOCKER_BUILDKIT=0 "$engine" build -q -t "$tag" "$context" >&2
echo "$tag"
