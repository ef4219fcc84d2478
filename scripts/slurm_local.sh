#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying the SLURM path:
#   scripts/slurm_local.sh start|stop|status
# Needs Debian's slurm-wlm and munge packages (it installs nothing). Everything it writes (config, munge key,
# state, logs) lives under $SEQLAB_SLURM_DIR (default /tmp/seqlab-slurm); the daemons listen on 127.0.0.1
# at ports $SEQLAB_SLURM_PORT and the next one (default 16817, 16818). Start and stop are idempotent.
# Clients find the cluster through SLURM_CONF: `export SLURM_CONF=$SEQLAB_SLURM_DIR/slurm.conf`
# (the tests do it themselves).
set -euo pipefail

DIR="${SEQLAB_SLURM_DIR:-/tmp/seqlab-slurm}"
PORT="${SEQLAB_SLURM_PORT:-16817}"
CONF="$DIR/slurm.conf"
NODE="$(hostname -s)"
export SLURM_CONF="$CONF"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
    mkdir -p "$DIR"/{state,spool,log,run}
    chmod 700 "$DIR"
    local cpus mem user
    cpus="$(nproc)"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"  # MB; slurmd drains a node that has less
    user="$(id -un)"
    cat >"$CONF" <<EOF
# written by scripts/slurm_local.sh
ClusterName=seqlab-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
# no accounting database: sacct answers "accounting storage is disabled" (seqlab.launch.slurm quiets submitit about it)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# a requeued job may run again at once (not after the default delay), and a killed one goes within 10 s
JobRequeue=1
KillWait=10
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if [ ! -f "$DIR/munge.key" ]; then
        (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge.key")
    fi
}

wait_idle() {
    for _ in $(seq 60); do
        state="$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null || true)"
        case "$state" in
        idle* | mix* | alloc*) return 0 ;;
        down* | drain* | drng*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    echo "slurm_local: the node never became idle (state: ${state:-no answer}); see $DIR/log/" >&2
    return 1
}

start() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null ||
        { echo "slurm_local: needs the slurm-wlm and munge packages (apt-get install -y slurm-wlm munge)" >&2; exit 1; }
    if alive "$DIR/run/munged.pid" && alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid"; then
        wait_idle && echo "slurm_local: already running; export SLURM_CONF=$CONF" && return 0
    fi
    stop >/dev/null
    write_config
    # --force: munged refuses root and a socket dir under /tmp without it
    munged --force --key-file="$DIR/munge.key" --socket="$DIR/run/munge.socket" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munged.seed"
    slurmctld -f "$CONF"
    slurmd -f "$CONF" -N "$NODE"
    wait_idle
    echo "slurm_local: node $NODE idle; export SLURM_CONF=$CONF"
}

stop() {
    for name in slurmd slurmctld munged; do
        pidfile="$DIR/run/$name.pid"
        if alive "$pidfile"; then
            pid="$(cat "$pidfile")"
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
        rm -f "$pidfile"
    done
    echo "slurm_local: stopped"
}

status() {
    for name in munged slurmctld slurmd; do
        if alive "$DIR/run/$name.pid"; then echo "$name: running"; else echo "$name: stopped"; fi
    done
    sinfo -N 2>/dev/null || true
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
