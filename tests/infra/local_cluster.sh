#!/usr/bin/env bash
# tests/infra/local_cluster.sh -- the real infrastructure the skills-cli tests run against, on one Debian 12
# machine where we are root but have no systemd (CI runners, dev VMs):
#   munged; MariaDB + slurmdbd (a real `sacct`: nemo-run polls `sacct --parsable2 -j ID` for job status);
#   slurmctld + slurmd (the host node, partition "debug"); two compute nodes, each a docker container running
#   slurmd, on their own network (partition "multi" = the host + the containers; see tests/infra/nodes.sh);
#   sshd on 127.0.0.1:2222 (the "remote" login node);
#   dockerd and podman with a locally built Debian bookworm + python3 image (no registry is reachable in CI).
#
# Usage: local_cluster.sh up|down|status
#   up      Idempotent. Installs missing packages, starts what is not running, writes $STATE/env.sh and
#           $STATE/env.json. A second `up` with everything healthy changes nothing and takes a few seconds.
#   down    Cancels leftover Slurm jobs, then stops exactly the daemons `up` started. Safe to repeat.
#   status  One line per daemon and per compute node; exits non-zero if any daemon is down.
#
# Every daemon runs in the foreground style (-D/-F) in its own session, with its PID in $STATE/pids/NAME.pid.
# We only ever signal a PID from those files, and only while /proc/PID/exe is the expected binary.
#
# Knobs (environment):  SKILLS_INFRA_STATE (/tmp/skills-cli-infra)  SKILLS_INFRA_SSH_PORT (2222)
#   SKILLS_INFRA_DB_PORT (3307)  SKILLS_INFRA_CPUS (8, CPUs the node advertises)
#   SKILLS_INFRA_DEBIAN_MIRROR (http://deb.debian.org/debian, for debootstrap)
#   SKILLS_INFRA_NODE_COUNT (2, container compute nodes; 0: single-node cluster only)
#   SKILLS_INFRA_NODE_NET (10.250.0, the nodes' /24: the host is .1, node i is .(10+i))
set -euo pipefail
umask 022

STATE=${SKILLS_INFRA_STATE:-/tmp/skills-cli-infra}
SSH_PORT=${SKILLS_INFRA_SSH_PORT:-2222}
DB_PORT=${SKILLS_INFRA_DB_PORT:-3307}
CPUS=${SKILLS_INFRA_CPUS:-8}
MIRROR=${SKILLS_INFRA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CLUSTER=skills
PARTITION=debug
IMAGE=skills-test/python:bookworm
HOST=$(hostname -s)
PIDS=$STATE/pids LOG=$STATE/log RUN=$STATE/run SSHDIR=$STATE/ssh IMAGES=$STATE/images
DOCKER_EXEC_ROOT=/run/skills-infra-docker   # short: containerd's unix sockets live under it (108-byte limit)
MARK="# managed by skills-cli tests/infra/local_cluster.sh"

# libnuma1: vLLM's CPU build links it (its server environment, scripts/server_env.sh vllm, and image)
PACKAGES=(munge slurm-wlm slurmctld slurmd slurm-client slurmdbd mariadb-server openssh-server openssh-client
          rsync docker.io podman debootstrap libnuma1)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd sshd dockerd)   # start order; `down` stops in reverse
declare -A BIN=([munged]=/usr/sbin/munged [mariadbd]=/usr/sbin/mariadbd [slurmdbd]=/usr/sbin/slurmdbd
                [slurmctld]=/usr/sbin/slurmctld [slurmd]=/usr/sbin/slurmd [sshd]=/usr/sbin/sshd
                [dockerd]=/usr/sbin/dockerd)

# shellcheck source=tests/infra/nodes.sh
. "$(dirname "${BASH_SOURCE[0]}")/nodes.sh"

