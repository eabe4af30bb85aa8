#!/usr/bin/env bash
# Installs every Debian package efps builds, tests and benchmarks with.
# Idempotent, and it upgrades nothing on purpose: only the packages that are
# missing are named to apt, with --no-upgrade (an installed package named on
# the command line is never upgraded). apt still resolves the dependencies of
# what it installs: when a missing package needs a newer version of an
# installed library (e.g. after apt-get update, a new package built against a
# newer libsystemd0), apt upgrades that library and whatever must move with
# it. setup.sh asks apt first (a simulation) and prints those packages before
# installing, so nothing is upgraded without saying so. With nothing missing,
# apt is not run at all.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libibverbs-dev librdmacm-dev rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest
  libhwloc-dev libopenblas-dev libcmocka-dev libbenchmark-dev libssl-dev zlib1g-dev
  openmpi-bin libopenmpi-dev gnuplot-nox dataset-fashion-mnist
  python3-torch python3-torchvision python3-pytest
  python3-tqdm
  qemu-system-x86 busybox-static kmod cpio iproute2
  # fuzzing (tests/fuzz): clang's libFuzzer and sanitizer runtimes
  clang-14 libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
install=(apt-get install -y -qq --no-upgrade --no-install-recommends "${missing[@]}")
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
# "Inst name [installed-version] (new-version ...)": an upgrade of a package
# that is already there, pulled in by a dependency of a missing one.
upgrades=$($SUDO "${install[@]}" -s | sed -n 's/^Inst \([^ ]*\) \[\([^]]*\)\] (\([^ ]*\).*/\1 \2 -> \3/p')
if [ -n "$upgrades" ]; then
  echo "setup: apt must also upgrade these installed packages, which the missing ones need in a newer version:"
  sed 's/^/setup:   /' <<<"$upgrades"
fi
$SUDO "${install[@]}"
