#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for trying hydra/launcher=slurm and the cluster
# tests (tests/cluster/) without a cluster: slurmctld, slurmd and a private munged, all state in one
# temporary folder, talking over 127.0.0.1 only. Needs root and the Debian packages:
#   apt-get update && apt-get install -y slurm-wlm munge        (slurm-wlm 22.05 on Debian 12)
# Usage:
#   eval "$(bash scripts/local_slurm.sh start)"   # prints: export SLURM_CONF=<dir>/slurm.conf
#   sinfo; sbatch ...; python -m gnrepro.train -m hydra/launcher=slurm ...   (docs/clusters.md)
#   bash scripts/local_slurm.sh stop              # cancels its jobs, stops its daemons, removes <dir>
# start [DIR] uses DIR (created, must not hold a cluster) instead of a new /tmp/gnrepro-slurm.XXXXXX;
# stop [DIR] defaults to the folder of $SLURM_CONF. Daemons are stopped by the pids recorded at start.
# Nothing is written outside DIR: no /etc/slurm, /etc/munge or /run files, no systemd units.
set -euo pipefail

PACKAGES_HINT="install them with: apt-get update && apt-get install -y slurm-wlm munge"
KILL_WAIT=10       # seconds between SIGTERM and SIGKILL when SLURM stops a job (SLURM's default: 30)
CRED_EXPIRE=10     # a requeued job waits this long before it runs again (SLURM's default: 120 s)

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

missing_binaries() {
  local b out=""
  for b in slurmctld slurmd munged munge unmunge sinfo squeue sbatch scontrol scancel srun runuser; do
    command -v "$b" >/dev/null 2>&1 || out="$out $b"
  done
  echo "${out# }"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

alive() {  # a running process (a zombie waiting to be reaped by its new parent counts as gone)
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat" 2>/dev/null
}

stop_pid() {  # stop_pid NAME PID: SIGTERM, wait up to 15 s, then SIGKILL
  local name=$1 pid=$2 i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do alive "$pid" || return 0; sleep 0.1; done
  echo "local_slurm.sh: $name (pid $pid) ignored SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (SlurmUser=root, munged as the munge user)"
  local missing; missing=$(missing_binaries)
  [ -z "$missing" ] || die "missing $missing; $PACKAGES_HINT"
  id munge >/dev/null 2>&1 || die "no 'munge' user; $PACKAGES_HINT"

  local dir=${1:-}
  if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/gnrepro-slurm.XXXXXX); else mkdir -p "$dir"; fi
  dir=$(cd "$dir" && pwd)
  [ ! -e "$dir/slurm.conf" ] || die "$dir already holds a cluster; stop it first (local_slurm.sh stop $dir)"
  chmod 755 "$dir"  # the munge user must reach its own subfolder
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/munge"
  chmod 700 "$dir/state" "$dir/spool"
  trap 'echo "local_slurm.sh: start failed; cleaning up $dir" >&2; stop "$dir"' ERR

  # munge: a private key, socket, pid, seed and log, all in $dir/munge, owned by munge.
  head -c 1024 /dev/urandom > "$dir/munge/munge.key"
  chown -R munge:munge "$dir/munge"
  chmod 711 "$dir/munge"  # munged: clients must reach the socket; nobody else may list or write here
  chmod 400 "$dir/munge/munge.key"
  local sock="$dir/munge/munge.socket"
  runuser -u munge -- munged --key-file="$dir/munge/munge.key" --socket="$sock" \
    --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" --log-file="$dir/munge/munged.log"
  cp "$dir/munge/munged.pid" "$dir/run/munged.pid"
  munge -S "$sock" -n | unmunge -S "$sock" >/dev/null

  local host cpus mem_total mem ctld_port d_port
  host=$(hostname -s)
  cpus=$(nproc)
  mem_total=$(free -m | awk '/^Mem:/ {print $2}')
  mem=$(( mem_total * 9 / 10 ))  # slurmd drains a node that has less memory than RealMemory
  ctld_port=$(free_port)
  d_port=$(free_port)
  while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
  : > "$dir/plugstack.conf"  # no SPANK plugins (not the system's /etc/slurm/plugstack.conf)
  cat > "$dir/slurm.conf" <<EOF
# Written by scripts/local_slurm.sh for a one-node cluster on $host ($(date -u +%FT%TZ)).
ClusterName=gnrepro
# 127.0.0.1 only: the controller and the node are reached on loopback, and NoInAddrAny,NoCtldInAddrAny make the
# daemons (and srun) bind to that address instead of every interface.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$sock,cred_expire=$CRED_EXPIRE
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
# No cgroups in this container (and no cgroup.conf: 22.05 has no CgroupPlugin=disabled).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2  # look at pending jobs every 2 s (default 60)
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=$KILL_WAIT
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  # The daemons carry this marker in their environment (and pass it to slurmstepd), so stop can
  # find a step daemon of this cluster that outlived its job.
  GNREPRO_LOCAL_SLURM="$dir" slurmctld -D -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
  echo $! > "$dir/run/slurmctld.daemon"
  GNREPRO_LOCAL_SLURM="$dir" slurmd -D -f "$SLURM_CONF" -N "$host" >"$dir/log/slurmd.out" 2>&1 &
  echo $! > "$dir/run/slurmd.daemon"

  local i state=""
  for i in $(seq 120); do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    alive "$(cat "$dir/run/slurmctld.daemon")" && alive "$(cat "$dir/run/slurmd.daemon")" || break
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    echo "local_slurm.sh: the node did not become idle (state '${state:-none}'); last log lines:" >&2
    tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" "$dir/log/"*.out >&2 2>/dev/null || true
    trap - ERR
    stop "$dir"
    exit 1
  fi
  trap - ERR
  echo "local_slurm.sh: SLURM $(sinfo -V | awk '{print $2}') on $host: $cpus CPUs, ${mem} MB, partition 'local', state in $dir" >&2
  echo "export SLURM_CONF=$dir/slurm.conf"
}

