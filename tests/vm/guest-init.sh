#!/bin/busybox sh
# PID 1 of the Soft-RoCE VM (runs from the busybox initramfs).
# Loads the modules, mounts the host root (read-only 9p) under a RAM overlay,
# binds the run directory (writable 9p) at its host path, chroots into the
# host root to run guest-stage2.sh, then powers off.  Every step prints an
# "efps-vm:" line on the serial console; vm-run.sh reads them to say where a
# failed boot stopped.  Any failure powers off at once: never hang.
/bin/busybox --install -s /bin
export PATH=/bin

share_ok=0
say() {
    echo "efps-vm: [$(cut -d' ' -f1 /proc/uptime)s] $*"
}
die() {
    say "FAIL: $*"
    [ "$share_ok" = 1 ] && echo "$*" >/share/fail
    sync
    poweroff -f
    sleep 10
}
# 9p devices appear when virtio_pci has probed them, which may lag insmod.
mount_9p() { # tag dir options
    i=0
    while ! mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$3" "$1" "$2" 2>/dev/null; do
        i=$((i + 1))
        [ $i -ge 50 ] && return 1
        sleep 0.1
    done
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say "init started, kernel $(uname -r)"

n=0
while read -r m; do
    insmod "/modules/$m.ko" || die "modules: insmod $m failed (see the kernel messages above)"
    n=$((n + 1))
done </modules.load
say "modules loaded ($n)"

mount_9p efpsrun /share "" || die "9p: cannot mount the run directory (tag efpsrun)"
share_ok=1
# RUN_DIR, STAGE2, SHARES, written by vm-run.sh.
# shellcheck source=/dev/null
. /share/vm.conf
mount_9p efpsroot /lower "ro,cache=loose" || die "9p: cannot mount the host root (tag efpsroot)"

# The host root stays read-only; a tmpfs overlay makes it writable in RAM
# without hiding any host path (a build tree in /tmp stays visible).
mount -t tmpfs -o mode=755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot ||
    die "overlay: cannot put a tmpfs overlay on the 9p host root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
{ mkdir -p "/newroot$RUN_DIR" && mount --bind /share "/newroot$RUN_DIR"; } ||
    die "cannot bind the run directory at $RUN_DIR"
# Extra writable host directories (vm-run.sh --share), tags share0, share1...
i=0
for dir in $SHARES; do
    { mkdir -p "/newroot$dir" && mount_9p "share$i" "/newroot$dir" ""; } ||
        die "9p: cannot mount share$i at $dir"
    i=$((i + 1))
done
say "host root mounted"

chroot /newroot /bin/sh "$STAGE2" "$RUN_DIR"
[ -e /share/rc ] || [ -e /share/fail ] || die "stage 2 ($STAGE2) ended without a result"
sync
poweroff -f
sleep 10
