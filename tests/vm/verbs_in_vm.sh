#!/bin/sh
# The verbs transport's own tests on the VM's Soft-RoCE device:
#   vm-run.sh -- sh tests/vm/verbs_in_vm.sh BUILD_DIR/tests/vm/verbs_tp_test
# Runs the cmocka program with the device and GID the VM made.
set -eu
test_bin=$1
if [ -z "${EFPSVM_DEV:-}" ] || [ -z "${EFPSVM_IP:-}" ]; then
    echo "verbs_in_vm: EFPSVM_DEV/IP unset: run me inside the VM (tests/vm/vm-run.sh)" >&2
    exit 2
fi
export EFPS_IB_DEV="$EFPSVM_DEV" EFPS_IB_GID="$EFPSVM_GID"
echo "== $test_bin on $EFPSVM_DEV (GID $EFPSVM_GID, $EFPSVM_IP)"
start=$(date +%s)
rc=0
"$test_bin" || rc=$?
echo "== verbs_tp_test exited $rc after $(($(date +%s) - start)) s"
exit "$rc"
