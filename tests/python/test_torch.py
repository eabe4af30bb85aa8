"""efps.torch against independent implementations, and its failure modes."""
import ctypes
import json
import os

import pytest
import torch

from conftest import read_exc, run_ddp, run_efps

import efps  # noqa: E402  (conftest puts bindings/python on the path)
import efps.torch  # noqa: E402
from efps import _lib  # noqa: E402
from efps.torch._keys import plan  # noqa: E402

torch.set_num_threads(1)
STEPS = 20


def load(out, what, rank):
    return torch.load(os.path.join(str(out), "%s.%d.pt" % (what, rank)))


def assert_ok(p):
    assert p.returncode == 0, "efps.run failed:\n" + p.stderr[-4000:]


# ---- the algorithm --------------------------------------------------------------------------


def test_warmup_steps_are_the_none_path_then_compressed(tmp_path):
    """warmup_steps=K: the first K steps are compressor none's, bit for bit
    (the twins are lossless and the servers sum in rank order as for none);
    later steps travel compressed:
    the bytes of steps K..2K-1 are a small fraction of those of steps 0..K-1."""
    K = 6
    cfg = dict(lr=0.1, momentum=0.9, nesterov=True, wd=1e-3, block=64, steps=K)
    for d in ("none", "warm", "warm2"):
        (tmp_path / d).mkdir()
    assert_ok(run_efps(tmp_path / "none", dict(cfg, compressor="none")))
    assert_ok(run_efps(tmp_path / "warm", dict(cfg, compressor="blocksign", warmup_steps=K)))
    assert_ok(run_efps(tmp_path / "warm2", dict(cfg, compressor="blocksign", warmup_steps=K,
                                                steps=2 * K)))
    init = load(tmp_path / "none", "init", 0)
    for r in range(2):
        ref, got = load(tmp_path / "none", "final", r), load(tmp_path / "warm", "final", r)
        for n in ref:
            assert (ref[n] - init[n]).abs().max().item() > 1e-3, n + " did not train"
            diff = (got[n] - ref[n]).abs().max().item()
            assert torch.equal(got[n], ref[n]), \
                "rank %d %s: warm-up steps differ from none by up to %g" % (r, n, diff)
    stats = [json.load(open(str(tmp_path / d / "stats.0.json"))) for d in ("none", "warm", "warm2")]
    none_b, warm_b, warm2_b = (s["wire_bytes"] for s in stats)
    assert warm_b >= none_b, "warm-up steps are not uncompressed: %d < %d" % (warm_b, none_b)
    later = warm2_b - warm_b
    assert 0 < later < warm_b / 8, "steps %d..%d sent %d bytes against %d for the first %d" % (
        K, 2 * K - 1, later, warm_b, K)
    assert stats[2]["keys"], "no per-key stats"
    for key in stats[2]["keys"].values():
        assert key["key"] < 0x80000000, "after warm-up the stats are of the compressed keys"


def test_warmup_steps_need_blocksign():
    m = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="warmup_steps needs compressor blocksign"):
        efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1, compressor="sign",
                                        warmup_steps=3, rank=0, num_workers=1)



@pytest.mark.parametrize("apply,scheduler", [("forward", None), ("step", "multistep")])
def test_none_equals_ddp_sgd(tmp_path, apply, scheduler):
    """compressor none over 2 workers = DDP(gloo) + SGD(momentum, nesterov,
    weight_decay) with the same data and lr schedule, within 1e-5 relative."""
    cfg = dict(compressor="none", apply=apply, scheduler=scheduler, lr=0.1, momentum=0.9,
               nesterov=True, wd=1e-3, steps=STEPS)
    (tmp_path / "efps").mkdir()
    (tmp_path / "ddp").mkdir()
    assert_ok(run_efps(tmp_path / "efps", cfg))
    run_ddp(tmp_path / "ddp", cfg)
    ref = load(tmp_path / "ddp", "final", 0)
    init = load(tmp_path / "efps", "init", 0)
    for r in range(2):
        got = load(tmp_path / "efps", "final", r)
        assert got.keys() == ref.keys()
        for n in ref:
            moved = (ref[n] - init[n]).abs().max().item()
            assert moved > 1e-3, "%s did not train: the comparison would prove nothing" % n
            err = ((got[n] - ref[n]).norm() / ref[n].norm()).item()
            assert err < 1e-5, "rank %d %s: relative difference %g from DDP+SGD" % (r, n, err)


