#!/usr/bin/env bash
# Runs a command inside a qemu VM (software emulation) whose Debian kernel
# has Soft-RoCE: an ACTIVE rxe0 device on veth0 (10.23.0.1).  The guest sees
# the host's files at the same paths (read-only, with RAM-backed writes), so
# a build tree is usable as is.  Prints the command's stdout and stderr and
# exits with its exit code; exits 124 on timeout and 125 when the VM itself
# failed (no boot, a module, no ACTIVE rxe0), always with a message saying so.
# The command's output is streamed while it runs (polled once a second).
#
# Usage: vm-run.sh [options] [--] command [args...]
#   --cache DIR    kernel, initramfs and run directories
#                  (default: $EFPSVM_CACHE or ${XDG_CACHE_HOME:-$HOME/.cache}/efps-vm)
#   --timeout SEC  whole VM run, boot included (default 300)
#   --mem MB       guest memory (default 2048)
#   --smp N        guest cores (default 2)
#   --cpu MODEL    qemu -cpu (default max: AVX2 under TCG; qemu64 has none)
#   --share DIR    also make host DIR writable in the guest, same path (repeatable)
#   -e VAR=VALUE   set VAR for the command (EFPS_*, PATH, LD_LIBRARY_PATH and
#                  ASAN/UBSAN/LSAN_OPTIONS are passed on from the caller)
#   --keep         keep the run directory (console log, outputs) on success
# Inside, EFPSVM_DEV, EFPSVM_GID, EFPSVM_IP name the device, its IPv4 GID
# index and address; EFPSVM_RUN_DIR is a writable directory (discarded).
# Several processes in one boot: vm-run.sh -- sh /path/to/script.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${EFPSVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/efps-vm}
timeout_s=300
mem=2048
smp=2
cpu=max
keep=0
shares=()
envs=()

usage() {
    sed -n '/^# Usage:/,/^# Several/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 125
}
fail() { # exit-code message...
    local code=$1
    shift
    echo "efps-vm: ERROR: $*" >&2
    exit "$code"
}

