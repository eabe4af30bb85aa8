"""python3 -m efps.run: start efps servers and training workers on this machine.

    python3 -m efps.run --workers 4 --servers 1 train.py --epochs 3

starts S efps-server processes on loopback (free ports) and N copies of
`python3 train.py ...` with EFPS_SERVERS, EFPS_RANK, EFPS_NUM_WORKERS,
EFPS_ROLE=worker, EFPS_SECRET (random unless --secret or EFPS_SECRET),
EFPS_COMPRESSOR/EFPS_BLOCK (the servers' and the workers' must agree),
MASTER_ADDR/MASTER_PORT (for efps.torch.broadcast_parameters) and
OMP_NUM_THREADS=1 unless set. SIGINT and SIGTERM are passed on to every
process. The exit status is 0 when every process exits 0; otherwise it is 1
and the first process that failed is named.

Under torchrun, mpirun or srun (RANK/WORLD_SIZE, OMPI_COMM_WORLD_*,
SLURM_PROCID/SLURM_NTASKS in the environment), efps.run starts no process:
it runs the script in this process as one worker, whose rank comes from the
launcher as lib/ps resolves it; run efps-server on the server nodes and set
EFPS_SERVERS.
"""
import argparse
import os
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

_PKG = os.path.dirname(os.path.abspath(__file__))
_PKG_PARENT = os.path.dirname(_PKG)
_LAUNCHERS = (("torchrun", "RANK", "WORLD_SIZE"), ("mpirun", "OMPI_COMM_WORLD_RANK",
                                                   "OMPI_COMM_WORLD_SIZE"),
              ("srun", "SLURM_PROCID", "SLURM_NTASKS"))


def _say(msg):
    sys.stderr.write("efps.run: %s\n" % msg)
    sys.stderr.flush()


def find_server(explicit):
    """--server-bin, else the build tree of this checkout (or of EFPS_LIBRARY),
    else efps-server on PATH."""
    if explicit:
        return explicit
    cands = [os.path.join(_PKG_PARENT, "..", "..", "build", "apps", "efps-server", "efps-server")]
    lib = os.environ.get("EFPS_LIBRARY")
    if lib:
        cands.append(os.path.join(os.path.dirname(lib), "apps", "efps-server", "efps-server"))
    for c in cands:
        if os.access(c, os.X_OK):
            return os.path.normpath(c)
    found = shutil.which("efps-server")
    if found:
        return found
    raise SystemExit("efps.run: efps-server not found (not in %s, not on PATH); build it "
                     "(scripts/build.sh build) or pass --server-bin" %
                     ", ".join(os.path.normpath(c) for c in cands))


def _free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _describe(rc):
    if rc < 0:
        try:
            return "was killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "was killed by signal %d" % -rc
    return "exited with status %d" % rc


