# Sourced by the multi-rank tests: one launcher test at a time on the machine,
# whatever the build dir (mpirun and the test Slurm must not share the cores).
pb_launcher_lock() {
    exec 9>/tmp/.pippy-batch-launcher.lock
    flock 9
}
MPIRUN="mpirun --allow-run-as-root --oversubscribe"
# Ranks of this test run may only talk over loopback.
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