while [ $# -gt 0 ]; do
    case $1 in
    --cache) cache=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --share) shares+=("$(realpath "$2")"); shift 2 ;;
    -e) [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || fail 125 "-e wants VAR=VALUE, not '$2'"
        envs+=("$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) echo "vm-run.sh: unknown option $1" >&2; usage ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || usage
for n in "$timeout_s" "$mem" "$smp"; do
    [[ $n =~ ^[0-9]+$ ]] || fail 125 "'$n' is not a number"
done
command -v qemu-system-x86_64 >/dev/null ||
    fail 125 "qemu-system-x86_64 not found (install qemu-system-x86: scripts/setup.sh)"

mkdir -p "$cache/runs"
cache=$(realpath "$cache")
# The guest init splits these on spaces and quotes them with ''.
for p in "$cache" "${shares[@]}"; do
    [[ $p =~ ^/[A-Za-z0-9._/+@-]*$ ]] || fail 125 "path '$p' has characters the VM cannot take"
done
# Old run directories (kept after failures) go after a day.
find "$cache/runs" -mindepth 1 -maxdepth 1 -mtime +0 -exec rm -rf {} + 2>/dev/null || true

t0=$(date +%s.%N)
prep=$("$here/vm-prepare.sh" "$cache") || fail 125 "preparing the VM kernel and initramfs failed (see above)"
KERNEL=$(sed -n 's/^KERNEL=//p' <<<"$prep")
INITRD=$(sed -n 's/^INITRD=//p' <<<"$prep")

run=$(mktemp -d "$cache/runs/run.XXXXXX")
chmod 755 "$run"
{
    echo "RUN_DIR='$run'"
    echo "STAGE2='$here/guest-stage2.sh'"
    echo "SHARES='${shares[*]}'"
} >"$run/vm.conf"
{
    echo "# written by vm-run.sh"
    for v in PATH LD_LIBRARY_PATH ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS $(compgen -e EFPS_ || true); do
        [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
    done
    for e in "${envs[@]}"; do
        printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    done
    printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$run/cmd.sh"

# no_timer_check: on a busy host the emulated guest can miss the timer
# interrupts its IO-APIC check counts at boot and panic ("IO-APIC + timer
# doesn't work!", seen here at load 32); the check only guards real hardware.
qemu=(qemu-system-x86_64 -accel tcg -cpu "$cpu" -smp "$smp" -m "$mem"
      -kernel "$KERNEL" -initrd "$INITRD"
      -append "console=ttyS0 panic=-1 mitigations=off no_timer_check"
      -display none -monitor none -serial "file:$run/console.log" -no-reboot -nic none
      -virtfs "local,path=/,mount_tag=efpsroot,security_model=none,readonly=on,multidevs=remap"
      -virtfs "local,path=$run,mount_tag=efpsrun,security_model=none,multidevs=remap")
i=0
for s in "${shares[@]}"; do
    qemu+=(-virtfs "local,path=$s,mount_tag=share$i,security_model=none,multidevs=remap")
    i=$((i + 1))
done

# Copies what the command has written so far to $run/stdout and stderr (the
# guest writes them through the shared run directory) to our stdout and
# stderr, once a second until the VM stops, then the rest: a VM test's
# output appears while it runs, not minutes later.
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
bytes() { tail -c +$(($2 + 1)) "$1" | head -c $(($3 - $2)); } # file from to
stream() { # pid-to-watch
    local out=0 err=0 n alive=1
    while [ $alive = 1 ]; do
        kill -0 "$1" 2>/dev/null || alive=0 # then one last copy
        n=$(size_of "$run/stdout")
        [ "$n" -gt "$out" ] && bytes "$run/stdout" "$out" "$n" && out=$n
        n=$(size_of "$run/stderr")
        [ "$n" -gt "$err" ] && bytes "$run/stderr" "$err" "$n" >&2 && err=$n
        [ $alive = 1 ] && sleep 1
    done
    return 0
}

# qemu runs in the background so that a signal to us (ctest's timeout)
# still reaches the trap, which stops the VM instead of leaving it running.
qpid=
spid=
trap '[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
      [ -n "$spid" ] && kill "$spid" 2>/dev/null
      echo "efps-vm: ERROR: interrupted by a signal; VM stopped (run directory kept: $run)" >&2
      exit 125' INT TERM HUP
timeout -k 10 "$timeout_s" "${qemu[@]}" >"$run/qemu.out" 2>&1 </dev/null &
qpid=$!
stream "$qpid" &
spid=$!
qrc=0
wait "$qpid" || qrc=$?
qpid=
wait "$spid" || true
spid=
t1=$(date +%s.%N)
cp "$run/console.log" "$cache/last-console.log" 2>/dev/null || true

# The guest's progress lines: the last one says how far it got, and a FAIL
# line (also in the fail file once the share is mounted) says what broke.
stage=$(grep -a '^efps-vm: ' "$run/console.log" 2>/dev/null | grep -v ' FAIL: ' | tail -n 1 | sed 's/^efps-vm: //' || true)
why=$(cat "$run/fail" 2>/dev/null ||
      grep -a '^efps-vm: .* FAIL: ' "$run/console.log" 2>/dev/null | sed 's/.* FAIL: //' | head -n 1 || true)
report_failure() { # exit-code message
    echo "efps-vm: ======== FAILED: $2" >&2
    echo "efps-vm: last stage reached: ${stage:-none (init printed nothing)}" >&2
    if [ -s "$run/qemu.out" ]; then
        echo "efps-vm: qemu said:" >&2
        tail -n 20 "$run/qemu.out" >&2
    fi
    echo "efps-vm: ---- console log tail ($run/console.log)" >&2
    tail -n 40 "$run/console.log" >&2 2>/dev/null || echo "(no console log)" >&2
    echo "efps-vm: ======== FAILED: $2 (run directory kept: $run)" >&2
    exit "$1"
}

if [ -e "$run/rc" ]; then
    rc=$(cat "$run/rc") # stdout and stderr were streamed
    echo "efps-vm: command exited $rc; VM run $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s;" \
        "$(grep -a -o '^efps-vm: .* cpu:.*' "$run/console.log" | sed 's/.*cpu: *//')" >&2
    [ "$keep" = 1 ] || rm -rf "$run"
    exit "$rc"
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    report_failure 124 "timed out after $timeout_s s (--timeout)"
elif [ -n "$why" ]; then
    report_failure 125 "$why"
elif [ "$qrc" != 0 ]; then
    report_failure 125 "qemu exited with status $qrc"
elif [[ $stage == *"command started"* ]]; then
    report_failure 125 "the VM went down while the command ran (kernel panic? see the console log)"
else
    report_failure 125 "the VM stopped before running the command (boot failure)"
fi
