#!/usr/bin/env bash
# Configures and builds one build directory: build.sh <dir> [cmake args...]
# Warnings are errors here (EFPS_WERROR=ON; later arguments may override it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$1; shift
case $dir in /*) ;; *) dir=$root/$dir ;; esac # relative to the repository
cmake -S "$root" -B "$dir" -G Ninja --no-warn-unused-cli -DEFPS_WERROR=ON "$@" >/dev/null
cmake --build "$dir"