log() { printf '[infra %s] %s\n' "$(date +%T)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- process helpers (our PID files only)

# ours NAME: NAME's PID file names a live, non-zombie process whose executable is NAME's binary.
# The /proc/PID/exe check protects against a recycled PID after a crash or reboot; the zombie check matters
# because a stopped daemon is re-parented to PID 1, which on these VMs reaps only every few seconds.
ours() {
  local pid stat
  pid=$(cat "$PIDS/$1.pid" 2>/dev/null) && [ -n "$pid" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }                       # the state letter follows "(comm) "
  [ "${stat:0:1}" != Z ] || return 1
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "${BIN[$1]}")" ]
}

# start NAME CMD...: run CMD (NAME's binary, or a wrapper that execs it) detached in its own session.
# A background job of a non-interactive shell is not a process-group leader, so setsid execs without
# forking and $! is the daemon's own PID.
start() {
  local name=$1; shift
  setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!)"
}

# stop NAME [TIMEOUT]: TERM, wait, then KILL -- only the PID from NAME's file, only if it is still NAME.
stop() {
  local name=$1 t=${2:-20} pid i
  pid=$(cat "$PIDS/$name.pid" 2>/dev/null) || return 0
  if ours "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 4; i++)); do ours "$name" || break; sleep 0.25; done
    if ours "$name"; then log "$name did not stop in ${t}s, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_until() {
  local end=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { log "timed out waiting for $what"; return 1; }
    sleep 0.25
  done
}

port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }   # no iproute2 needed
# refuse to start NAME on a port someone else already holds: the tests would talk to the wrong server
port_free_or_die() { ! port_open "$1" || die "port $1 is taken by a process this script did not start ($2)"; }

