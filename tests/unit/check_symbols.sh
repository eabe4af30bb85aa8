#!/usr/bin/env bash
# Fails when libefps.so exports a symbol without the efps_ prefix (or exports nothing).
set -euo pipefail
lib=$1
syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
[ -n "$syms" ] || { echo "no exported symbols in $lib"; exit 1; }
bad=$(echo "$syms" | grep -v '^efps_' || true)
if [ -n "$bad" ]; then
  echo "exported symbols without the efps_ prefix:"; echo "$bad"; exit 1
fi
echo "$(echo "$syms" | wc -l) exported symbols, all efps_*"
