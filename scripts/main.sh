#!/usr/bin/env bash
# The main job, for now: build and print the compression-kernel benchmark
# summary (each kernel as a fraction of a memory pass measured in the same run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" build -DCMAKE_BUILD_TYPE=RelWithDebInfo
"$root/perf/compress_summary.sh" "$root/build"
