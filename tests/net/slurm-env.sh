# Sourced by the Slurm tests (it sets D, H, i, s, p, f, pid: callers keep
# their own state in other names): a single-node Slurm cluster of our own, in a
# fresh temp dir (config, state, spool, logs), started by pb_slurm_start and
# stopped by pid at exit (trap), whatever happens in between.
#   pb_slurm_start DIR   start slurmctld + slurmd, wait for the node to be idle;
#                        on failure print the logs and return 1
#   pb_slurm_stop        cancel jobs, stop both daemons, wait for them to go
# After pb_slurm_start: SLURM_CONF is exported, PB_SLURM_DIR is the dir.
# Needs the launcher lock (lock.sh): one test cluster on the machine at a time.

PB_SLURM_DIR=
pb_slurm_logs() {
    [ -n "$PB_SLURM_DIR" ] || return 0
    for f in "$PB_SLURM_DIR"/log/*.log; do
        [ -f "$f" ] && { echo "---- $f"; tail -n 40 "$f"; }
    done
}

pb_slurm_stop() {
    [ -n "$PB_SLURM_DIR" ] || return 0
    scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null
    for p in slurmd slurmctld; do
        f="$PB_SLURM_DIR/$p.pid"
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null
    done
    # Step daemons of this cluster (their command line names our config).
    for pid in $(pgrep -f "slurmstepd.*" 2>/dev/null); do
        grep -qs "$PB_SLURM_DIR" /proc/$pid/environ 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    PB_SLURM_DIR=
}

pb_slurm_start() {
    D=$1
    H=$(hostname -s)
    mkdir -p "$D/state" "$D/spool" "$D/log" || return 1
    PB_SLURM_DIR=$D
    cat >"$D/slurm.conf" <<CONF
ClusterName=pbtest
SlurmctldHost=$H
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/none
CredType=cred/none
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/ctld.log
SlurmdLogFile=$D/log/d.log
ReturnToService=2
KillWait=5
NodeName=$H CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    export SLURM_CONF="$D/slurm.conf"
    # Settings of an enclosing Slurm job must not leak into ours.
    unset SLURM_JOB_ID SLURM_JOBID SLURM_NTASKS SLURM_NPROCS SLURM_STEP_ID SLURM_NODELIST
    slurmctld -f "$SLURM_CONF" || { echo "slurmctld did not start"; pb_slurm_logs; return 1; }
    slurmd -f "$SLURM_CONF" || { echo "slurmd did not start"; pb_slurm_logs; return 1; }
    i=0
    while [ $i -lt 300 ]; do
        s=$(sinfo -h -o %T 2>/dev/null)
        case "$s" in idle*) return 0 ;; esac
        case "$s" in drain*|inval*|down*)
            [ $i -gt 50 ] && { echo "node state: $s"; pb_slurm_logs; return 1; } ;; esac
        sleep 0.1
        i=$((i + 1))
    done
    echo "the test Slurm node did not become idle (state: ${s:-none})"
    pb_slurm_logs
    return 1
}
