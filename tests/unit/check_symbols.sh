#!/usr/bin/env bash
# Fails when libefps.so exports a symbol without the efps_ prefix (or exports nothing).
set -euo pipefail
lib=$1
# AddressSanitizer adds __odr_asan.<global> markers for exported globals: its own, not ours.
syms=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^__odr_asan\.' || true)
[ -n "$syms" ] || { echo "no exported symbols in $lib"; exit 1; }
bad=$(echo "$syms" | grep -v '^efps_' || true)
if [ -n "$bad" ]; then
  echo "exported symbols without the efps_ prefix:"; echo "$bad"; exit 1
fi
echo "$(echo "$syms" | wc -l) exported symbols, all efps_*"