# put_file DEST MODE <CONTENT: replace DEST only when the content differs (so a second `up` changes
# nothing); succeeds iff DEST changed. A system file (outside $STATE) we did not write is kept as DEST.orig.
put_file() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  if [[ $1 != "$STATE"/* ]] && [ -e "$1" ] && [ ! -e "$1.orig" ] && ! grep -qF "$MARK" "$1"; then
    cp -p "$1" "$1.orig"
  fi
  install -D -m "$2" "$tmp" "$1"
  rm -f "$tmp"
}

# ---------------------------------------------------------------- up: packages

install_packages() {
  local installed missing=() p policy_added=0
  installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for p in "${PACKAGES[@]}"; do grep -qx "ii  $p" <<<"$installed" || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "installing ${missing[*]}"
  # Without systemd, maintainer scripts fall back to /etc/init.d and would start sshd on :22, munged,
  # MariaDB on :3306, dockerd... A policy-rc.d that exits 101 forbids that; we start daemons ourselves.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >>"$LOG/apt.log" 2>&1 \
    || { tail -n 20 "$LOG/apt.log" >&2; die "apt-get failed (full log: $LOG/apt.log)"; }
  [ "$policy_added" = 0 ] || rm -f /usr/sbin/policy-rc.d
}

# ---------------------------------------------------------------- up: munge

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

up_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  ours munged && return 0
  if munge_ok; then log "munged: one this script did not start already answers; using it"; return 0; fi
  # munged must not run as root (it checks its key/dirs belong to its user); setpriv execs it as munge
  start munged setpriv --reuid=munge --regid=munge --init-groups "${BIN[munged]}" -F
  wait_until 15 munged munge_ok || { tail -n 5 "$LOG/munged.log" >&2; die "munged did not come up"; }
}

# ---------------------------------------------------------------- up: MariaDB + slurmdbd

DB_SOCK=$RUN/mysqld/mysqld.sock

up_mariadb() {
  if ! ours mariadbd; then
    port_free_or_die "$DB_PORT" "set SKILLS_INFRA_DB_PORT"
    install -d -o mysql -g mysql "$STATE/mysql" "$RUN/mysqld"   # mariadbd runs as mysql
    if [ ! -d "$STATE/mysql/mysql" ]; then
      mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install-db.log" 2>&1 \
        || die "mariadb-install-db failed (see $LOG/mariadb-install-db.log)"
    fi
    # --no-defaults: ignore /etc/mysql (the packaged server wants /run/mysqld and port 3306)
    start mariadbd "${BIN[mariadbd]}" --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCK" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$RUN/mysqld/mysqld.pid" \
      --log-error="$LOG/mariadbd.err" --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900
    wait_until 60 mariadbd mariadb-admin --socket="$DB_SOCK" ping \
      || { tail -n 5 "$LOG/mariadbd.err" >&2; die "mariadbd did not come up"; }
  fi
  mariadb --socket="$DB_SOCK" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

cluster_registered() { timeout 10 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; }

up_slurmdbd() {
  # slurmdbd refuses a config that others can read (it holds the DB password): mode 600
  if put_file /etc/slurm/slurmdbd.conf 600 <<EOF; then stop slurmdbd; fi
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  if ! ours slurmdbd; then
    port_free_or_die 6819 slurmdbd
    start slurmdbd "${BIN[slurmdbd]}" -D
  fi
  wait_until 60 slurmdbd timeout 10 sacctmgr -n show cluster || { tail -n 5 "$LOG/slurmdbd.log" >&2; die "slurmdbd did not come up"; }
  cluster_registered || { sacctmgr -i add cluster "$CLUSTER" >/dev/null && log "registered cluster $CLUSTER in slurmdbd"; }
}

# ---------------------------------------------------------------- up: slurmctld + slurmd

node_ok() { [[ $(sinfo -h -n "$HOST" -o %T 2>/dev/null) =~ ^(idle|mixed|allocated|completing) ]]; }

# write_slurm_conf: written before slurmdbd starts, since every client (sacctmgr too) reads slurm.conf;
# without it they try DNS SRV records and die with "Could not establish a configuration source".
# A changed file restarts slurmctld + slurmd.
write_slurm_conf() {
  local cpus mem addr
  addr=$(controller_addr)
  cpus=$(( CPUS > $(nproc) ? CPUS : $(nproc) ))
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mkdir -p "$STATE/slurm/ctld" "$STATE/slurm/spool"
  # cgroup-free (linuxproc/none): the hosts we run on have no systemd and a hybrid cgroup v1 tree.
  # config_overrides lets the node advertise more CPUs than it has, so tests can run several jobs at once.
  # MinJobAge keeps finished jobs visible to squeue/scontrol for 5 minutes. Addresses are spelled out
  # because a CI host's name need not resolve.
  if put_file /etc/slurm/slurm.conf 644 <<EOF; then stop slurmd; stop slurmctld; fi
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST($addr)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$STATE/slurm/ctld
SlurmdSpoolDir=$STATE/slurm/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
MinJobAge=300
KillWait=5
InactiveLimit=0
# a node that stops answering (a killed compute-node container) is DOWN after 40 s, not the default 300, so its job
# fails within a test; pings of a busy 2-core host still come back well inside that
SlurmdTimeout=40
NodeName=$HOST NodeAddr=$addr CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP$(node_conf_lines "$cpus" "$mem")
EOF
}

up_slurm() {
  local restarted=0 job
  if ! ours slurmctld; then
    port_free_or_die 6817 slurmctld
    start slurmctld "${BIN[slurmctld]}" -D
    restarted=1
  fi
  wait_until 30 slurmctld sh -c 'scontrol ping | grep -q "is UP"' \
    || { tail -n 5 "$LOG/slurmctld.log" >&2; die "slurmctld did not come up"; }
  if ! ours slurmd; then
    port_free_or_die 6818 slurmd
    start slurmd "${BIN[slurmd]}" -D
    restarted=1
  fi
  if ! wait_until 30 "node $HOST" node_ok; then
    # ReturnToService=2 should do this; a node left DOWN/DRAIN from an earlier run may still need it
    scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    wait_until 15 "node $HOST" node_ok || { tail -n 5 "$LOG/slurmd.log" >&2; die "node $HOST is $(sinfo -h -o '%T %E')"; }
  fi
  if [ "$restarted" = 1 ]; then   # prove a job really runs before any test relies on it
    job=$(sbatch --parsable -J infra-smoke -o /dev/null --wrap true)
    wait_until 30 "smoke job $job" sh -c "scontrol show job $job | grep -q JobState=COMPLETED" \
      || die "smoke job $job did not complete: $(scontrol show job "$job" | grep -o 'JobState=[A-Z]*')"
  fi
}

# ---------------------------------------------------------------- up: sshd

ssh_ok() {
  ssh -p "$SSH_PORT" -i "$SSHDIR/id_ed25519" -o BatchMode=yes -o ConnectTimeout=5 root@127.0.0.1 true
}

up_sshd() {
  local hostkey entry
  install -d -m 755 "$SSHDIR" "$SSHDIR/authorized_keys"
  [ -s "$SSHDIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C skills-infra-host -f "$SSHDIR/ssh_host_ed25519_key"
  [ -s "$SSHDIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C skills-infra-client -f "$SSHDIR/id_ed25519"
  put_file "$SSHDIR/authorized_keys/root" 644 <"$SSHDIR/id_ed25519.pub" || true
  # With UsePAM no, sshd treats a password field starting with '!' as a locked account and refuses even
  # key logins ("account is locked"); '*' still forbids password logins but is not "locked".
  if [[ $(getent shadow root | cut -d: -f2) == '!'* ]]; then usermod -p '*' root; log "unlocked root for key logins"; fi
  # StrictModes no: the keys live under /tmp, whose mode 1777 StrictModes rejects.
  # UsePAM no: pam_loginuid & co. fail in containers and VMs without systemd/audit.
  if put_file "$SSHDIR/sshd_config" 644 <<EOF; then stop sshd; fi
$MARK
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHDIR/ssh_host_ed25519_key
PidFile $RUN/sshd.pid
AuthorizedKeysFile $SSHDIR/authorized_keys/%u .ssh/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 100
EOF
  install -d -m 755 /run/sshd   # privilege separation directory; systemd-tmpfiles would normally make it
  if ! ours sshd; then
    port_free_or_die "$SSH_PORT" "set SKILLS_INFRA_SSH_PORT"
    "${BIN[sshd]}" -t -f "$SSHDIR/sshd_config" || die "sshd rejects $SSHDIR/sshd_config"
    # absolute path: sshd re-executes itself for every connection
    start sshd "${BIN[sshd]}" -D -f "$SSHDIR/sshd_config" -E "$LOG/sshd.log"
    wait_until 15 sshd port_open "$SSH_PORT" || die "sshd did not come up (see $LOG/sshd.log)"
  fi
  # Plain `ssh`/`rsync -e ssh` (nemo-run's packager) must trust the host key without prompting; the
  # system-wide file covers every user.
  hostkey=$(cut -d' ' -f1,2 "$SSHDIR/ssh_host_ed25519_key.pub")
  entry="[127.0.0.1]:$SSH_PORT,[localhost]:$SSH_PORT $hostkey skills-infra-host"
  touch /etc/ssh/ssh_known_hosts
  if ! grep -qxF "$entry" /etc/ssh/ssh_known_hosts; then
    sed -i '/ skills-infra-host$/d' /etc/ssh/ssh_known_hosts
    echo "$entry" >>/etc/ssh/ssh_known_hosts
  fi
  wait_until 15 "ssh root@127.0.0.1:$SSH_PORT" ssh_ok || die "ssh -p $SSH_PORT root@127.0.0.1 fails (see $LOG/sshd.log)"
}

# ---------------------------------------------------------------- up: container image rootfs

ROOTFS_TAR=$IMAGES/python-bookworm.tar

# umount_under DIR: undo mounts a killed debootstrap or dockerd left below DIR (deepest first), so that a
# later rm -rf cannot reach through them.
umount_under() {
  awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
}

# Debian bookworm + python3 (3.11, like CI). Built once (~1.5 min) and cached as a tarball: the tests
# cannot pull from any registry.
build_rootfs() {
  local dir=$IMAGES/rootfs.tmp t
  [ -s "$ROOTFS_TAR" ] && return 0
  t=$(now)
  log "debootstrapping bookworm + python3 into $dir (one time)"
  mkdir -p "$IMAGES"
  umount_under "$dir"
  rm -rf --one-file-system "$dir"
  if ! debootstrap --variant=minbase --include=python3,bash bookworm "$dir" "$MIRROR" >"$LOG/debootstrap.log" 2>&1; then
    umount_under "$dir"
    log "WARNING: debootstrap failed (see $LOG/debootstrap.log); no container image"
    return 0
  fi
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/{doc,man,info}/*
  tar -C "$dir" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf --one-file-system "$dir"
  log "rootfs ready in $(since "$t") s ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

# import_image CLI: `docker import` / `podman import` the cached rootfs as $IMAGE unless it is there
import_image() {
  [ -s "$ROOTFS_TAR" ] || return 1
  "$1" image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  local t; t=$(now)
  "$1" import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' "$ROOTFS_TAR" "$IMAGE" >>"$LOG/import.log" 2>&1 \
    || { tail -n 3 "$LOG/import.log" >&2; return 1; }
  log "imported $IMAGE into $1 in $(since "$t") s"
}

# ---------------------------------------------------------------- up: dockerd + podman

docker_ok() { timeout 10 docker version >/dev/null 2>&1; }

up_dockerd() {
  local driver
  ours dockerd && { import_image docker || true; return 0; }
  if docker_ok; then log "dockerd: one this script did not start already answers; using it"; import_image docker || true; return 0; fi
  for driver in overlay2 vfs; do   # vfs: for hosts whose filesystem cannot carry overlayfs (slow, but works)
    # --bridge=none --iptables=false: no NAT/bridge setup on hosts without br_netfilter; tests use
    # --network host or none
    start dockerd "${BIN[dockerd]}" --storage-driver="$driver" --iptables=false --ip-masq=false --bridge=none \
      --data-root="$STATE/docker" --exec-root="$DOCKER_EXEC_ROOT" --pidfile="$RUN/dockerd.pid" \
      -H unix:///var/run/docker.sock
    if wait_until 30 dockerd docker_ok && import_image docker \
       && docker run --rm --network none "$IMAGE" true >>"$LOG/dockerd.log" 2>&1; then
      log "dockerd up with storage driver $driver"
      return 0
    fi
    log "dockerd with $driver does not work: $(tail -n 2 "$LOG/dockerd.log" | tr '\n' ' ')"
    stop dockerd 30
    umount_under "$DOCKER_EXEC_ROOT"
  done
  log "WARNING: no working dockerd; docker tests will fail"
}

up_podman() {
  # podman's default ulimits (nofile=1048576) need CAP_SYS_RESOURCE, which these hosts lack: runc fails with
  # "error setting rlimit type 7: operation not permitted". Cap them at our hard limit. No systemd, so
  # cgroupfs and a file events log; netns=none because no CNI/netavark network is configured.
  # A system-wide drop-in (not CONTAINERS_CONF) so that Slurm jobs and ssh sessions see the same config.
  put_file /etc/containers/containers.conf.d/90-skills-infra.conf 644 <<EOF || true
$MARK
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  import_image podman || true
}

# ---------------------------------------------------------------- up: env files

# write_env K=V...: $STATE/env.sh (export K=V lines) and $STATE/env.json (flat object, string values)
write_env() {
  local kv sep='' json='{'
  for kv in "$@"; do
    json+="$sep\"${kv%%=*}\": \"$(sed 's/[\\"]/\\&/g' <<<"${kv#*=}")\""; sep=', '
  done
  printf 'export %q\n' "$@" | put_file "$STATE/env.sh" 644 || true
  printf '%s}\n' "$json" | put_file "$STATE/env.json" 644 || true
}

cmd_up() {
  local t0 t docker=0 podman=0
  [ "$(id -u)" = 0 ] || die "must run as root"
  t0=$(now)
  mkdir -p "$PIDS" "$LOG" "$RUN" "$IMAGES"
  chmod 755 "$STATE" "$RUN"   # mysql and munge must be able to traverse it
  t=$(now); install_packages;  log "packages: $(since "$t") s"
  t=$(now); up_munge; write_slurm_conf; up_mariadb; up_slurmdbd; up_slurm; log "munge + MariaDB + Slurm: $(since "$t") s"
  t=$(now); up_sshd;           log "sshd: $(since "$t") s"
  t=$(now); build_rootfs;      log "image rootfs: $(since "$t") s"
  t=$(now); up_dockerd;        log "dockerd: $(since "$t") s"
  t=$(now); up_podman;         log "podman: $(since "$t") s"
  t=$(now); up_nodes || nodes_fallback; log "compute nodes: $(since "$t") s"
  # the flags say whether the image really is usable, not just whether a binary exists
  docker_ok && docker image inspect "$IMAGE" >/dev/null 2>&1 && docker=1
  podman run --rm "$IMAGE" python3 -c pass >/dev/null 2>&1 && podman=1
  write_env SKILLS_INFRA_STATE="$STATE" SKILLS_INFRA_SSH_HOST=127.0.0.1 SKILLS_INFRA_SSH_PORT="$SSH_PORT" \
    SKILLS_INFRA_SSH_USER=root SKILLS_INFRA_SSH_KEY="$SSHDIR/id_ed25519" SKILLS_INFRA_PARTITION="$PARTITION" \
    SKILLS_INFRA_SLURM_CLUSTER="$CLUSTER" SKILLS_INFRA_IMAGE="$IMAGE" SKILLS_INFRA_DOCKER="$docker" \
    SKILLS_INFRA_PODMAN="$podman" SKILLS_INFRA_MULTI_PARTITION="$(nodes_configured && echo "$MULTI_PARTITION")" \
    SKILLS_INFRA_MULTI_NODES="$(multi_nodes)"
  log "up in $(since "$t0") s (docker=$docker podman=$podman nodes=$(multi_nodes)); variables: source $STATE/env.sh"
}

# ---------------------------------------------------------------- down / status

cmd_down() {
  local jobs i d
  [ "$(id -u)" = 0 ] || die "must run as root"
  # slurmstepd and job processes outlive slurmd, so end the jobs while the controller still runs
  if ours slurmctld; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      log "cancelling Slurm jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 60; i++)); do [ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ] && break; sleep 0.25; done
    fi
  fi
  docker_ok && down_nodes   # before dockerd stops
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d=${DAEMONS[i]}
    case $d in dockerd | mariadbd) stop "$d" 30 ;; *) stop "$d" ;; esac
  done
  umount_under "$DOCKER_EXEC_ROOT"   # dockerd leaves its netns bind mount behind
  log "down"
}

cmd_status() {
  local d rc=0
  for d in "${DAEMONS[@]}"; do
    if ours "$d"; then
      printf '%-10s up (pid %s)\n' "$d" "$(cat "$PIDS/$d.pid")"
    elif { [ "$d" = munged ] && munge_ok; } || { [ "$d" = dockerd ] && docker_ok; }; then
      printf '%-10s up (not started by this script)\n' "$d"
    else
      printf '%-10s down\n' "$d"; rc=1
    fi
  done
  status_nodes
  return "$rc"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