stop() {
  local dir=${1:-}
  if [ -z "$dir" ]; then
    [ -n "${SLURM_CONF:-}" ] || die "stop: give the cluster's folder (or set SLURM_CONF)"
    dir=$(dirname "$SLURM_CONF")
  fi
  [ -d "$dir/run" ] || die "stop: $dir holds no cluster started by local_slurm.sh"
  export SLURM_CONF="$dir/slurm.conf"
  local ctld="" slurmd="" i
  [ -f "$dir/run/slurmctld.daemon" ] && ctld=$(cat "$dir/run/slurmctld.daemon")
  [ -f "$dir/run/slurmd.daemon" ] && slurmd=$(cat "$dir/run/slurmd.daemon")
  if alive "$ctld" && alive "$slurmd"; then  # cancel every job and wait for its processes to end
    scancel --full --quiet $(squeue -h -o %A 2>/dev/null) 2>/dev/null || true
    for i in $(seq $(( (KILL_WAIT + 15) * 5 ))); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  [ -n "$slurmd" ] && stop_pid slurmd "$slurmd"
  [ -n "$ctld" ] && stop_pid slurmctld "$ctld"
  local pid  # a step daemon (or job process) of this cluster still there: by the marker, by pid
  for pid in $(grep -lsz "^GNREPRO_LOCAL_SLURM=$dir\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    [ "$pid" != $$ ] && stop_pid "leftover $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)" "$pid"
  done
  [ -f "$dir/run/munged.pid" ] && stop_pid munged "$(cat "$dir/run/munged.pid")"
  if [ "${LOCAL_SLURM_KEEP:-0}" = 1 ]; then
    echo "local_slurm.sh: stopped; logs kept in $dir/log" >&2
  else
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  missing) missing_binaries ;;  # the binaries not installed (empty: all there); used by the test fixture
  *) echo "usage: $0 start [DIR] | stop [DIR] | missing" >&2; exit 2 ;;
esac
