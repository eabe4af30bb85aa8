#!/usr/bin/env bash
# tcp_only.sh SRC TMPDIR: a machine without rdma-core, simulated: pkg-config
# sees only the library's other modules (libcrypto, zlib), so
# EFPS_WITH_VERBS=AUTO must fall back to tcp, and OFF must too even where
# rdma-core is installed. Either way the library builds, compiles no verbs
# source, includes no rdma or hwloc header, references no ibv_/rdma_/hwloc_
# symbol and does not link libibverbs, librdmacm or libhwloc; the tcp and
# in-thread server tests pass on it; an explicit
# EFPS_WITH_VERBS=ON fails at configure time, naming the packages.
set -euo pipefail
src=$1 tmp=$2
rm -rf "$tmp"; mkdir -p "$tmp/pc"
for m in libcrypto zlib; do
  pc=$(pkg-config --variable=pcfiledir "$m")/$m.pc
  ln -s "$pc" "$tmp/pc/$m.pc"
done
fail() { echo "FAIL: $*"; exit 1; }

check_build() { # dir
  local d=$1 so=$1/libefps.so
  [ -f "$so" ] || fail "$so not built"
  if grep -q "transport/verbs/" "$d/build.ninja"; then fail "a verbs source is compiled"; fi
  local hdrs
  hdrs=$(ninja -C "$d" -t deps | grep -E "/(infiniband|rdma|hwloc)[/.]" || true)
  [ -z "$hdrs" ] || fail "rdma/hwloc headers included: $hdrs"
  local syms
  syms=$(nm -u "$so" | grep -E " (ibv_|rdma_|hwloc_)" || true)
  [ -z "$syms" ] || fail "libefps.so references $syms"
  if readelf -d "$so" | grep -E "NEEDED.*(ibverbs|rdmacm|hwloc)"; then fail "links rdma-core/hwloc"; fi
  echo "ok: $d: tcp-only library, no rdma-core or hwloc in sources, headers, symbols or links"
}

lib_only=(-G Ninja -DEFPS_BUILD_TESTS=OFF -DEFPS_BUILD_APPS=OFF -DEFPS_BUILD_PERF=OFF
          -DEFPS_WERROR=ON -DCMAKE_BUILD_TYPE=Release)
# 1. rdma-core "not installed", AUTO: tcp only.
PKG_CONFIG_LIBDIR=$tmp/pc cmake -S "$src" -B "$tmp/auto" "${lib_only[@]}" > "$tmp/auto.log"
grep -q "EFPS_WITH_VERBS=AUTO -> OFF" "$tmp/auto.log" || fail "AUTO did not fall back: $(cat "$tmp/auto.log")"
cmake --build "$tmp/auto" --target efps efps_static > "$tmp/auto-build.log" || fail "$(tail -30 "$tmp/auto-build.log")"
check_build "$tmp/auto"
# 2. OFF where rdma-core is installed: the same, and the tcp transport and
# the parameter server (in threads) pass their tests on it.
cmake -S "$src" -B "$tmp/off" "${lib_only[@]}" -DEFPS_WITH_VERBS=OFF -DEFPS_BUILD_TESTS=ON \
  > "$tmp/off.log"
cmake --build "$tmp/off" --target efps test_transport_tcp test_server > "$tmp/off-build.log" ||
  fail "$(tail -30 "$tmp/off-build.log")"
check_build "$tmp/off"
for t in test_transport_tcp test_server; do
  "$tmp/off/tests/unit/$t" > "$tmp/$t.log" 2>&1 || fail "$t on the tcp-only library: $(tail -30 "$tmp/$t.log")"
  echo "ok: $t passes on the tcp-only library"
done
# 3. ON without rdma-core: a configure error that says what to install.
if PKG_CONFIG_LIBDIR=$tmp/pc cmake -S "$src" -B "$tmp/on" "${lib_only[@]}" -DEFPS_WITH_VERBS=ON \
     > "$tmp/on.log" 2>&1; then
  fail "EFPS_WITH_VERBS=ON configured without rdma-core"
fi
grep -q "apt-get install libibverbs-dev" "$tmp/on.log" || fail "no install hint: $(cat "$tmp/on.log")"
echo "ok: EFPS_WITH_VERBS=ON without rdma-core stops configuration with the packages to install"
rm -rf "$tmp"
