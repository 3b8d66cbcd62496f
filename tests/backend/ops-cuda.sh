#!/bin/sh
# Every op of the CUDA backend against the plain references of
# tests/backend/ops (exit 77 where this build or machine has no GPU).
exec "${PB_BUILDDIR:?}/tests/backend/ops" cuda
