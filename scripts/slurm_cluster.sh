#!/usr/bin/env bash
# A single-machine Slurm cluster for the tests (tests/cli_slurm.rs).
#
#   scripts/slurm_cluster.sh start   install slurm-wlm and munge if missing (apt),
#                                    write a munge key and a slurm.conf for this
#                                    host, start munged, slurmctld and slurmd,
#                                    wait (bounded) until `sinfo` shows the node idle
#   scripts/slurm_cluster.sh stop    stop the daemons this script started
#   scripts/slurm_cluster.sh status  print sinfo/squeue
#
# Everything lives under $FLOW_SLURM_DIR (default /tmp/flow-slurm): the
# config, spool, state, logs and pid files. No cgroups (proctrack/linuxproc,
# task/none), no accounting database; jobs run as root (we are root here).
# The config is exported through SLURM_CONF, so print it with
#   eval "$(scripts/slurm_cluster.sh env)"
# The partition `held` (same node) is for tests that need jobs to stay
# queued: they set it DOWN (jobs queue, none start) and UP again.
set -euo pipefail

dir="${FLOW_SLURM_DIR:-/tmp/flow-slurm}"
conf="$dir/slurm.conf"
wait_s="${FLOW_SLURM_WAIT:-60}"
# Clusters of different directories coexist on one machine: each has its
# own munge socket (AuthInfo) and, unless FLOW_SLURM_CTLD_PORT /
# FLOW_SLURM_D_PORT say otherwise, ports of its own, from the directory's
# name.
munge_socket="$dir/run/munge.socket"
port_base=$(( 16817 + ( $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 400 ) * 2 ))
ctld_port="${FLOW_SLURM_CTLD_PORT:-$port_base}"
d_port="${FLOW_SLURM_D_PORT:-$((port_base + 1))}"

log() { echo "slurm_cluster: $*" >&2; }

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
     && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    log "slurm-wlm/munge are missing and we are not root: install them (apt-get install slurm-wlm munge)"
    exit 1
  fi
  log "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
}

write_conf() {
  mkdir -p "$dir"/{spool,state,log,run,munge}
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  # RealMemory in MiB, a little under what the machine has (slurmd refuses
  # a node that claims more than it has).
  mem="$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)"
  cat >"$conf" <<EOF
ClusterName=flowtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
DefMemPerCPU=256
InactiveLimit=0
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=held Nodes=$host Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # Debian's tools look for /etc/slurm/slurm.conf unless SLURM_CONF says
  # otherwise; sbatch inside jobs inherits SLURM_CONF from the environment.
}

munge_start() {
  mkdir -p /var/log/munge /var/lib/munge
  local key="$dir/munge/munge.key"
  if [ ! -f "$key" ]; then
    dd if=/dev/urandom bs=1 count=1024 of="$key" status=none
    chmod 400 "$key"
  fi
  if [ -f "$dir/run/munged.pid" ] && kill -0 "$(cat "$dir/run/munged.pid")" 2>/dev/null; then
    return
  fi
  munged --force --key-file="$key" --socket="$munge_socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed"
}

start() {
  install
  write_conf
  export SLURM_CONF="$conf"
  munge_start
  if ! { [ -f "$dir/run/slurmctld.pid" ] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; }; then
    slurmctld -c -f "$conf"
  fi
  if ! { [ -f "$dir/run/slurmd.pid" ] && kill -0 "$(cat "$dir/run/slurmd.pid")" 2>/dev/null; }; then
    slurmd -f "$conf"
  fi
  local host deadline state
  host="$(hostname -s)"
  deadline=$(( $(date +%s) + wait_s ))
  while :; do
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null | head -1 || true)"
    case "$state" in
      idle|mix|alloc) break ;;
      down*|drain*|drng*)
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "node $host not idle after ${wait_s}s (state: ${state:-none}); logs in $dir/log"
      tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "cluster up: node $host $state (SLURM_CONF=$conf)"
}

stop_pid() {
  local f="$dir/run/$1.pid"
  [ -f "$f" ] || return 0
  local pid
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  if [ -f "$conf" ]; then
    SLURM_CONF="$conf" scancel --user=root --quiet 2>/dev/null || true
  fi
  stop_pid slurmd
  stop_pid slurmctld
  stop_pid munged
  log "cluster stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$conf" ;;
  status) SLURM_CONF="$conf" sinfo; SLURM_CONF="$conf" squeue ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
