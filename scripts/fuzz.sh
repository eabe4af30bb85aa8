#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (build-fuzz, ASan +
# UBSan + libFuzzer) and runs each one for a bounded time, one after the
# other, starting from its seed corpus and its kept regressions.
#
#   scripts/fuzz.sh [-t SECONDS] [-r RUNS] [TARGET...]
#     -t SECONDS  per target (default 20; FUZZ_SECONDS in the environment)
#     -r RUNS     stop each target after RUNS executions instead (measuring:
#                 -r 1000000); the time limit then only caps a stuck run
#     TARGET      idx, ckpt, config, ... (default: every tests/fuzz/fuzz_*.c)
#   FUZZ_BUILD=DIR builds in DIR instead of build-fuzz.
#
# A finding (crash, sanitizer report, leak, timeout, out-of-memory) is copied
# to tests/fuzz/regressions/<target>/ (commit it: every ctest run replays it
# from then on, in the gcc builds too) and the script exits 1 after the
# other targets ran. Inputs that only add coverage are not kept: the seed
# corpora stay small and hand-made. The last lines are a table of executions
# and time per target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
runs=-1
while getopts "t:r:h" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    r) runs=$OPTARG ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: -t needs a positive number of seconds" >&2; exit 2; }
[[ $runs =~ ^(-1|[1-9][0-9]*)$ ]] || { echo "fuzz.sh: -r needs a positive number of runs" >&2; exit 2; }

targets=("$@")
explicit=${#targets[@]}
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/tests/fuzz/fuzz_*.c; do
    t=${f##*/fuzz_}
    targets+=("${t%.c}")
  done
fi
for t in "${targets[@]}"; do
  [ -f "$root/tests/fuzz/fuzz_$t.c" ] || { echo "fuzz.sh: no target '$t' (tests/fuzz/fuzz_$t.c)" >&2; exit 2; }
done

cc=$(command -v clang-14 || command -v clang || true)
cxx=$(command -v clang++-14 || command -v clang++ || true)
[ -n "$cc" ] && [ -n "$cxx" ] || { echo "fuzz.sh: clang is needed (scripts/setup.sh installs clang-14)" >&2; exit 2; }
# Only the fuzz targets: the rest of the tree is built and tested with gcc.
CC=$cc CXX=$cxx cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEFPS_FUZZ=ON > /dev/null
# A target whose code is not in the tree yet (tests/fuzz/CMakeLists.txt says
# which) is left out of the default list.
known=$(cmake --build "$build" --target help)
kept=()
for t in "${targets[@]}"; do
  if grep -qw "fuzz_$t" <<< "$known"; then
    kept+=("$t")
  elif [ "$explicit" -gt 0 ]; then
    echo "fuzz.sh: fuzz_$t is not built in this tree (see tests/fuzz/CMakeLists.txt)" >&2; exit 2
  else
    echo "fuzz.sh: fuzz_$t left out: not built in this tree (see tests/fuzz/CMakeLists.txt)"
  fi
done
targets=("${kept[@]}")
nice cmake --build "$build" --target "${targets[@]/#/fuzz_}"

work=$(mktemp -d /tmp/efps-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
# A run stops at the first finding; leaks count as findings.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
summary=()
for t in "${targets[@]}"; do
  exe=$build/tests/fuzz/fuzz_$t
  corpus=$work/$t
  mkdir -p "$corpus" "$work/found-$t"
  for d in corpus regressions; do
    [ -d "$root/tests/fuzz/$d/$t" ] && cp "$root/tests/fuzz/$d/$t"/* "$corpus"/ 2>/dev/null || true
  done
  limit=$seconds
  [ "$runs" -eq -1 ] || limit=$((seconds > 3600 ? seconds : 3600))
  echo "== fuzz_$t ($( [ "$runs" -eq -1 ] && echo "${seconds} s" || echo "$runs runs"))"
  rc=0
  start=$(date +%s.%N)
  (cd "$work" && nice "$exe" -max_total_time="$limit" -runs="$runs" -timeout=10 \
     -rss_limit_mb=2048 -close_fd_mask=2 -print_final_stats=1 \
     -artifact_prefix="$work/found-$t/" "$corpus") > "$work/$t.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
  found=("$work/found-$t"/*)
  if [ $rc -ne 0 ] || [ -e "${found[0]}" ]; then
    mkdir -p "$root/tests/fuzz/regressions/$t"
    for f in "${found[@]}"; do [ -e "$f" ] && cp "$f" "$root/tests/fuzz/regressions/$t/"; done
    grep -E "ERROR|SUMMARY|==[0-9]+==|runtime error" "$work/$t.log" | head -20 || true
    echo "fuzz_$t: FINDING (exit $rc), input kept in tests/fuzz/regressions/$t/:" \
         "${found[@]##*/}"
    failed+=("$t")
    summary+=("$(printf '%-8s %12s %8s  %s' "$t" "${execs:-?}" "$secs" FINDING)")
  else
    summary+=("$(printf '%-8s %12s %8s  %s' "$t" "${execs:-?}" "$secs" ok)")
  fi
done

echo "== fuzz summary (clang $("$cc" -dumpversion), ASan + UBSan + libFuzzer)"
printf '%-8s %12s %8s  %s\n' target executions seconds result
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in ${failed[*]}: see tests/fuzz/regressions/" >&2
  exit 1
fi
