#!/usr/bin/env bash
# efps's verbs transport against perftest's ib_write_bw, on the same device,
# at the same message sizes and iteration counts, in the same run.
#
# usage: perf/verbs_vs_perftest.sh [--build DIR] [--rounds R] [--out FILE]
#   --build DIR  build directory with apps/efps-perf (default: build)
#   --rounds R   repeat every measurement R times, alternating the tools (default 3)
#   --out FILE   also write the report there
#
# What is compared (one-way RDMA writes on both sides):
#   ib_write_bw  -d DEV -F -s SIZE -n ITERS, GIDs over TCP (-x GID) and over
#                rdma_cm (-R); "BW average" of the client, MB/s of 2^20 bytes.
#   efps verbs   efps-perf --write-bw -t verbs: SIZE-byte efps_tp_write_imm from
#                a registered buffer into the peer's registered region, up to
#                128 outstanding (ib_write_bw's default tx depth), the receiver
#                polling every RECV and returning credit. That is exactly the
#                data path of a `none` push (one write_imm of the fp32 bytes from
#                the push arena into the server's slot; the server's reduction
#                is not in it). Same bytes, same units, sender's first post to
#                last completion, like ib_write_bw.
#   ratio        efps verbs / the better ib_write_bw of the same round; the
#                median over the rounds is the figure (target: >= 0.9 at 1 MiB
#                and 16 MiB). Absolute MB/s of an emulated CPU mean nothing.
# For context it also prints efps-perf --write-bw over tcp (loopback) and the
# parameter server's push+pull round trip (efps-perf -c none) over verbs.
#
# Where: a machine without an RDMA NIC runs the comparison in the Soft-RoCE VM
# (tests/vm/vm-run.sh, device rxe0 on 10.23.0.1). Where a real device with an
# active port exists, it first compares efps-perf verbs with tcp on it, in the
# same run; without one it says so and skips that part.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
rounds=3
out=
in_vm=0
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --in-vm) in_vm=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--rounds R] [--out FILE]" >&2; exit 2 ;;
    esac
done
perf=$build/apps/efps-perf/efps-perf
[ -x "$perf" ] || { echo "verbs_vs_perftest: no $perf (build first)" >&2; exit 1; }
# size:iterations, about 1-4 s each under emulation
SIZES=(65536:2000 1048576:200 16777216:20)

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'; }

