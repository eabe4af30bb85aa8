#!/usr/bin/env bash
# Installs every Debian package efps builds, tests and benchmarks with.
# Idempotent: packages already present are left alone, apt-get runs only when one is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libibverbs-dev librdmacm-dev rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest
  libhwloc-dev libopenblas-dev libcmocka-dev libbenchmark-dev libssl-dev zlib1g-dev
  openmpi-bin libopenmpi-dev gnuplot-nox dataset-fashion-mnist
  python3-torch python3-torchvision python3-pytest
  qemu-system-x86 busybox-static kmod cpio iproute2
  clang-14 libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
