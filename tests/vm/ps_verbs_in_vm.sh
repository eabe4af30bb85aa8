#!/usr/bin/env bash
# The multi-process parameter-server tests (tests/integration/ps) again, over
# the verbs transport on the VM's Soft-RoCE device, unchanged apart from the
# address (EFPS_TEST_HOST: rdma_cm needs the device's IP, not 127.0.0.1):
#   vm-run.sh -- bash tests/vm/ps_verbs_in_vm.sh BUILD_DIR [case...]
# Cases: 1x2_none 1x2_sign 1x2_blocksign 2x4_none 2x4_sign 2x4_blocksign
# mpirun_2x4_blocksign faults start_order (default: all but start_order,
# which is its own ctest, vm_ps_start_order: about 4 minutes). Every run_ps.sh
# case compares each worker's parameters bit for bit with efps_sim; faults (ps_faults_in_vm.sh)
# kills a worker and a server mid-run and checks that everyone stops, naming them;
# start_order (ps_start_order_in_vm.sh) starts workers 0-3 s before their servers.
set -uo pipefail
if [ -z "${EFPSVM_DEV:-}" ] || [ -z "${EFPSVM_IP:-}" ]; then
    echo "ps_verbs_in_vm: EFPSVM_DEV/IP unset: run me inside the VM (tests/vm/vm-run.sh)" >&2
    exit 2
fi
ps=$(cd "$(dirname "$0")/../integration/ps" && pwd)
export BUILD=$(cd "$1" && pwd)
shift
export EFPS_TRANSPORT=verbs EFPS_TEST_HOST=$EFPSVM_IP EFPS_IB_DEV=$EFPSVM_DEV
# The emulated CPU needs seconds to build ps_lsq's data set before a worker
# even connects, tens of seconds for 4 workers and 2 servers on its 2 cores
# when the host is busy (87 s for a whole 2x4 case at a host load of 3), and
# minutes when it is very busy: at a host load of 30 a worker first reached
# its connect 145 s after its server started, and the server had given up
# waiting for its workers at 120 s (the workers then saw "nothing listens
# there"; the vm_ps_verbs flake of this session). A server waits for its
# workers EFPS_TIMEOUT_MS, and run_ps.sh for each worker EFPS_TEST_WAIT_S:
# both large, since here they bound only a hung case, never a measurement.
export EFPS_TIMEOUT_MS=${EFPS_TIMEOUT_MS:-600000}
export EFPS_TEST_WAIT_S=${EFPS_TEST_WAIT_S:-900}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(1x2_none 1x2_sign 1x2_blocksign 2x4_none 2x4_sign 2x4_blocksign
                                  mpirun_2x4_blocksign faults)
# mpirun wants a host name; the VM has none ("(none)").
[ "$(hostname)" != "(none)" ] || hostname efps-vm
log=$(mktemp)
fails=0
summary=()
for c in "${cases[@]}"; do
    case $c in
    faults) cmd=(bash "$(dirname "$0")/ps_faults_in_vm.sh" "$BUILD") ;;
    start_order) cmd=(bash "$(dirname "$0")/ps_start_order_in_vm.sh" "$BUILD") ;;
    mpirun_*) cmd=(bash "$ps/run_ps.sh" --servers 2 --workers 4 --compressor blocksign --mpirun) ;;
    [0-9]x[0-9]_*)
        sm=${c%%_*}
        cmd=(bash "$ps/run_ps.sh" --servers "${sm%x*}" --workers "${sm#*x}" --compressor "${c#*_}") ;;
    *) echo "ps_verbs_in_vm: unknown case $c" >&2; exit 2 ;;
    esac
    echo "== ps_$c over verbs: ${cmd[*]}"
    t0=$(date +%s)
    rc=0
    "${cmd[@]}" >"$log" 2>&1 || rc=$?
    dt=$(($(date +%s) - t0))
    if [ "$rc" = 0 ]; then
        case $c in faults | start_order) cat "$log" ;; *) tail -n 1 "$log" ;; esac
        summary+=("$(printf 'ok    %-24s %4d s' "ps_$c" "$dt")")
    else
        cat "$log"
        summary+=("$(printf 'FAIL  %-24s %4d s (exit %d)' "ps_$c" "$dt" "$rc")")
        fails=$((fails + 1))
    fi
done
rm -f "$log"
echo "== parameter-server tests over verbs ($EFPSVM_DEV, $EFPSVM_IP)"
printf '%s\n' "${summary[@]}"
[ "$fails" = 0 ] || { echo "ps_verbs_in_vm: $fails case(s) FAILED" >&2; exit 1; }
echo "ps_verbs_in_vm: all ${#cases[@]} cases passed"
