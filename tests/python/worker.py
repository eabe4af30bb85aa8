"""One training worker for the tests, run by python3 -m efps.run (or by
ddp_reference.py's settings under DDP). argv[1] is a JSON object of settings;
results go to files in its "out" directory:
  init.<rank>.pt   the parameters after broadcast_parameters
  final.<rank>.pt  the parameters after the last step (synchronized)
  grads.<rank>.pt  every step's gradients (with "record_grads")
  exc.<rank>.txt   "<exception type>: <message>" when the run raised
"""
import json
import os
import signal
import sys
import time
import traceback

import torch

torch.set_num_threads(1)


def make_model(cfg):
    torch.manual_seed(cfg.get("model_seed", 0) + (int(os.environ.get("EFPS_RANK", "0"))
                                                  if cfg.get("unequal_init") else 0))
    layers = [torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
              torch.nn.Linear(64, 4)]
    m = torch.nn.Sequential(*layers)
    if cfg.get("extra_param_on") == int(os.environ.get("EFPS_RANK", "-1")):
        m.register_parameter("extra", torch.nn.Parameter(torch.zeros(600)))
    if cfg.get("float64"):
        m = m.double()
    return m


def batches(cfg, rank):
    g = torch.Generator().manual_seed(1000 + rank)
    for _ in range(cfg.get("steps", 20)):
        yield torch.randn(16, 20, generator=g), torch.randint(0, 4, (16, ), generator=g)


def make_scheduler(cfg, opt):
    s = cfg.get("scheduler")
    if s == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 12], gamma=0.3)
    if s == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    return None


def save_params(model, path):
    torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, path)


def main():
    cfg = json.loads(sys.argv[1])
    out = cfg["out"]
    import efps
    import efps.torch
    from efps.torch.broadcast import rank_and_size
    rank = rank_and_size()[0]  # EFPS_RANK under efps.run; torchrun's, mpirun's or srun's
    model = make_model(cfg)
    efps.torch.broadcast_parameters(model)
    save_params(model, os.path.join(out, "init.%d.pt" % rank))
    opt = efps.torch.DistributedOptimizer(
        model.named_parameters(), lr=cfg.get("lr", 0.05), momentum=cfg.get("momentum", 0.9),
        nesterov=cfg.get("nesterov", True), weight_decay=cfg.get("wd", 0.0),
        compressor=cfg.get("compressor", "blocksign"), block=cfg.get("block", 0),
        group_below=cfg.get("group_below", 512), apply=cfg.get("apply", "forward"),
        warmup_steps=cfg.get("warmup_steps", 0), nonfinite=cfg.get("nonfinite", "skip"))
    sched = make_scheduler(cfg, opt)
    if cfg.get("load"):
        efps.torch.load(cfg["load"], model, opt, sched)
    grads = []
    start = opt.stats()["steps"]
    for t, (x, y) in enumerate(batches(cfg, rank)):
        if t < start:
            continue  # the data of the steps before the checkpoint
        if cfg.get("die_at") == t and cfg.get("die_rank") == rank:
            with open(os.path.join(out, "died.%d.txt" % rank), "w") as f:
                f.write("%f\n" % time.time())
            os.kill(os.getpid(), signal.SIGKILL)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if cfg.get("nan_at") == t and cfg.get("nan_rank") == rank:
            loss = loss * float("nan")
        loss.backward()
        if cfg.get("record_grads"):
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
        opt.step()
        if sched is not None:
            sched.step()
        if cfg.get("save_at") == t + 1:
            efps.torch.save(cfg["save"], model, opt, sched)
    opt.synchronize()
    save_params(model, os.path.join(out, "final.%d.pt" % rank))
    if grads:
        torch.save(grads, os.path.join(out, "grads.%d.pt" % rank))
    with open(os.path.join(out, "stats.%d.json" % rank), "w") as f:
        json.dump(opt.stats(servers=True), f)
    opt.finalize()


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: B902 - recorded for the test, then re-raised
        cfg = json.loads(sys.argv[1])
        rank = next((os.environ[v] for v in ("EFPS_RANK", "RANK", "OMPI_COMM_WORLD_RANK",
                                              "SLURM_PROCID") if os.environ.get(v)), "x")
        with open(os.path.join(cfg["out"], "exc.%s.txt" % rank),
                  "w") as f:
            f.write("%s: %s\n" % (type(e).__name__, e))
            f.write("at %f\n" % time.time())
            traceback.print_exc(file=f)
        raise
