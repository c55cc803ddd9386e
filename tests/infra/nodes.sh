# tests/infra/nodes.sh -- sourced by local_cluster.sh: the compute nodes of the local cluster.
#
# Each node is a docker container running munged + slurmd (the Debian slurmd package of the host's exact Slurm
# version, installed once into an image cached in dockerd) with the host's munge key mounted read-only. The nodes
# live on a user-defined docker bridge network ($NODE_BRIDGE, $NODE_NET.0/24): every node has its own network
# namespace and address, and the host is the bridge's gateway ($NODE_NET.1), so traffic between nodes (Slurm's
# fan-out, torchrun/gloo rendezvous) really crosses an interface. Names resolve through /etc/hosts, on the host
# (lines carrying $MARK) and in each node (docker --add-host).
#
# Shared with the host at the same paths, like a cluster's shared filesystem: /tmp (job dirs, pytest tmp
# folders), the checkout ($REPO) and, read-only, the Python installation its .venv links to. Slurm's per-node
# state (spool, log and pid dirs under $STATE) is NOT shared: each node mounts its own $STATE/nodes/NAME/* over
# those paths, so slurm.conf stays one file for all nodes.
#
# While nodes are enabled ($NODES_DIR/enabled, and the bridge exists), slurm.conf names the controller and the
# host node by the gateway address instead of 127.0.0.1: a container reaches the host only there.

NODE_COUNT=${SKILLS_INFRA_NODE_COUNT:-2}
NODE_NET=${SKILLS_INFRA_NODE_NET:-10.250.0}
NODE_NETWORK=skills-infra-nodes
NODE_BRIDGE=skills0                      # the host side of the network, named so `ip addr` shows what it is
NODE_GW=$NODE_NET.1
NODES_DIR=$STATE/nodes
MULTI_PARTITION=multi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODE_NAMES=()
for ((i = 1; i <= NODE_COUNT; i++)); do NODE_NAMES+=("$CLUSTER-n$i"); done

node_ip() { echo "$NODE_NET.$((10 + ${1##*-n}))"; }   # skills-n1 -> 10.250.0.11

# nodes_configured: slurm.conf should describe the container nodes (decided before dockerd runs, so that a
# second `up` writes the same slurm.conf and restarts nothing)
nodes_configured() {
  [ "$NODE_COUNT" -gt 0 ] && [ -e "$NODES_DIR/enabled" ] && ip link show "$NODE_BRIDGE" >/dev/null 2>&1
}

# the address slurmctld and the host node are reached at
controller_addr() { if nodes_configured; then echo "$NODE_GW"; else echo 127.0.0.1; fi; }

# node_conf_lines CPUS MEM: the slurm.conf lines for the container nodes and the multi partition, each
# after a newline (so that none at all leaves slurm.conf as the single-node setup wrote it)
node_conf_lines() {
  local n
  nodes_configured || return 0
  for n in "${NODE_NAMES[@]}"; do
    printf '\n%s' "NodeName=$n NodeAddr=$(node_ip "$n") CPUs=$1 RealMemory=$2 State=UNKNOWN"
  done
  printf '\n%s' "PartitionName=$MULTI_PARTITION Nodes=$HOST,$(IFS=,; echo "${NODE_NAMES[*]}") MaxTime=INFINITE State=UP"
}

multi_nodes() { if nodes_configured; then (IFS=,; echo "$HOST,${NODE_NAMES[*]}"); fi; }

# ---------------------------------------------------------------- image

slurm_version() { dpkg-query -W -f='${Version}' slurmd; }
# what a compute node has: slurmd, and the client commands a batch script runs on its first node (srun, scontrol)
NODE_PACKAGES="slurmd slurm-client slurm-wlm-basic-plugins munge libmunge2"
node_image() {
  echo "skills-test/slurm-node:$(slurm_version | tr -c 'A-Za-z0-9_.\n-' _)-munge$(id -u munge)-$(echo "$NODE_PACKAGES" | cksum | cut -c1-6)"
}

# The build script run inside a container of the base image: the munge user gets the host's uid/gid first, so
# that the host's key file (mode 400, owned by that uid) is readable by the node's munged. The apt sources are
# the host's (same Debian release; the host's slurmd may come from bookworm-updates/security).
node_build_script() {
  local f name
  cat <<EOF
set -e
groupadd -g $(id -g munge) munge
useradd -r -u $(id -u munge) -g munge -d /nonexistent -s /usr/sbin/nologin munge
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
rm -f /etc/apt/sources.list
EOF
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] || continue
    name=$(basename "$f" | sed 's/^sources\.list$/main.list/')
    printf "cat >/etc/apt/sources.list.d/host-%s <<'SOURCES'\n%s\nSOURCES\n" "$name" "$(cat "$f")"
  done
  cat <<EOF
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  $(dpkg-query -W -f='${Package}=${Version} ' $NODE_PACKAGES)
rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
EOF
}