def test_lr_scheduler_drives_the_lr(tmp_path):
    """The param group's lr at each step is the one pushed: a run under a
    schedule equals DDP+SGD under it (above) and differs from a constant lr."""
    cfg = dict(compressor="none", lr=0.1, wd=0.0, steps=8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert_ok(run_efps(tmp_path / "a", dict(cfg, scheduler="multistep"), workers=1))
    assert_ok(run_efps(tmp_path / "b", cfg, workers=1))
    a, b = load(tmp_path / "a", "final", 0), load(tmp_path / "b", "final", 0)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def c_path(init, grads, keys, lr, momentum, wd, compressor, block):
    """The same gradients through lib/optim directly: per key, M worker
    optimizers and one server optimizer (encode, reduce in rank order, apply)."""
    M = len(grads)
    out = [dict() for _ in range(M)]
    residuals = [dict() for _ in range(M + 1)]  # ||e|| per key: workers', then the server's
    for f in ("efps_worker_opt_residual_sumsq", "efps_server_opt_residual_sumsq"):
        getattr(_lib.lib, f).restype = ctypes.c_double
        getattr(_lib.lib, f).argtypes = [ctypes.c_void_p]
    for k in keys:
        cfg = _lib.OptimConfig(_lib.COMPRESSORS[compressor], block if k.block is None else k.block,
                               momentum, 1, wd)
        ws = [_lib.create(_lib.worker_opt_create_c, "w", ctypes.byref(cfg), k.n) for _ in range(M)]
        srv = _lib.create(_lib.server_opt_create_c, "s", ctypes.byref(cfg), k.n, M)
        size = _lib.encoded_size(ctypes.byref(cfg), k.n)
        bufs = [_lib.aligned_alloc(size) for _ in range(M + 1)]
        xs = [torch.cat([init[n].reshape(-1) for n in k.names]).contiguous() for _ in range(M)]
        for t in range(len(grads[0])):
            for r in range(M):
                g = torch.cat([grads[r][t][n].reshape(-1) for n in k.names]).contiguous()
                _lib.call(_lib.worker_opt_encode, "encode", ws[r], g.data_ptr(), lr, bufs[r])
            arr = (ctypes.c_void_p * M)(*bufs[:M])
            _lib.call(_lib.server_opt_reduce, "reduce", srv, arr, lr, bufs[M])
            for r in range(M):
                _lib.call(_lib.worker_opt_apply, "apply", ws[r], bufs[M], lr, xs[r].data_ptr())
        for r in range(M):
            for n, off in zip(k.names, k.offsets):
                out[r][n] = xs[r][off:off + init[n].numel()].view_as(init[n])
            residuals[r][k.label()] = _lib.lib.efps_worker_opt_residual_sumsq(ws[r]) ** 0.5
            _lib.worker_opt_destroy(ws[r])
        residuals[M][k.label()] = _lib.lib.efps_server_opt_residual_sumsq(srv) ** 0.5
        _lib.server_opt_destroy(srv)
        for b in bufs:
            _lib.aligned_free(b)
    return out, residuals


@pytest.mark.parametrize("compressor,block,wd", [("blocksign", 0, 0.0), ("blocksign", 64, 1e-3)])
def test_blocksign_bit_identical_to_c_path(tmp_path, compressor, block, wd):
    """blocksign through torch (hooks, grouping, 2 workers, 2 servers) gives
    the bits that the C optimizer gives on the same gradients."""
    cfg = dict(compressor=compressor, block=block, lr=0.05, momentum=0.9, wd=wd, steps=10,
               record_grads=True)
    assert_ok(run_efps(tmp_path, cfg, workers=2, servers=2))
    init = load(tmp_path, "init", 0)
    grads = [load(tmp_path, "grads", r) for r in range(2)]
    named = [(n, torch.zeros_like(p)) for n, p in init.items()]
    keys = plan([named], 512, block)
    assert any(k.grouped for k in keys) and any(not k.grouped for k in keys)
    want, residuals = c_path(init, grads, keys, 0.05, 0.9, wd, compressor, block)
    for r in range(2):
        got = load(tmp_path, "final", r)
        for n in init:
            assert torch.equal(got[n], want[r][n]), "rank %d %s differs from the C path" % (r, n)
    # stats(): the residual norms are those of the C objects, the scales real.
    for r in range(2):
        stats = json.load(open(os.path.join(str(tmp_path), "stats.%d.json" % r)))
        assert stats["steps"] == 10 and stats["wire_bytes"] * 8 < stats["fp32_bytes"]
        for label, d in stats["keys"].items():
            assert d["pushes"] == 10 and d["blocks"] > 0
            assert 0 < d["scale_min"] <= d["scale_mean"] <= d["scale_max"]
            assert d["worker_residual"] == pytest.approx(residuals[r][label], rel=1e-12)
            assert d["worker_residual"] > 0
            assert d["server_residual"] == pytest.approx(residuals[2][label], rel=1e-12)
            assert d["server_residual"] > 0


# ---- bad input: clear exceptions, nothing hangs ----------------------------------------------


def test_wrong_dtype_names_the_parameter():
    m = torch.nn.Linear(4, 3).double()
    with pytest.raises(TypeError, match=r"'weight' is torch.float64"):
        efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1)


