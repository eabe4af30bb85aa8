"""Shared by the python tests: where the binding, libefps and efps-server are,
and helpers that run jobs. ctest sets EFPS_LIBRARY to the build's libefps.so;
efps-server is found next to it (efps.run does the same)."""
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BINDINGS = os.path.join(REPO, "bindings", "python")
sys.path.insert(0, BINDINGS)
WORKER = os.path.join(HERE, "worker.py")
DDP_REF = os.path.join(HERE, "ddp_reference.py")
PY = sys.executable


def server_bin():
    from efps.run import find_server
    return find_server(None)


def job_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = BINDINGS + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("EFPS_TIMEOUT_MS", "10000")
    env["OMP_NUM_THREADS"] = "1"
    for v in ("EFPS_SECRET", "EFPS_RANK", "EFPS_NUM_WORKERS", "EFPS_SERVERS", "EFPS_COMPRESSOR",
              "EFPS_BLOCK", "RANK", "WORLD_SIZE"):
        env.pop(v, None)
    env.update(extra or {})
    return env


def run_efps(out, cfg, workers=2, servers=1, timeout=240, env=None):
    """worker.py under python3 -m efps.run; returns the CompletedProcess."""
    cfg = dict(cfg, out=str(out))
    # The servers keep their checkpoint files only in EFPS_CKPT_DIR (a worker
    # names the file, never where a server writes): next to the workers' here.
    ck = cfg.get("save") or cfg.get("load")
    if ck:
        env = dict(env or {}, EFPS_CKPT_DIR=os.path.dirname(os.path.abspath(ck)))
    cmd = [PY, "-m", "efps.run", "--workers", str(workers), "--servers", str(servers),
           "--compressor", cfg.get("compressor", "blocksign"), "--block", str(cfg.get("block", 0)),
           WORKER, json.dumps(cfg)]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=job_env(env), timeout=timeout, capture_output=True, text=True)
    p.seconds = time.monotonic() - t0
    return p


def run_ddp(out, cfg, workers=2, timeout=240):
    """ddp_reference.py in `workers` processes over gloo on loopback."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = dict(cfg, out=str(out))
    procs = []
    for r in range(workers):
        env = job_env({"RANK": str(r), "WORLD_SIZE": str(workers), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
        procs.append(subprocess.Popen([PY, DDP_REF, json.dumps(cfg)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o


def read_exc(out, rank):
    path = os.path.join(str(out), "exc.%d.txt" % rank)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.readline().strip()


class Server:
    """One efps-server for in-process workers of the tests."""

    def __init__(self, workers=1, compressor="blocksign", block=0, timeout_ms=5000, secret=None):
        self.tmp = tempfile.mkdtemp(prefix="efps-pytest.")
        self.secret = secret if secret is not None else secrets.token_hex(8)
        port_file = os.path.join(self.tmp, "port")
        env = job_env({"EFPS_SECRET": self.secret, "EFPS_COMPRESSOR": compressor,
                       "EFPS_BLOCK": str(block), "EFPS_TIMEOUT_MS": str(timeout_ms),
                       "EFPS_SERVERS": "127.0.0.1:0", "EFPS_NUM_WORKERS": str(workers)})
        self.log = open(os.path.join(self.tmp, "server.log"), "w+")
        self.proc = subprocess.Popen([server_bin(), "--rank", "0", "--bind", "127.0.0.1:0",
                                      "--port-file", port_file], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
                break
            time.sleep(0.02)
        with open(port_file) as f:
            self.servers = "127.0.0.1:%d" % int(f.read())

    def kwargs(self, **kw):
        d = dict(servers=self.servers, secret=self.secret, rank=0, num_workers=1, timeout_ms=5000)
        d.update(kw)
        return d

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()