# build_node_image: once per Slurm version (~1 min); later `up`s find it in dockerd's store
build_node_image() {
  local image cid t
  image=$(node_image)
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  t=$(now)
  log "building $image from $IMAGE (one time)"
  # --network host: the build needs the Debian mirror, and dockerd has no default bridge
  cid=$(docker create -i --network host "$IMAGE" bash -s) || return 1
  if ! { node_build_script | docker start -ai "$cid"; } >>"$LOG/node-image.log" 2>&1; then
    docker rm -f "$cid" >/dev/null 2>&1
    tail -n 5 "$LOG/node-image.log" >&2
    return 1
  fi
  docker commit -c 'CMD ["bash"]' "$cid" "$image" >/dev/null && docker rm "$cid" >/dev/null || return 1
  log "built $image in $(since "$t") s"
}

# ---------------------------------------------------------------- network + names

up_node_network() {
  docker network inspect "$NODE_NETWORK" >/dev/null 2>&1 && ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && return 0
  docker network rm "$NODE_NETWORK" >/dev/null 2>&1 || true
  docker network create --driver bridge --subnet "$NODE_NET.0/24" --gateway "$NODE_GW" \
    -o com.docker.network.bridge.name="$NODE_BRIDGE" "$NODE_NETWORK" >>"$LOG/nodes.log" 2>&1 || return 1
  log "created docker network $NODE_NETWORK ($NODE_NET.0/24, bridge $NODE_BRIDGE)"
}

# write_host_names [none]: the node names in the host's /etc/hosts, on lines ending in $MARK (rewritten in
# place, not replaced: /etc/hosts is often a bind mount). The host's own name comes first, at the bridge's
# address: a process on the host (a torchrun/gloo rank, a TCPStore) advertises the address its host name resolves
# to, and the 127.x line the host usually has is unreachable from the nodes. `none` removes the lines again.
write_host_names() {
  local want n
  want=$(if [ "${1:-}" != none ]; then echo "$NODE_GW $HOST $MARK"; fi
         grep -vF "$MARK" /etc/hosts
         if [ "${1:-}" != none ]; then for n in "${NODE_NAMES[@]}"; do echo "$(node_ip "$n") $n $MARK"; done; fi)
  [ "$want" = "$(cat /etc/hosts)" ] && return 0
  [ -e /etc/hosts.orig ] || grep -qF "$MARK" /etc/hosts || cp -p /etc/hosts /etc/hosts.orig
  printf '%s\n' "$want" >/etc/hosts
  log "wrote node names to /etc/hosts"
}

# ---------------------------------------------------------------- containers

python_root() {   # the Python installation the checkout's venv links to (empty without a venv)
  local py; py=$(readlink -f "$REPO/.venv/bin/python" 2>/dev/null) || return 0
  [ -x "$py" ] && dirname "$(dirname "$py")"
}

# node_run_args NAME: everything `docker run` needs for node NAME, one argument per line
node_run_args() {
  local n=$1 m pyroot dir=$NODES_DIR/$1
  printf '%s\n' --name "skills-infra-$n" --hostname "$n" --network "$NODE_NETWORK" --ip "$(node_ip "$n")" \
    --add-host "$HOST:$NODE_GW" --init \
    -v /tmp:/tmp -v "$REPO:$REPO" -v /etc/slurm:/etc/slurm:ro -v /etc/munge/munge.key:/etc/munge/munge.key:ro \
    -v "$dir/spool:$STATE/slurm/spool" -v "$dir/log:$LOG" -v "$dir/run:$RUN"
  for m in "${NODE_NAMES[@]}"; do [ "$m" = "$n" ] || printf '%s\n' --add-host "$m:$(node_ip "$m")"; done
  pyroot=$(python_root)
  [ -z "$pyroot" ] || printf '%s\n' -v "$pyroot:$pyroot:ro"
}

# what must hold for a running node to be kept: its image and its arguments (a moved checkout, a new Slurm)
node_spec() { { node_image; node_run_args "$1"; } | sha256sum | cut -c1-16; }

node_running() {
  local cid state; cid=$(cat "$NODES_DIR/$1.cid" 2>/dev/null) || return 1
  state=$(docker inspect -f '{{.State.Running}} {{index .Config.Labels "skills.spec"}}' "$cid" 2>/dev/null)
  [ "$state" = "true $(node_spec "$1")" ]
}