def test_wrong_device_names_the_parameter():
    p = torch.nn.Parameter(torch.zeros(5, device="meta"))
    with pytest.raises(TypeError, match=r"'w' is on meta"):
        efps.torch.DistributedOptimizer([("w", p)], lr=0.1)


def test_non_contiguous_names_the_parameter():
    p = torch.nn.Parameter(torch.zeros(4, 3).t())
    with pytest.raises(TypeError, match=r"'w' is not contiguous"):
        efps.torch.DistributedOptimizer([("w", p)], lr=0.1)


def test_sparse_gradient_names_the_parameter(server):
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = efps.torch.DistributedOptimizer(emb.named_parameters(), lr=0.1, **server.kwargs())
    try:
        with pytest.raises(TypeError, match=r"gradient of 'weight' has layout torch.sparse_coo"):
            emb(torch.tensor([1, 2])).sum().backward()
    finally:
        opt._ps.close()


def test_nan_gradient_raise_names_the_parameter(server):
    m = torch.nn.Linear(30, 30)
    opt = efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1, nonfinite="raise",
                                          **server.kwargs())
    try:
        with pytest.raises(FloatingPointError, match=r"non-finite gradient .*parameter '(weight|bias)'"):
            (m(torch.ones(2, 30)).sum() * float("nan")).backward()
    finally:
        opt._ps.close()


def test_zero_lr_is_a_clear_error(server):
    m = torch.nn.Linear(30, 30)
    opt = efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1, **server.kwargs())
    try:
        opt.param_groups[0]["lr"] = 0.0
        with pytest.raises(ValueError, match=r"lr of param group 0 is 0.0"):
            m(torch.ones(2, 30)).sum().backward()
    finally:
        opt._ps.close()


def test_gradient_accumulation_is_a_clear_error(server):
    m = torch.nn.Linear(30, 30)
    opt = efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1, **server.kwargs())
    try:
        m(torch.ones(2, 30)).sum().backward()
        with pytest.raises(RuntimeError, match=r"second gradient of 'bias' before step"):
            m(torch.ones(2, 30)).sum().backward()
    finally:
        opt._ps.close()


def test_one_worker_trains_and_finalizes(server):
    """The in-process path end to end: steps, stats, finalize, the server exits 0."""
    m = torch.nn.Sequential(torch.nn.Linear(30, 30), torch.nn.Linear(30, 2))
    opt = efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1, **server.kwargs())
    before = [p.detach().clone() for p in m.parameters()]
    for _ in range(3):
        opt.zero_grad()
        m(torch.ones(2, 30)).sum().backward()
        opt.step()
    opt.finalize()
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert opt.stats()["steps"] == 3
    assert server.proc.wait(timeout=30) == 0


def test_wrong_secret_is_a_clear_error(server):
    m = torch.nn.Linear(3, 3)
    with pytest.raises(efps.Error, match=r"server 0 .* refused us: wrong secret"):
        efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1,
                                        **server.kwargs(secret="not-the-secret"))


def test_missing_secret_is_a_clear_error(server, monkeypatch):
    monkeypatch.delenv("EFPS_SECRET", raising=False)
    monkeypatch.delenv("EFPS_INSECURE", raising=False)
    m = torch.nn.Linear(3, 3)
    with pytest.raises(efps.Error, match=r"EFPS_SECRET"):
        efps.torch.DistributedOptimizer(m.named_parameters(), lr=0.1, **server.kwargs(secret=""))


# ---- failures in a running job ---------------------------------------------------------------


def test_undeclared_parameter_names_it(tmp_path):
    """Rank 1 has a parameter rank 0 lacks: the servers refuse its layout and
    the exception names the parameter."""
    p = run_efps(tmp_path, dict(compressor="none", extra_param_on=1, steps=3),
                 env={"EFPS_TIMEOUT_MS": "4000"})
    assert p.returncode != 0
    excs = [read_exc(tmp_path, r) for r in range(2)]
    assert all(e is not None for e in excs), p.stderr[-3000:]
    for e in excs:
        assert "parameter 'extra' is on rank 1 but not on rank 0" in e, excs


