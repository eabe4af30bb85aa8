"""Per-call cost of the ctypes binding, against the same push/pull from C.

Same run, same machine, alternated R times (medians):
  C       efps-perf -s BYTES -c none --no-raw: a C worker's push + pull round
          trip of one BYTES-byte key through one efps-server on loopback;
  python  the same round trip from Python through efps.PS (ctypes), one
          efps-server, the key's memory a torch tensor's data_ptr();
  calls   the CPU cost of one call through ctypes alone and through efps's
          wrapper (_lib.call: status check; and when it raises efps.Error),
          on a call that returns at once: what the binding adds to each
          push and pull, measured in process time so that waiting for a loaded
          machine's cores does not count.

usage: /usr/bin/python3 bindings/python/bench/ctypes_overhead.py [--iters N] [--rounds R] [--bytes B]
"""
import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import efps  # noqa: E402
from efps import _lib  # noqa: E402
from efps.run import find_server  # noqa: E402


def perf_bin():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(find_server(None)))),
                        "apps", "efps-perf", "efps-perf")


def c_round_trip_us(nbytes, iters, env):
    out = subprocess.run([perf_bin(), "-s", str(nbytes), "-n", str(iters), "-c", "none",
                          "--no-raw", "-r", "1", "-t", "tcp"], env=env, check=True,
                          capture_output=True, text=True).stdout
    row = [ln.split() for ln in out.splitlines() if ln.strip().startswith(str(nbytes))][-1]
    fp32_mb_s = float(row[2])  # push + pull fp32 bytes per second, 1e6
    return 2 * nbytes / (fp32_mb_s * 1e6) * 1e6


def py_round_trip_us(nbytes, iters, env):
    import torch
    tmp = tempfile.mkdtemp()
    port_file = os.path.join(tmp, "port")
    srv = subprocess.Popen([find_server(None), "--rank", "0", "--bind", "127.0.0.1:0",
                            "--port-file", port_file],
                           env=dict(env, EFPS_SERVERS="127.0.0.1:0", EFPS_NUM_WORKERS="1",
                                    EFPS_COMPRESSOR="none"))
    while not (os.path.exists(port_file) and os.path.getsize(port_file)):
        time.sleep(0.01)
    servers = "127.0.0.1:%d" % int(open(port_file).read())
    ps = efps.PS(servers=servers, secret=env["EFPS_SECRET"], rank=0, num_workers=1,
                 compressor="none", block=0, transport="tcp", momentum=0.0, nesterov=0)
    n = nbytes // 4
    g, x = torch.zeros(n), torch.zeros(n)
    ps.declare(0, n, 0)
    gp, xp = g.data_ptr(), x.data_ptr()
    for _ in range(100):
        ps.push(0, gp, 0.1)
        ps.pull(0, xp)
    t0 = time.perf_counter()
    for _ in range(iters):
        ps.push(0, gp, 0.1)
        ps.pull(0, xp)
    dt = time.perf_counter() - t0
    ps.finalize()
    srv.wait(timeout=30)
    return dt / iters * 1e6


def cpu_us(fn, iters):
    """CPU time per call (process time: immune to waiting for the 2 cores)."""
    t0 = time.process_time()
    for _ in range(iters):
        fn()
    return (time.process_time() - t0) / iters * 1e6


def binding_costs(iters):
    """efps_ps_push(NULL, ...) returns at once (EFPS_ERR_INVALID, nothing
    logged): the cost of the call itself, bare ctypes vs efps's wrapper
    (argument conversion, status check; efps's log arrives through
    efps_log_set_handler, which costs nothing on a call that logs nothing)."""
    bare = cpu_us(lambda: _lib.ps_push(None, 0, None, 0.1), iters)

    # The path of every push and pull that works: _lib.OK pointed at the
    # status this call returns, so that the wrapper takes its success path.
    st = _lib.ps_push(None, 0, None, 0.1)
    saved, _lib.OK = _lib.OK, st
    try:
        wrapped = cpu_us(lambda: _lib.call(_lib.ps_push, "push", None, 0, None, 0.1), iters)
    finally:
        _lib.OK = saved

    def failing_call():
        try:
            _lib.call(_lib.ps_push, "push", None, 0, None, 0.1)
        except _lib.Error:
            pass
    failing = cpu_us(failing_call, iters)
    return bare, wrapped, failing

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=64)
    a = ap.parse_args()
    env = dict(os.environ, EFPS_SECRET=secrets.token_hex(8), EFPS_TRANSPORT="tcp")
    c, py, costs = [], [], []
    for _ in range(a.rounds):
        c.append(c_round_trip_us(a.bytes, a.iters, env))
        py.append(py_round_trip_us(a.bytes, a.iters, env))
        costs.append(binding_costs(50000))
    mc, mp = statistics.median(c), statistics.median(py)
    bare, wrapped, failing = (statistics.median(x) for x in zip(*costs))
    print("libefps: %s (%s)" % (efps.library_path(), efps.library_origin()))
    print("push+pull of %d bytes, medians of %d rounds x %d iterations:" %
          (a.bytes, a.rounds, a.iters))
    print("  round trip, wall:  C (efps-perf) %.1f us, Python %.1f us (%.2fx)" % (mc, mp, mp / mc))
    print("per call, CPU time (efps_ps_push returning at once):")
    print("  bare ctypes call                 %6.2f us" % bare)
    print("  efps wrapper (_lib.call)         %6.2f us" % wrapped)
    print("  efps wrapper raising efps.Error  %6.2f us" % failing)


if __name__ == "__main__":
    main()