class Job:
    def __init__(self, args):
        self.args = args
        self.procs = []  # (name, Popen)
        self.first_failure = None
        self.stopping = None
        self.tmp = tempfile.mkdtemp(prefix="efps-run.")

    def base_env(self):
        a = self.args
        env = dict(os.environ)
        env["EFPS_SECRET"] = a.secret or env.get("EFPS_SECRET") or secrets.token_hex(16)
        env["EFPS_NUM_WORKERS"] = str(a.workers)
        for var, val in (("EFPS_COMPRESSOR", a.compressor), ("EFPS_BLOCK", a.block),
                         ("EFPS_TIMEOUT_MS", a.timeout_ms), ("EFPS_TRANSPORT", a.transport)):
            if val is not None:
                env[var] = str(val)
        env.setdefault("EFPS_COMPRESSOR", "blocksign")
        env.setdefault("EFPS_BLOCK", "0")
        for _, r, s in _LAUNCHERS:  # the workers' ranks are ours, not an outer launcher's
            env.pop(r, None)
            env.pop(s, None)
        return env

    def start_servers(self, env, server_bin):
        a = self.args
        placeholder = ",".join("%s:0" % a.host for _ in range(a.servers))
        for s in range(a.servers):
            port_file = os.path.join(self.tmp, "port.%d" % s)
            senv = dict(env, EFPS_SERVERS=placeholder, EFPS_ROLE="server", EFPS_RANK=str(s),
                        EFPS_TIMEOUT_MS=str(self.server_timeout_ms(env)))
            cmd = [server_bin, "--rank", str(s), "--bind", "%s:0" % a.host, "--port-file", port_file]
            self.procs.append(("server %d" % s, subprocess.Popen(cmd, env=senv)))
        ports = []
        deadline = time.monotonic() + 30
        for s in range(a.servers):
            port_file = os.path.join(self.tmp, "port.%d" % s)
            while not (os.path.exists(port_file) and os.path.getsize(port_file) > 0):
                name, p = self.procs[s]
                if p.poll() is not None:
                    self.fail(name, p)
                    return None
                if time.monotonic() > deadline:
                    self.first_failure = "%s did not start listening within 30 s" % name
                    return None
                time.sleep(0.02)
            with open(port_file) as f:
                ports.append(int(f.read().strip()))
        return ",".join("%s:%d" % (a.host, p) for p in ports)

    def server_timeout_ms(self, env):
        """A server's timeout is also how long it waits for every worker to
        join, and a worker may take many seconds to import torch and build
        its model: servers wait at least --server-timeout-ms. A worker that
        dies is still noticed at once (its connection closes), and a silent
        one by the other workers, within their own EFPS_TIMEOUT_MS."""
        mine = int(env.get("EFPS_TIMEOUT_MS") or 30000)
        return max(mine, self.args.server_timeout_ms)

    def start_workers(self, env, servers):
        a = self.args
        env = dict(env, EFPS_SERVERS=servers, EFPS_ROLE="worker", MASTER_ADDR=a.host,
                   MASTER_PORT=str(_free_port(a.host)))
        env.setdefault("OMP_NUM_THREADS", "1")
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + path if path else "")
        for r in range(a.workers):
            wenv = dict(env, EFPS_RANK=str(r))
            cmd = [sys.executable, "-u", a.script] + a.script_args
            self.procs.append(("worker %d" % r, subprocess.Popen(cmd, env=wenv)))

    def fail(self, name, p):
        if self.first_failure is None:
            self.first_failure = "%s (pid %d) %s" % (name, p.pid, _describe(p.returncode))
            _say("%s first; waiting for the others" % self.first_failure)

    def signal_all(self, sig):
        for _, p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass

    def on_signal(self, sig, frame):
        self.stopping = sig
        _say("got %s: passing it on" % signal.Signals(sig).name)
        self.signal_all(sig)

    def wait(self):
        """Until every process has ended. After the first failure the others
        get the efps timeout to notice (they fail naming the peer), then
        SIGTERM, then SIGKILL."""
        grace = (self.args.timeout_ms or int(os.environ.get("EFPS_TIMEOUT_MS", "30000"))) / 1000
        t_fail = None
        termed = killed = False
        while True:
            alive = 0
            for name, p in self.procs:
                rc = p.poll()
                if rc is None:
                    alive += 1
                elif rc != 0 and self.stopping is None:
                    self.fail(name, p)
            if alive == 0:
                return
            workers_alive = any(p.poll() is None for n, p in self.procs if n.startswith("worker"))
            if self.first_failure and not workers_alive and not termed:
                # The servers cannot finish without their workers: no need to
                # wait for them to time out.
                self.signal_all(signal.SIGTERM)
                termed = True
            if (self.first_failure or self.stopping) and t_fail is None:
                t_fail = time.monotonic()
            if t_fail is not None:
                waited = time.monotonic() - t_fail
                if waited > grace + 5 and not termed:
                    _say("stopping what is left (SIGTERM)")
                    self.signal_all(signal.SIGTERM)
                    termed = True
                if waited > grace + 10 and not killed:
                    self.signal_all(signal.SIGKILL)
                    killed = True
            time.sleep(0.05)

    def run(self):
        env = self.base_env()
        server_bin = find_server(self.args.server_bin)
        old = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            servers = self.start_servers(env, server_bin)
            if servers is not None:
                self.start_workers(env, servers)
            else:
                self.signal_all(signal.SIGTERM)
            self.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self.stopping is not None:
            return 128 + self.stopping
        if self.first_failure:
            _say("failed: %s" % self.first_failure)
            return 1
        return 0


def _under_launcher():
    for name, r, s in _LAUNCHERS:
        if os.environ.get(r) and os.environ.get(s):
            return name
    return None


def parse(argv):
    ap = argparse.ArgumentParser(
        prog="python3 -m efps.run",
        description="Start efps servers and N training workers on this machine.")
    ap.add_argument("--workers", "-n", type=int, default=None, help="number of workers")
    ap.add_argument("--servers", "-s", type=int, default=1, help="number of efps servers")
    ap.add_argument("--secret", help="shared secret (default: EFPS_SECRET, else random)")
    ap.add_argument("--compressor", choices=("none", "sign", "blocksign"),
                    help="the servers' compressor (default EFPS_COMPRESSOR, else blocksign); "
                    "the optimizer must ask for the same")
    ap.add_argument("--block", type=int, help="blocksign block (default EFPS_BLOCK, else 0)")
    ap.add_argument("--timeout-ms", type=int, help="EFPS_TIMEOUT_MS for every process")
    ap.add_argument("--server-timeout-ms", type=int, default=120000,
                    help="the servers' timeout, which is also how long they wait for every "
                    "worker to join (at least EFPS_TIMEOUT_MS; default 120000)")
    ap.add_argument("--transport", help="tcp, verbs or auto (EFPS_TRANSPORT)")
    ap.add_argument("--host", default="127.0.0.1", help="address the servers listen on")
    ap.add_argument("--server-bin", help="path of efps-server")
    ap.add_argument("script")
    ap.add_argument("script_args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.workers is not None and a.workers < 1:
        ap.error("--workers must be at least 1")
    if a.servers < 1:
        ap.error("--servers must be at least 1")
    return a


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    who = _under_launcher()
    if who is not None:
        if not os.environ.get("EFPS_SERVERS"):
            raise SystemExit("efps.run: under %s, start efps-server on the server nodes and set "
                             "EFPS_SERVERS (this process is one worker)" % who)
        os.environ["EFPS_ROLE"] = "worker"
        sys.argv = [a.script] + a.script_args
        runpy.run_path(a.script, run_name="__main__")
        return 0
    if a.workers is None:
        raise SystemExit("efps.run: --workers N is required (outside torchrun/mpirun/srun)")
    return Job(a).run()


if __name__ == "__main__":
    sys.exit(main())
