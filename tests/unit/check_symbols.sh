#!/usr/bin/env bash
# check_symbols.sh LIBEFPS.so INCLUDE_DIR: the symbols libefps.so exports are
# exactly the EFPS_API declarations of INCLUDE_DIR/efps/*.h, both ways: no
# internal function leaks out, and no declared function is missing (or
# hidden by a mistake in the version script).
set -euo pipefail
lib=$1 inc=$2
# AddressSanitizer adds __odr_asan.<global> markers for exported globals: its own, not ours.
exported=$(nm -D --defined-only "$lib" | awk '$2 != "A" {sub(/@.*/, "", $3); print $3}' |
           grep -v '^__odr_asan\.' | sort -u)
declared=$(grep -h '^EFPS_API ' "$inc"/efps/*.h |
           sed -E 's/^([^(;]*[^A-Za-z0-9_(;])?([A-Za-z_][A-Za-z0-9_]*) *[(;].*/\2/' | sort -u)
[ -n "$exported" ] || { echo "no exported symbols in $lib"; exit 1; }
[ -n "$declared" ] || { echo "no EFPS_API declarations in $inc/efps"; exit 1; }
leaked=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
[ -z "$leaked" ] || echo "exported but not declared EFPS_API in $inc/efps:"$'\n'"$leaked"
[ -z "$missing" ] || echo "declared EFPS_API but not exported by $lib:"$'\n'"$missing"
[ -z "$leaked$missing" ] || exit 1
version=$(nm -D --defined-only "$lib" | awk '$2 == "A" {print $3}')
echo "$(echo "$exported" | wc -l) exported symbols = the EFPS_API declarations (version node $version)"
