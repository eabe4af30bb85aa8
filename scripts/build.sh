#!/usr/bin/env bash
# Configures and builds one build directory: build.sh <dir> [cmake args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$1; shift
case $dir in /*) ;; *) dir=$root/$dir ;; esac # relative to the repository
cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
cmake --build "$dir"
