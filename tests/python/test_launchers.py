"""efps.torch under the ecosystem's launchers, with efps-server started on its
own (as on server nodes): torchrun, mpirun and srun's environment. Each job
trains worker.py's model over 2 workers and must end with the same bits as
the same job under python3 -m efps.run: the rank (hence each worker's data)
comes from the launcher's variables, as lib/ps resolves it."""
import json
import os
import shutil
import socket
import subprocess

import pytest
import torch

from conftest import PY, WORKER, Server, job_env, run_efps

CFG = dict(compressor="blocksign", block=64, lr=0.05, wd=1e-3, steps=6)
# The server waits this long for the workers to join: under a load of 25 on
# these 2 cores, `import torch` alone took 18 s, and torchrun's agent imports
# it before starting the workers, which import it again.
JOIN_MS = 180000
WORKER_TIMEOUT = {"EFPS_TIMEOUT_MS": "60000"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    p = run_efps(out, CFG)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def check_same(out, ref):
    for r in range(2):
        exc = os.path.join(str(out), "exc.%d.txt" % r)
        assert not os.path.exists(exc), open(exc).read()
        a = torch.load(os.path.join(str(ref), "final.%d.pt" % r))
        b = torch.load(os.path.join(str(out), "final.%d.pt" % r))
        for n in a:
            assert torch.equal(a[n], b[n]), "rank %d %s differs from efps.run's job" % (r, n)


def launch(tmp_path, cmd, extra_env, timeout=240):
    """Runs cmd with one efps-server for 2 workers started beforehand."""
    srv = Server(workers=2, compressor=CFG["compressor"], block=CFG["block"], timeout_ms=JOIN_MS)
    try:
        env = job_env(dict(extra_env, **WORKER_TIMEOUT, EFPS_SERVERS=srv.servers,
                           EFPS_SECRET=srv.secret,
                           EFPS_COMPRESSOR=CFG["compressor"], EFPS_BLOCK=str(CFG["block"])))
        cfg = json.dumps(dict(CFG, out=str(tmp_path)))
        p = subprocess.run(cmd + [WORKER, cfg], env=env, timeout=timeout, capture_output=True,
                           text=True)
    finally:
        log = srv.stop()
    assert p.returncode == 0, "%s failed:\n%s\n%s\nserver:\n%s" % (cmd[:3], p.stdout[-2000:],
                                                                   p.stderr[-3000:], log[-2000:])
    return p


def test_torchrun(tmp_path, reference):
    """Debian's torch 1.13 torchrun on Python 3.11 needs --redirects and --tee
    other than 0 (see README); with them it starts the workers, which take
    RANK/WORLD_SIZE and join the agent's store for the broadcast."""
    launch(tmp_path, [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                      "--redirects", "2", "--tee", "2"], {})
    check_same(tmp_path, reference)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun (openmpi-bin)")
def test_mpirun(tmp_path, reference):
    """Open MPI's mpirun: ranks from OMPI_COMM_WORLD_*; MPI itself is not
    used, MASTER_ADDR/MASTER_PORT serve the broadcast."""
    port = str(free_port())
    launch(tmp_path, ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2",
                      "-x", "EFPS_SERVERS", "-x", "EFPS_SECRET", "-x", "EFPS_COMPRESSOR",
                      "-x", "EFPS_BLOCK", "-x", "EFPS_TIMEOUT_MS", "-x", "PYTHONPATH",
                      "-x", "OMP_NUM_THREADS", "-x", "MASTER_ADDR=127.0.0.1",
                      "-x", "MASTER_PORT=" + port] +
           (["-x", "EFPS_LIBRARY"] if os.environ.get("EFPS_LIBRARY") else []) + [PY], {})
    check_same(tmp_path, reference)


def test_srun_environment(tmp_path, reference):
    """No Slurm here: two processes with the variables srun sets
    (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) plus MASTER_ADDR/PORT."""
    port = str(free_port())
    srv = Server(workers=2, compressor=CFG["compressor"], block=CFG["block"], timeout_ms=JOIN_MS)
    procs = []
    try:
        for r in range(2):
            env = job_env({**WORKER_TIMEOUT, "EFPS_SERVERS": srv.servers, "EFPS_SECRET": srv.secret,
                           "EFPS_COMPRESSOR": CFG["compressor"], "EFPS_BLOCK": str(CFG["block"]),
                           "SLURM_PROCID": str(r), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(r),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
            procs.append(subprocess.Popen([PY, WORKER, json.dumps(dict(CFG, out=str(tmp_path)))],
                                          env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        log = srv.stop()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:] + "\nserver:\n" + log[-2000:]
    check_same(tmp_path, reference)
