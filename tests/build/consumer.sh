#!/usr/bin/env bash
# consumer.sh BUILD TMPDIR: installs BUILD into TMPDIR/prefix, checks what was
# installed, then builds tests/build/consumer/consumer.c out of tree against
# it with find_package(efps) (efps::efps and efps::efps_static) and with
# pkg-config (shared: a static link through pkg-config --static would need
# every rdma-core provider's static library), and runs each (a server and 2
# workers on loopback).
set -euo pipefail
build=$1 tmp=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$tmp"; mkdir -p "$tmp"
prefix=$tmp/prefix
fail() { echo "FAIL: $*"; exit 1; }
cmake --install "$build" --prefix "$prefix" > "$tmp/install.log"
libdir=$(cd "$prefix" && ls -d lib*/ | head -1); libdir=$prefix/${libdir%/}
for f in include/efps/efps.h include/efps/version.h include/efps/ps.h bin/efps-server; do
  [ -e "$prefix/$f" ] || fail "$f not installed"
done
for f in libefps.a libefps.so pkgconfig/efps.pc cmake/efps/efpsConfig.cmake \
         cmake/efps/efpsConfigVersion.cmake cmake/efps/efpsTargets.cmake; do
  [ -e "$libdir/$f" ] || fail "$libdir/$f not installed"
done
soname=$(readelf -d "$libdir/libefps.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ -e "$libdir/$soname" ] || fail "no $soname"
echo "ok: installed into $prefix (SONAME $soname)"

export EFPS_SECRET=consumer-test-secret
# 1. find_package(efps)
cmake -S "$here/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" > "$tmp/cmake.log" ||
  fail "configure: $(cat "$tmp/cmake.log")"
cmake --build "$tmp/cmake" > "$tmp/cmake-build.log" 2>&1 || fail "$(cat "$tmp/cmake-build.log")"
for exe in consumer consumer_static; do
  "$tmp/cmake/$exe" || fail "$exe (find_package) failed"
  echo "ok: $exe built with find_package(efps) runs"
done
ldd "$tmp/cmake/consumer" | grep "$libdir/libefps.so" >/dev/null || fail "consumer does not use the installed libefps.so"
# 2. pkg-config
export PKG_CONFIG_PATH=$libdir/pkgconfig
cc -std=c11 -Wall -Werror -o "$tmp/consumer_pc" "$here/consumer/consumer.c" \
  $(pkg-config --cflags --libs efps) -pthread
LD_LIBRARY_PATH=$libdir "$tmp/consumer_pc" || fail "consumer (pkg-config) failed"
echo "ok: consumer built with pkg-config --cflags --libs efps runs"
rm -rf "$tmp"