# remove_node NAME: the container whose id `up` recorded, and nothing else
remove_node() {
  local cid; cid=$(cat "$NODES_DIR/$1.cid" 2>/dev/null) || return 0
  if docker inspect "$cid" >/dev/null 2>&1; then
    docker rm -f "$cid" >/dev/null && log "removed node $1 (container ${cid:0:12})"
  fi
  rm -f "$NODES_DIR/$1.cid"
}

# munged forks into the background as the munge user; slurmd is the container's main process
NODE_INIT='install -d -o munge -g munge -m 0755 /run/munge &&
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge &&
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged && exec /usr/sbin/slurmd -D -N "$NODE_NAME"'

start_node() {
  local n=$1 cid args dir=$NODES_DIR/$1
  node_running "$n" && return 0
  remove_node "$n"
  if docker inspect "skills-infra-$n" >/dev/null 2>&1; then
    NODE_ERROR="a container named skills-infra-$n exists that this script did not record"; return 1
  fi
  mkdir -p "$dir/spool" "$dir/log" "$dir/run"
  mapfile -t args < <(node_run_args "$n")
  cid=$(docker run -d "${args[@]}" -l "skills.spec=$(node_spec "$n")" -e NODE_NAME="$n" "$(node_image)" \
    bash -c "$NODE_INIT" 2>>"$LOG/nodes.log") || return 1
  echo "$cid" >"$NODES_DIR/$n.cid"
  log "started node $n (container ${cid:0:12}, $(node_ip "$n"))"
}

# multi_ready: every node of the partition answers and takes jobs -- idle, or busy with jobs (other tests' jobs
# may run while `up` is repeated, e.g. to bring back a node a test killed; `planned` and a trailing `-`: the
# backfill scheduler has planned a job there): not down, drained or not responding (a trailing `*`)
multi_ready() {
  [ "$(sinfo -h -p "$MULTI_PARTITION" -N -o %T 2>/dev/null | grep -cE '^(idle|planned|mixed|allocated|completing)-?$')" \
    = $((NODE_COUNT + 1)) ]
}

# wait_nodes_ready: a restarted node registers within seconds and ReturnToService=2 makes a DOWN one usable
# again; a node still DOWN after that (e.g. set down by hand) is resumed
wait_nodes_ready() {
  local n
  wait_until 45 "partition $MULTI_PARTITION ready" multi_ready && return 0
  for n in "${NODE_NAMES[@]}"; do scontrol update nodename="$n" state=resume 2>/dev/null || true; done
  wait_until 15 "partition $MULTI_PARTITION ready" multi_ready
}

# up_nodes: network, image, names, slurm.conf (restarting Slurm once when it changes), containers
up_nodes() {
  local n
  [ "$NODE_COUNT" -gt 0 ] || { rm -f "$NODES_DIR/enabled"; return 0; }
  mkdir -p "$NODES_DIR"
  NODE_ERROR="no working dockerd"; docker_ok || return 1
  NODE_ERROR="docker network create failed (see $LOG/nodes.log)"; up_node_network || return 1
  NODE_ERROR="node image build failed (see $LOG/node-image.log)"; build_node_image || return 1
  write_host_names
  touch "$NODES_DIR/enabled"
  write_slurm_conf
  up_slurm
  for n in "${NODE_NAMES[@]}"; do
    NODE_ERROR="node $n did not start (see $LOG/nodes.log)"; start_node "$n" || return 1
  done
  wait_nodes_ready && return 0
  NODE_ERROR="partition $MULTI_PARTITION is not ready: $(sinfo -h -p "$MULTI_PARTITION" -N -o '%N=%T(%E)' | tr '\n' ' ')"
  return 1
}

# nodes_fallback: after a failed up_nodes, back to the single-node cluster the rest of the suite needs
nodes_fallback() {
  log "WARNING: no compute nodes ($NODE_ERROR); partition $MULTI_PARTITION absent, single-node cluster only"
  down_nodes
  rm -f "$NODES_DIR/enabled"
  write_host_names none
  write_slurm_conf
  up_slurm
}

down_nodes() {
  local n
  for n in "${NODE_NAMES[@]}"; do remove_node "$n"; done
}

# status_nodes: one line per node; never fails `status`, which gates the whole suite (tests/conftest.py) while
# only tests/test_infra_nodes.py needs the nodes
status_nodes() {
  local n
  nodes_configured || { printf '%-10s not configured\n' nodes; return 0; }
  for n in "${NODE_NAMES[@]}"; do
    if node_running "$n"; then
      printf '%-10s up (container %s, %s, slurm %s)\n' "$n" "$(cut -c1-12 "$NODES_DIR/$n.cid")" "$(node_ip "$n")" \
        "$(sinfo -h -n "$n" -o %T 2>/dev/null)"
    else
      printf '%-10s down\n' "$n"
    fi
  done
}
