#!/usr/bin/env bash
# efps-info where there is an RDMA device (ctest vm_efps_info), inside the VM:
#   vm-run.sh -- bash tests/vm/info_in_vm.sh BUILD_DIR/apps/efps-info/efps-info
# Checks that it lists rxe0 (active, Ethernet, the VM's GID), that "auto"
# means verbs here, and that the preflight is all ok for a verbs job on the
# device's address (memlock, a 64 MiB ibv_reg_mr, rdma_cm resolution) and
# for a tcp job with a listening server; then that a server address rdma_cm
# cannot resolve to a device (198.18.0.1: no RDMA interface has a route
# there; loopback would do, rdma_cm binds it to rxe0) is a failed check
# with exit 1.
# Python starts slowly under emulation (a minute through a pyenv shim): the
# system's python3 runs twice, once to listen, once to check every result.
set -uo pipefail
info=$1
if [ -z "${EFPSVM_DEV:-}" ] || [ -z "${EFPSVM_IP:-}" ]; then
    echo "info_in_vm: EFPSVM_DEV/IP unset: run me inside the VM (tests/vm/vm-run.sh)" >&2
    exit 2
fi
py=/usr/bin/python3
[ -x "$py" ] || py=python3
out=${EFPSVM_RUN_DIR:-$(mktemp -d)}
ip=$EFPSVM_IP
failures=0
fail() { echo "info_in_vm: FAIL: $*" >&2; failures=$((failures + 1)); }
export EFPS_SECRET=vm-test-secret

# A listening tcp server on the device's address, for the tcp case.
"$py" -c 'import socket,sys,time
s=socket.socket(); s.bind((sys.argv[1], 0)); s.listen(4)
print(s.getsockname()[1], flush=True); time.sleep(600)' "$ip" >"$out/port" &
lpid=$!

# 1. verbs ("auto" picks it), the device's own address as the server.
echo "== efps-info (text), EFPS_SERVERS=$ip:7000"
EFPS_SERVERS=$ip:7000 "$info" --model-bytes $((64 << 20)) || fail "text report exit $?"
rc=0
EFPS_SERVERS=$ip:7000 "$info" --json --model-bytes $((64 << 20)) >"$out/verbs.json" || rc=$?
[ "$rc" = 0 ] || fail "verbs preflight exit $rc, not 0"

# 2. tcp, the listening server.
for _ in $(seq 300); do [ -s "$out/port" ] && break; sleep 0.5; done
port=$(cat "$out/port")
rc=0
EFPS_TRANSPORT=tcp EFPS_SERVERS=$ip:$port "$info" --json >"$out/tcp.json" || rc=$?
kill "$lpid" 2>/dev/null
[ "$rc" = 0 ] || fail "tcp preflight to a listening server: exit $rc, not 0"

# 3. An address no RDMA interface reaches: a failed check, exit 1, with a fix.
far=198.18.0.1:7000
rc=0
EFPS_TRANSPORT=verbs EFPS_SERVERS=$far "$info" --json --timeout-ms 2000 >"$out/far.json" || rc=$?
[ "$rc" = 1 ] || fail "server $far under verbs: exit $rc, not 1"

"$py" - "$out" "$EFPSVM_DEV" "${EFPSVM_GID:-1}" "$ip" "$port" "$far" <<'PY' || fail "a JSON check"
import json, sys
out, dev, gid, ip, port, far = sys.argv[1:7]
bad = 0
def doc_of(name):
    d = json.load(open("%s/%s.json" % (out, name)))  # valid JSON or an exception
    return d, {c["check"]: c for c in d["preflight"]["checks"]}
def check(what, ok):
    global bad
    print(("ok   " if ok else "FAIL ") + what)
    bad += not ok
d, c = doc_of("verbs")
ports = d["rdma"]["ports"]
check("%s listed, active, Ethernet" % dev, any(p["device"] == dev and p["state"] == "active" and
      p["link_layer"] == "Ethernet" for p in ports))
check("GID %s (%s) listed" % (gid, ip), any(g["index"] == int(gid) and g["gid"].endswith(ip)
      for p in ports for g in p["gid_table"]))
check("auto means verbs here", d["job"]["transport"] == "verbs")
for n in ("secret", "memlock", "reg_mr", "rdma_cm %s:7000" % ip):
    check("%s ok: %s" % (n, c[n]["detail"]), c[n]["status"] == "ok")
check("rdma_cm names %s" % dev, dev in c["rdma_cm %s:7000" % ip]["detail"])
check("no check failed (verbs)", d["summary"]["fail"] == 0)
d, c = doc_of("tcp")
check("tcp server ok", c["tcp %s:%s" % (ip, port)]["status"] == "ok")
check("no check failed (tcp)", d["summary"]["fail"] == 0)
d, c = doc_of("far")
f = c["rdma_cm " + far]
check("%s under verbs fails with a fix: %s" % (far, f["detail"]),
      f["status"] == "fail" and "RDMA interface" in f["fix"])
sys.exit(1 if bad else 0)
PY

[ "$failures" = 0 ] || { echo "info_in_vm: $failures FAILED" >&2; exit 1; }
echo "info_in_vm: efps-info lists $EFPSVM_DEV and its preflight is all ok"
