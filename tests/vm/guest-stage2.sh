#!/bin/sh
# Second stage of the Soft-RoCE VM, run by guest-init.sh chrooted into the
# host root (so it uses the host's ip, rdma and libibverbs).  Makes rxe0 on
# a veth pair, waits until it is ACTIVE, then runs the run directory's
# cmd.sh with stdout, stderr and exit code going to files in that directory.
# Usage (guest only): guest-stage2.sh RUN_DIR
run=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin # init's is /bin
ip_addr=10.23.0.1

say() {
    echo "efps-vm: [$(cut -d' ' -f1 /proc/uptime)s] $*"
}
die() {
    say "FAIL: $*"
    echo "$*" >"$run/fail"
    dmesg | tail -n 20
    exit 1
}

# Soft-RoCE needs a netdev that is up with carrier: one end of a veth pair.
# Every process uses this one device and its own address (loopback inside
# rxe); two rxe devices on the two ends do not work (see README.md).
# One ip process: every exec under emulation costs tens of milliseconds.
ip -batch - <<EOF || die "network: cannot set up veth0 with $ip_addr"
link set lo up
link add veth0 mtu 9000 type veth peer name veth1 mtu 9000
addr add $ip_addr/24 dev veth0
link set veth1 up
link set veth0 up
EOF
rdma link add rxe0 type rxe netdev veth0 || die "rxe: 'rdma link add rxe0 type rxe netdev veth0' failed"

port=/sys/class/infiniband/rxe0/ports/1
i=0
until grep -q ACTIVE "$port/state" 2>/dev/null; do
    i=$((i + 1))
    [ $i -ge 200 ] && die "rxe: rxe0 port 1 is not ACTIVE after 20 s (state: $(cat "$port/state" 2>&1))"
    sleep 0.1
done

# The GID of veth0's IPv4 address (RoCE v2, ::ffff:a.b.c.d).  It appears
# shortly after the address does, so wait for it too.
want=$(echo "$ip_addr" | {
    IFS=. read -r a b c d
    printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' "$a" "$b" "$c" "$d"
})
gid=
i=0
while [ -z "$gid" ]; do
    for f in "$port"/gids/*; do
        [ "$(cat "$f" 2>/dev/null)" = "$want" ] && gid=${f##*/} && break
    done
    [ -n "$gid" ] && break
    i=$((i + 1))
    [ $i -ge 100 ] && die "rxe: no GID for $ip_addr on rxe0 after 10 s"
    sleep 0.1
done
say "rxe0 ACTIVE on veth0 $ip_addr, gid index $gid ($(cat "$port/gid_attrs/types/$gid" 2>/dev/null))"

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-)
simd=
for f in avx2 avx512f; do
    grep -m1 '^flags' /proc/cpuinfo | grep -qw "$f" && simd="$simd $f"
done
say "cpu:$cpu, $(nproc) cores, SIMD:${simd:- none beyond SSE}"

# What commands may rely on (not EFPS_*: those are the library's own).
export EFPSVM_DEV=rxe0 EFPSVM_GID="$gid" EFPSVM_IP="$ip_addr" EFPSVM_RUN_DIR="$run"
say "command started"
bash "$run/cmd.sh" >"$run/stdout" 2>"$run/stderr" </dev/null
rc=$?
echo "$rc" >"$run/rc"
say "command finished, exit code $rc"
