#!/bin/sh
# tests/net/nccl.sh on src/cuda/transport_nccl.cu built as C++ against a CPU
# stand-in of CUDA and NCCL (tests/net/nccl_emu: streams as threads, two-rank
# communicators over loopback TCP where a send waits for its receive, a cut
# transfer hangs until ncclCommAbort): the transport's threads, protocol,
# timeouts, failure paths and the pipeline over it, checked on every machine.
PB_NCCL_TEST="${PB_BUILDDIR:?}/tests/net/nccl_emu_test" PB_PIPE_TEST="$PB_BUILDDIR/tests/net/pipe_emu_test" \
    exec sh "${PB_SRCDIR:?}/tests/net/nccl.sh"
