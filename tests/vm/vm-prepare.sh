#!/usr/bin/env bash
# Makes, once, what the Soft-RoCE VM boots from, and prints where it is:
#   KERNEL=<vmlinuz>  INITRD=<initramfs>  KVER=<kernel version>
# The kernel is Debian's own (the one linux-image-amd64 depends on), because
# the host kernel has no RDMA and no 9p; only the modules the VM needs are
# kept, and the initramfs is rebuilt only when its inputs change.
# Usage: vm-prepare.sh CACHE_DIR      (idempotent; safe to run concurrently)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PATH=$PATH:/usr/sbin:/sbin # depmod, for callers that are not root
cache=${1:?usage: vm-prepare.sh CACHE_DIR}

# Top-level modules, in the order the notes give; modprobe --show-depends
# expands each into what it needs.  crc32_generic first: without it
# "rdma link add" fails with "failed to init crc32 algorithm err:-2".
# overlay lets the guest write over the read-only host root (in RAM).
TOP_MODULES="crc32_generic rdma_rxe 9p virtio_pci 9pnet_virtio veth rdma_ucm overlay"

die() {
    echo "vm-prepare: ERROR: $*" >&2
    exit 1
}

for tool in apt-cache apt-get dpkg depmod modprobe cpio gzip flock sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found (run scripts/setup.sh: kmod, cpio, apt)"
done
busybox=$(command -v busybox || true)
# A dynamic busybox cannot run in the initramfs, which holds no libc.
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    die "no static busybox found (install busybox-static: scripts/setup.sh)"
fi

mkdir -p "$cache"
exec 9>"$cache/.prepare.lock"
flock 9

# The kernel version: EFPSVM_KERNEL_PKG wins, else what linux-image-amd64
# names, else (no apt lists, offline) the newest kernel already cached.
pkg=${EFPSVM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
fi
if [ -z "$pkg" ]; then
    newest=$(find "$cache/kernel" -mindepth 2 -maxdepth 2 -name .complete 2>/dev/null | sort -V | tail -n 1)
    [ -n "$newest" ] || die "apt-cache depends linux-image-amd64 names no kernel and none is cached (run apt-get update)"
    pkg=linux-image-$(basename "$(dirname "$newest")")
fi
kver=${pkg#linux-image-}
kdir=$cache/kernel/$kver

if [ ! -e "$kdir/.complete" ]; then
    echo "vm-prepare: fetching $pkg (once; kept in $kdir)" >&2
    tmp=$(mktemp -d "$cache/.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
        die "apt-get download $pkg failed"
    dpkg -x "$tmp"/linux-image-*.deb "$tmp/root"
    depmod -b "$tmp/root" "$kver"
    mkdir -p "$tmp/out/modules"
    : >"$tmp/out/modules.load"
    for top in $TOP_MODULES; do
        deps=$(modprobe -d "$tmp/root" -S "$kver" --show-depends "$top") ||
            die "modprobe --show-depends $top failed for $kver"
        # "insmod <path>" lines, dependencies first; "builtin x" needs nothing.
        for ko in $(printf '%s\n' "$deps" | awk '$1 == "insmod" { print $2 }'); do
            name=$(basename "$ko" .ko)
            grep -qx "$name" "$tmp/out/modules.load" && continue
            cp "$ko" "$tmp/out/modules/"
            echo "$name" >>"$tmp/out/modules.load"
        done
    done
    cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
    cp "$tmp/root/boot/config-$kver" "$tmp/out/config"
    touch "$tmp/out/.complete"
    rm -rf "$kdir"
    mkdir -p "$cache/kernel"
    mv "$tmp/out" "$kdir"
    rm -rf "$tmp"
    trap - EXIT
fi

# The initramfs: static busybox, the modules, and guest-init.sh as /init.
# Named by a hash of its inputs, so editing the init script rebuilds it.
hash=$(cat "$here/guest-init.sh" "$kdir/modules.load" "$busybox" | sha256sum | cut -c1-16)
initrd=$kdir/initramfs-$hash.cpio.gz
if [ ! -e "$initrd" ]; then
    tmp=$(mktemp -d "$cache/.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/root"/{bin,dev,proc,sys,share,lower,upper,newroot}
    cp "$busybox" "$tmp/root/bin/busybox"
    cp "$here/guest-init.sh" "$tmp/root/init"
    chmod 755 "$tmp/root/init" "$tmp/root/bin/busybox"
    cp -r "$kdir/modules" "$kdir/modules.load" "$tmp/root/"
    (cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$tmp/initrd"
    # Other checkouts may share the cache with their own init: keep theirs
    # for a day (rebuilding one takes a second).
    find "$kdir" -name 'initramfs-*.cpio.gz' -mtime +0 -delete
    mv "$tmp/initrd" "$initrd"
    rm -rf "$tmp"
    trap - EXIT
fi

echo "KERNEL=$kdir/vmlinuz"
echo "INITRD=$initrd"
echo "KVER=$kver"