def test_killed_worker_every_rank_raises(tmp_path):
    """Worker 2 of 3 is SIGKILLed at step 3: workers 0 and 1 raise efps.Error
    naming worker 2 (the server tells them why it stops) within the timeout,
    and efps.run names worker 2 as the first failure."""
    p = run_efps(tmp_path, dict(compressor="blocksign", die_at=3, die_rank=2, steps=40),
                 workers=3, env={"EFPS_TIMEOUT_MS": "3000"})
    assert p.returncode == 1
    assert "worker 2" in p.stderr and "SIGKILL" in p.stderr, p.stderr[-3000:]
    died = float(open(os.path.join(str(tmp_path), "died.2.txt")).read())
    for r in (0, 1):
        e = read_exc(tmp_path, r)
        assert e is not None and e.startswith("Error:"), (r, e, p.stderr[-3000:])
        assert "worker 2" in e and "disconnected" in e, e
        with open(os.path.join(str(tmp_path), "exc.%d.txt" % r)) as f:
            at = float(f.readlines()[1].split()[1])
        assert at - died < 3.0 + 10.0, "rank %d raised %.1f s after the kill" % (r, at - died)


def test_nan_gradient_in_a_job(tmp_path):
    """A NaN gradient on rank 1 at step 2: skipped (efps_ps_skip: rank 1
    contributes zero for that key, with a RuntimeWarning), the job finishes;
    nothing hangs."""
    p = run_efps(tmp_path, dict(compressor="blocksign", nan_at=2, nan_rank=1, steps=5),
                 env={"EFPS_TIMEOUT_MS": "3000"})
    assert_ok(p)
    assert "non-finite gradient" in p.stderr
    s = json.load(open(os.path.join(str(tmp_path), "stats.1.json")))
    assert sum(s["skipped"].values()) > 0


@pytest.mark.parametrize("warmup", [0, 7])
def test_resume_is_bit_identical(tmp_path, warmup):
    """A run that saves at step 5 and goes on to step 10, and a new job (new
    servers) that loads that checkpoint and runs steps 5..9, end with the same
    bits: worker and server error feedback, momentum, weight-decay momentum,
    lr schedule (which changes at step 5) and parameters all restored. With
    warmup_steps=7 the resumed job goes on uncompressed and switches at 7."""
    cfg = dict(compressor="blocksign", block=64, lr=0.05, wd=1e-3, scheduler="multistep",
               steps=10, warmup_steps=warmup)
    ck = str(tmp_path / "ck")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert_ok(run_efps(tmp_path / "a", dict(cfg, save_at=5, save=ck), servers=2))
    files = sorted(os.listdir(str(tmp_path)))
    assert {"ck.worker0", "ck.worker1", "ck.server0", "ck.server1", "ck.rank0.pt"} <= set(files)
    assert_ok(run_efps(tmp_path / "b", dict(cfg, load=ck), servers=2))
    for r in range(2):
        a, b = load(tmp_path / "a", "final", r), load(tmp_path / "b", "final", r)
        for n in a:
            assert torch.equal(a[n], b[n]), "rank %d %s: resumed run differs" % (r, n)


def test_load_of_another_layout_is_a_clear_error(tmp_path):
    ck = str(tmp_path / "ck")
    assert_ok(run_efps(tmp_path, dict(compressor="blocksign", steps=2, save_at=2, save=ck),
                       workers=1))
    p = run_efps(tmp_path, dict(compressor="blocksign", block=64, steps=2, load=ck), workers=1)
    assert p.returncode != 0
    assert "another size or optimizer configuration" in read_exc(tmp_path, 0), \
        read_exc(tmp_path, 0)


def test_run_passes_sigterm_on(tmp_path):
    """SIGTERM to python3 -m efps.run reaches every worker and server: it
    exits 128+15 promptly and leaves no process behind."""
    import signal
    import subprocess
    import sys
    import time
    from conftest import BINDINGS, job_env
    script = tmp_path / "sleepy.py"
    script.write_text("import os, sys, time\n"
                      "open(os.path.join(sys.argv[1], 'pid.' + os.environ['EFPS_RANK']), 'w')"
                      ".write(str(os.getpid()))\n"
                      "time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-m", "efps.run", "--workers", "2", str(script),
                          str(tmp_path)], env=job_env({"PYTHONPATH": BINDINGS}))
    pids = []
    for _ in range(600):
        pids = [tmp_path / ("pid.%d" % r) for r in range(2)]
        if all(f.exists() and f.read_text() for f in pids):
            break
        time.sleep(0.1)
    pids = [int(f.read_text()) for f in pids]
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
