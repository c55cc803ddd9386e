# scripts/uv_helpers.sh -- sourced by scripts/test.sh and scripts/server_env.sh: finding uv and the local wheels.

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
