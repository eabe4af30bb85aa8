"""Per-call cost of the ctypes binding, against the same push/pull from C.

Same run, same machine, alternated R times (medians):
  C       efps-perf -s BYTES -c none --no-raw: a C worker's push + pull round
          trip of one BYTES-byte key through one efps-server on loopback;
  python  the same round trip from Python through efps.PS (ctypes), one
          efps-server, the key's memory a torch tensor's data_ptr();
  ffi     a ctypes call that does nothing (efps_status_name), the floor.
The overhead of the binding is python - C per round trip (two calls).

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


def ffi_us(iters):
    f = _lib.status_name_c
    t0 = time.perf_counter()
    for _ in range(iters):
        f(0)
    return (time.perf_counter() - t0) / iters * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=64)
    ap.add_argument("--no-capture", action="store_true",
                    help="without a log handler: do not capture fd 2 around calls")
    a = ap.parse_args()
    if a.no_capture:
        _lib._stderr = None
    env = dict(os.environ, EFPS_SECRET=secrets.token_hex(8), EFPS_TRANSPORT="tcp")
    c, py, ffi = [], [], []
    for _ in range(a.rounds):
        c.append(c_round_trip_us(a.bytes, a.iters, env))
        py.append(py_round_trip_us(a.bytes, a.iters, env))
        ffi.append(ffi_us(100000))
    mc, mp, mf = statistics.median(c), statistics.median(py), statistics.median(ffi)
    print("libefps: %s (%s); log %s" % (efps.library_path(), efps.library_origin(),
                                       "via efps_log_set_handler" if _lib.LOG_CAPTURED else
                                       "captured from fd 2 around each call"
                                       if _lib._stderr is not None else "not captured"))
    print("push+pull of %d bytes, medians of %d rounds x %d iterations:" %
          (a.bytes, a.rounds, a.iters))
    print("  C (efps-perf)        %8.2f us" % mc)
    print("  Python (ctypes)      %8.2f us   (%.2fx C; +%.2f us per round trip, %.2f us per "
          "call)" % (mp, mp / mc, mp - mc, (mp - mc) / 2))
    print("  empty ctypes call    %8.3f us" % mf)


if __name__ == "__main__":
    main()
