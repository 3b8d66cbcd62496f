# Sourced by the multi-rank tests: one launcher test at a time (mpirun and
# the test Slurm must not share the 2 cores with each other under make -j).
pb_launcher_lock() {
    exec 9>"${PB_BUILDDIR:-/tmp}/.pb-launcher.lock"
    flock 9
}
MPIRUN="mpirun --allow-run-as-root --oversubscribe"
# Ranks of this test run may only talk over loopback.
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
