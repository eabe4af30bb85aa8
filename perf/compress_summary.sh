#!/usr/bin/env bash
# Runs the compression-kernel benchmark and prints only its summary: every
# kernel's bytes/s as a fraction of the memory-pass reference measured in the
# same run. Usage: compress_summary.sh <build-dir> [extra benchmark flags]
set -euo pipefail
build=${1:?usage: compress_summary.sh <build-dir> [benchmark flags]}
shift
"$build/perf/bench_compress" --benchmark_min_time=0.2 "$@" 2>/dev/null |
  sed -n '/^kernel\/variant/,$p'
