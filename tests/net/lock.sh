# Sourced by the multi-rank tests: one launcher test at a time on the machine,
# whatever the build dir (mpirun and the test Slurm must not share the cores).
pb_launcher_lock() {
    exec 9>/tmp/.pippy-batch-launcher.lock
    flock 9
}
# PB_MPIRUN: another mpirun (contrib/gpu's pack carries its own Open MPI).
MPIRUN="${PB_MPIRUN:-mpirun --oversubscribe}"
case " $MPIRUN " in *" --allow-run-as-root "*) ;; *) MPIRUN="$MPIRUN --allow-run-as-root" ;; esac
# Ranks of this test run may only talk over loopback.
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
# ASan builds: leaks inside OpenPMIx's own init/finalize are not ours.
export LSAN_OPTIONS="suppressions=$PB_SRCDIR/tests/net/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