# ---- inside the VM -------------------------------------------------------------
wait_listen() { # port [cm]
    local i
    for i in $(seq 200); do
        if [ "${2:-}" = cm ]; then
            rdma res show cm_id 2>/dev/null | grep -q "state LISTEN .*:$1 " && return 0
        else
            [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
        fi
        sleep 0.05
    done
    return 1
}

port=19000
ib_write_bw_once() { # mode(x|R) size iters -> MB/s
    local mode=$1 size=$2 iters=$3 args kind spid bw
    port=$((port + 1))
    if [ "$mode" = x ]; then args=(-x "$EFPSVM_GID"); kind=tcp; else args=(-R); kind=cm; fi
    timeout 120 ib_write_bw -d "$EFPSVM_DEV" "${args[@]}" -F -s "$size" -n "$iters" -p "$port" \
        >"$tmp/ib.server" 2>&1 &
    spid=$!
    wait_listen "$port" "$kind" || { kill "$spid" 2>/dev/null; echo nan; return; }
    timeout 120 ib_write_bw -d "$EFPSVM_DEV" "${args[@]}" -F -s "$size" -n "$iters" -p "$port" \
        "$EFPSVM_IP" >"$tmp/ib.client" 2>&1 || true
    wait "$spid" 2>/dev/null || true
    bw=$(awk -v s="$size" '$1 == s && NF >= 5 { print $4 }' "$tmp/ib.client" | tail -n 1)
    if [ -z "$bw" ]; then
        echo "verbs_vs_perftest: ib_write_bw -$mode -s $size gave no result:" >&2
        cat "$tmp/ib.client" >&2
        bw=nan
    fi
    echo "$bw"
}

efps_write_bw_once() { # transport host size iters -> MB/s
    local line
    if ! "$perf" --write-bw -t "$1" --host "$2" -s "$3" -n "$4" -r 1 >"$tmp/efps.out" 2>&1; then
        echo "verbs_vs_perftest: efps-perf --write-bw -t $1 -s $3 failed:" >&2
        cat "$tmp/efps.out" >&2
        echo nan
        return
    fi
    line=$(awk -v s="$3" '$1 == s { print $3 }' "$tmp/efps.out" | tail -n 1)
    echo "${line:-nan}"
}

run_in_vm() {
    tmp=$(mktemp -d)
    export EFPS_IB_DEV=$EFPSVM_DEV EFPS_LOG=error
    echo "== $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores; device $EFPSVM_DEV ($EFPSVM_IP, GID $EFPSVM_GID)"
    for r in $(seq "$rounds"); do
        for si in "${SIZES[@]}"; do
            size=${si%:*}
            iters=${si#*:}
            x=$(ib_write_bw_once x "$size" "$iters")
            v=$(efps_write_bw_once verbs "$EFPSVM_IP" "$size" "$iters")
            R=$(ib_write_bw_once R "$size" "$iters")
            t=$(efps_write_bw_once tcp 127.0.0.1 "$size" "$iters")
            ratio=$(awk -v v="$v" -v x="$x" -v R="$R" 'BEGIN { b = x + 0 > R + 0 ? x : R;
                    if (b + 0 > 0 && v != "nan") printf "%.3f", v / b; else print "nan" }')
            printf 'round %d %9s: ib -x %8s  ib -R %8s  efps verbs %8s  efps tcp %8s  ratio %s\n' \
                "$r" "$size" "$x" "$R" "$v" "$t" "$ratio"
            echo "$size $iters $x $R $v $t $ratio" >>"$tmp/rows"
        done
    done
    echo
    echo "== parameter server push+pull round trip (efps-perf -c none, 1 worker x 1 server, 1 MiB,"
    echo "   fp32 MB/s of 10^6 bytes counting push and pull; context, not the ratio)"
    for t in verbs:$EFPSVM_IP tcp:127.0.0.1; do
        "$perf" -t "${t%%:*}" --host "${t#*:}" -c none -s 1048576 -n 40 -r 1 --no-raw 2>&1 |
            tail -n 1 | sed "s/^/${t%%:*} /" || true
    done
    echo
    echo "== efps verbs vs ib_write_bw on $EFPSVM_DEV: medians of $rounds round(s); MB/s = 2^20 bytes/s"
    printf '%10s %7s %12s %12s %12s %12s %14s\n' bytes iters "ib_write_bw" "ib_write_bw" "efps" "efps" "efps verbs /"
    printf '%10s %7s %12s %12s %12s %12s %14s\n' "" "" "-x (GID)" "-R (rdma_cm)" "verbs" "tcp (lo)" "best ib"
    fail=0
    for si in "${SIZES[@]}"; do
        size=${si%:*}
        col() { awk -v s="$size" -v c="$1" '$1 == s { print $c }' "$tmp/rows" | grep -v nan | median; }
        ratio=$(col 7)
        printf '%10s %7s %12s %12s %12s %12s %14s\n' "$size" "${si#*:}" "$(col 3)" "$(col 4)" \
            "$(col 5)" "$(col 6)" "$ratio"
        if [ "$size" != 65536 ] && ! awk -v r="$ratio" 'BEGIN { exit !(r + 0 >= 0.9) }'; then
            fail=1
        fi
    done
    echo
    if [ "$fail" = 0 ]; then
        echo "verbs_vs_perftest: efps verbs >= 0.9 x ib_write_bw at 1 MiB and 16 MiB: yes"
    else
        echo "verbs_vs_perftest: efps verbs >= 0.9 x ib_write_bw at 1 MiB and 16 MiB: NO"
    fi
    rm -rf "$tmp"
    return "$fail"
}

if [ "$in_vm" = 1 ]; then
    run_in_vm
    exit $?
fi

# ---- on the host -------------------------------------------------------------------
report() { if [ -n "$out" ]; then tee -a "$out"; else cat; fi; }
[ -z "$out" ] || : >"$out"
{
    echo "== verbs vs tcp on this machine's own RDMA device"
    if ibv_devinfo 2>/dev/null | grep -q PORT_ACTIVE; then
        dev=$(ibv_devinfo 2>/dev/null | awk '/hca_id:/ { d = $2 } /PORT_ACTIVE/ { print d; exit }')
        addr=$(ibv_devinfo -v -d "$dev" 2>/dev/null | sed -n 's/.*GID\[ *[0-9]*\]:[[:space:]]*::ffff:\([0-9.]*\).*/\1/p' | head -n 1)
        if [ -z "$addr" ]; then
            echo "device $dev has no IPv4 GID: cannot reach it through rdma_cm; skipped"
        else
            for si in "${SIZES[@]}"; do
                EFPS_IB_DEV=$dev "$perf" --write-bw -t verbs --host "$addr" -s "${si%:*}" -n "${si#*:}" -r "$rounds" | tail -n 1 | sed 's/^/verbs /'
                "$perf" --write-bw -t tcp --host "$addr" -s "${si%:*}" -n "${si#*:}" -r "$rounds" | tail -n 1 | sed 's/^/tcp   /'
            done
        fi
    else
        echo "no RDMA device with an active port on this host: the verbs vs tcp comparison on"
        echo "real hardware is skipped (nothing here to measure it on); Soft-RoCE in the VM follows."
    fi
    echo
} | report
"$root/tests/vm/vm-run.sh" --timeout 1500 -- bash "$root/perf/verbs_vs_perftest.sh" --in-vm \
    --build "$build" --rounds "$rounds" 2>&1 | report
